#include "common/dtype.h"

#include <array>
#include <cmath>

namespace r1 {

std::optional<DType> ParseDType(absl::string_view name) {
  if (name == "F32") return DType::kF32;
  if (name == "BF16") return DType::kBF16;
  if (name == "F16") return DType::kF16;
  if (name == "F8_E4M3") return DType::kF8E4M3;
  if (name == "I32") return DType::kI32;
  if (name == "I64") return DType::kI64;
  if (name == "U8") return DType::kU8;
  return std::nullopt;
}

absl::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "F32";
    case DType::kBF16: return "BF16";
    case DType::kF16: return "F16";
    case DType::kF8E4M3: return "F8_E4M3";
    case DType::kI32: return "I32";
    case DType::kI64: return "I64";
    case DType::kU8: return "U8";
  }
  return "?";
}

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32: case DType::kI32: return 4;
    case DType::kBF16: case DType::kF16: return 2;
    case DType::kF8E4M3: case DType::kU8: return 1;
    case DType::kI64: return 8;
  }
  return 0;
}

float F16ToFloat(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1u, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  float v;
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(mant), -24);
  } else if (exp == 31) {
    v = mant ? NAN : INFINITY;
  } else {
    v = std::ldexp(static_cast<float>(mant | 0x400u), static_cast<int>(exp) - 25);
  }
  return sign ? -v : v;
}

namespace {

std::array<float, 256> MakeFp8Table() {
  std::array<float, 256> table{};
  for (int b = 0; b < 256; ++b) {
    const int sign = (b >> 7) & 1, exp = (b >> 3) & 0xf, mant = b & 0x7;
    float v;
    if (exp == 0xf && mant == 0x7) {
      v = NAN;
    } else if (exp == 0) {
      v = std::ldexp(static_cast<float>(mant), -9);  // subnormal: mant/8 * 2^-6
    } else {
      v = std::ldexp(static_cast<float>(8 + mant), exp - 10);  // (1 + mant/8) * 2^(exp-7)
    }
    table[b] = sign ? -v : v;
  }
  return table;
}

const std::array<float, 256>& Fp8Table() {
  static const std::array<float, 256> table = MakeFp8Table();
  return table;
}

}  // namespace

float Fp8E4M3ToFloat(uint8_t bits) { return Fp8Table()[bits]; }

uint8_t FloatToFp8E4M3(float f) {
  if (std::isnan(f)) return 0x7f;
  const uint8_t sign = std::signbit(f) ? 0x80 : 0;
  float a = std::fabs(f);
  if (a >= 448.0f) return sign | 0x7e;
  // Search the 127 non-negative finite codes for the nearest value (ties to even code).
  const auto& t = Fp8Table();
  int lo = 0, hi = 0x7e;
  while (lo < hi) {  // first code with value >= a
    int mid = (lo + hi) / 2;
    if (t[mid] < a) lo = mid + 1; else hi = mid;
  }
  int best = lo;
  if (lo > 0) {
    float dl = a - t[lo - 1], dh = t[lo] - a;
    if (dl < dh || (dl == dh && ((lo - 1) % 2 == 0))) best = lo - 1;
  }
  return sign | static_cast<uint8_t>(best);
}

namespace {

uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace

void ConvertToFloat(DType dtype, const void* src, size_t count, float* dst) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, count * sizeof(float));
      return;
    // A tensor in a safetensors file starts at any byte offset, so 16-bit elements are read
    // with memcpy (an unaligned load) rather than through a uint16_t pointer (undefined).
    case DType::kBF16: {
      const auto* s = static_cast<const uint8_t*>(src);
      for (size_t i = 0; i < count; ++i) dst[i] = Bf16ToFloat(LoadU16(s + 2 * i));
      return;
    }
    case DType::kF16: {
      const auto* s = static_cast<const uint8_t*>(src);
      for (size_t i = 0; i < count; ++i) dst[i] = F16ToFloat(LoadU16(s + 2 * i));
      return;
    }
    case DType::kF8E4M3: {
      const auto* s = static_cast<const uint8_t*>(src);
      const auto& t = Fp8Table();
      for (size_t i = 0; i < count; ++i) dst[i] = t[s[i]];
      return;
    }
    default:
      for (size_t i = 0; i < count; ++i) dst[i] = NAN;
  }
}

}  // namespace r1
