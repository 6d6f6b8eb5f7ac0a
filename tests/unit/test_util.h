// Helpers shared by the tests: paths of the committed golden data, reading golden tensors,
// writing safetensors files by hand, and the relative L2 error.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/safetensors.h"
#include "gtest/gtest.h"

namespace r1::testing {

inline std::string GoldenModel(const std::string& name) {
  return std::string(R1_SOURCE_DIR) + "/tests/golden/models/" + name;
}
inline std::string GoldenData(const std::string& name) {
  return std::string(R1_SOURCE_DIR) + "/tests/golden/data/" + name + ".safetensors";
}

// A fresh empty directory under the build tree, removed and made again on each call.
inline std::string TempDir(const std::string& name) {
  std::filesystem::path p = std::filesystem::path(R1_BINARY_DIR) / "test_tmp" / name;
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

inline std::vector<float> ReadF32(const SafetensorsFile& f, const std::string& name) {
  auto it = f.tensors().find(name);
  EXPECT_NE(it, f.tensors().end()) << name;
  if (it == f.tensors().end()) return {};
  EXPECT_EQ(it->second.dtype, DType::kF32) << name;
  std::vector<float> v(it->second.numel());
  std::memcpy(v.data(), it->second.data, it->second.nbytes);
  return v;
}

inline std::vector<int32_t> ReadI32(const SafetensorsFile& f, const std::string& name) {
  auto it = f.tensors().find(name);
  EXPECT_NE(it, f.tensors().end()) << name;
  if (it == f.tensors().end()) return {};
  EXPECT_EQ(it->second.dtype, DType::kI32) << name;
  std::vector<int32_t> v(it->second.numel());
  std::memcpy(v.data(), it->second.data, it->second.nbytes);
  return v;
}

// ||a - b|| / ||b|| over n values.
inline double RelL2(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

// Writes a safetensors file from a raw header string and raw data bytes.
inline void WriteRawSafetensors(const std::string& path, const std::string& header, const std::string& data,
                                uint64_t header_len_override = 0) {
  std::ofstream out(path, std::ios::binary);
  uint64_t len = header_len_override ? header_len_override : header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((len >> (8 * i)) & 0xff));
  out << header << data;
}

}  // namespace r1::testing
