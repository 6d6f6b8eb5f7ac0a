// Reading weights from a Checkpoint into float32 matrices for the CPU reference. FP8 e4m3
// weights are dequantised with their weight_scale_inv blocks (w = q * scale_inv[r/128, c/128]);
// BF16, F16 and F32 are widened. A row range reads only the rows a rank owns (tensor or expert
// parallel sharding); the mmapped pages outside it are never touched.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/config.h"
#include "common/safetensors.h"

namespace r1 {

struct Matrix {
  int64_t rows = 0, cols = 0;
  std::vector<float> data;  // [rows, cols] row-major
  const float* row(int64_t r) const { return data.data() + r * cols; }
  size_t bytes() const { return data.size() * sizeof(float); }
};

struct Range {
  int64_t begin = 0, end = -1;  // end -1: to the end
};

// The [rows, cols] weight `name` (optionally only rows [r.begin, r.end) and cols [c.begin, c.end)).
// FP8 tensors need config.fp8 and a `<name minus .weight>.weight_scale_inv` of the right shape.
absl::StatusOr<Matrix> LoadMatrix(const Checkpoint& ckpt, const ModelConfig& config, const std::string& name,
                                  int64_t rows, int64_t cols, Range row_range = {}, Range col_range = {});

// A 1-D vector (norm weights, biases) of `size` values.
absl::StatusOr<std::vector<float>> LoadVector(const Checkpoint& ckpt, const std::string& name, int64_t size);

}  // namespace r1
