// Element types a checkpoint may hold, and their conversion to float32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include "absl/strings/string_view.h"

namespace r1 {

enum class DType { kF32, kBF16, kF16, kF8E4M3, kI32, kI64, kU8 };

// The safetensors spelling ("F32", "BF16", "F8_E4M3" …); nullopt for anything else.
std::optional<DType> ParseDType(absl::string_view name);
absl::string_view DTypeName(DType dtype);
size_t DTypeSize(DType dtype);

inline float Bf16ToFloat(uint16_t bits) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Round to nearest even, NaN kept a NaN.
inline uint16_t FloatToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float F16ToFloat(uint16_t bits);

// OCP FP8 E4M3 ("e4m3fn": no infinities, 0x7f / 0xff are NaN, max 448).
float Fp8E4M3ToFloat(uint8_t bits);
// Round to nearest even, saturating at ±448.
uint8_t FloatToFp8E4M3(float f);

// Converts `count` elements of `dtype` at `src` to float32 (floating dtypes only).
void ConvertToFloat(DType dtype, const void* src, size_t count, float* dst);

}  // namespace r1
