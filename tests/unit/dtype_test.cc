#include "common/dtype.h"

#include <cmath>

#include "gtest/gtest.h"

namespace r1 {
namespace {

TEST(DType, Fp8E4M3KnownValues) {
  EXPECT_EQ(Fp8E4M3ToFloat(0x00), 0.0f);
  EXPECT_EQ(Fp8E4M3ToFloat(0x38), 1.0f);           // exp 7, mant 0
  EXPECT_EQ(Fp8E4M3ToFloat(0x7e), 448.0f);         // the largest finite value
  EXPECT_EQ(Fp8E4M3ToFloat(0xfe), -448.0f);
  EXPECT_EQ(Fp8E4M3ToFloat(0x08), std::ldexp(1.0f, -6));  // smallest normal
  EXPECT_EQ(Fp8E4M3ToFloat(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(Fp8E4M3ToFloat(0x3c), 1.5f);
  EXPECT_TRUE(std::isnan(Fp8E4M3ToFloat(0x7f)));
  EXPECT_TRUE(std::isnan(Fp8E4M3ToFloat(0xff)));
}

TEST(DType, Fp8RoundTripsEveryCode) {
  for (int b = 0; b < 256; ++b) {
    if ((b & 0x7f) == 0x7f) continue;  // NaN
    const float v = Fp8E4M3ToFloat(static_cast<uint8_t>(b));
    const uint8_t back = FloatToFp8E4M3(v);
    if (v == 0.0f) {
      EXPECT_EQ(Fp8E4M3ToFloat(back), 0.0f);
    } else {
      EXPECT_EQ(back, b) << "code " << b << " value " << v;
    }
  }
  EXPECT_EQ(FloatToFp8E4M3(1000.0f), 0x7e);  // saturates
  EXPECT_EQ(FloatToFp8E4M3(1.0625f), 0x38);  // halfway 1 and 1.125: ties to even (1.0)
  EXPECT_EQ(FloatToFp8E4M3(1.1f), 0x39);
}

TEST(DType, Bf16AndF16) {
  EXPECT_EQ(Bf16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(3.140625f)), 3.140625f);
  EXPECT_EQ(FloatToBf16(1.00390625f), 0x3f80);  // halfway: ties to even
  EXPECT_EQ(F16ToFloat(0x3c00), 1.0f);
  EXPECT_EQ(F16ToFloat(0xc000), -2.0f);
  EXPECT_EQ(F16ToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::isinf(F16ToFloat(0x7c00)));
}

TEST(DType, Names) {
  for (DType d : {DType::kF32, DType::kBF16, DType::kF16, DType::kF8E4M3, DType::kI32, DType::kI64, DType::kU8}) {
    auto parsed = ParseDType(DTypeName(d));
    ASSERT_TRUE(parsed.has_value());
    EXPECT_EQ(*parsed, d);
  }
  EXPECT_FALSE(ParseDType("F8_E5M2").has_value());
  EXPECT_FALSE(ParseDType("f32").has_value());
}

}  // namespace
}  // namespace r1
