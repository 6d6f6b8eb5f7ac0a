#include "worker/model/weights.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace r1 {
namespace {

bool IsFloat(DType d) {
  return d == DType::kF32 || d == DType::kBF16 || d == DType::kF16 || d == DType::kF8E4M3;
}

absl::Status ResolveRange(Range& r, int64_t size, const std::string& what) {
  if (r.end < 0) r.end = size;
  if (r.begin < 0 || r.begin > r.end || r.end > size) {
    return absl::InvalidArgumentError(absl::StrCat(what, " range [", r.begin, ", ", r.end, ") outside [0, ", size, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Matrix> LoadMatrix(const Checkpoint& ckpt, const ModelConfig& config, const std::string& name,
                                  int64_t rows, int64_t cols, Range row_range, Range col_range) {
  R1_ASSIGN_OR_RETURN(TensorView t, ckpt.Get(name, {rows, cols}));
  R1_RETURN_IF_ERROR(ResolveRange(row_range, rows, absl::StrCat(t.file, ": tensor ", name, ": row")));
  R1_RETURN_IF_ERROR(ResolveRange(col_range, cols, absl::StrCat(t.file, ": tensor ", name, ": column")));
  Matrix m;
  m.rows = row_range.end - row_range.begin;
  m.cols = col_range.end - col_range.begin;
  m.data.resize(static_cast<size_t>(m.rows * m.cols));
  if (!IsFloat(t.dtype)) {
    return absl::FailedPreconditionError(
        absl::StrCat(t.file, ": tensor ", name, ": dtype ", DTypeName(t.dtype), " is not a floating type"));
  }
  const size_t esize = DTypeSize(t.dtype);
  for (int64_t r = 0; r < m.rows; ++r) {
    const uint8_t* src = t.data + ((row_range.begin + r) * cols + col_range.begin) * esize;
    ConvertToFloat(t.dtype, src, static_cast<size_t>(m.cols), m.data.data() + r * m.cols);
  }
  const std::string base = name.size() > 7 && name.ends_with(".weight") ? name.substr(0, name.size() - 7) : name;
  const std::string scale_name = base + ".weight_scale_inv";
  if (t.dtype != DType::kF8E4M3) {
    // Scales beside an unquantised weight would be silently ignored: a mixed-up checkpoint.
    if (ckpt.Has(scale_name)) {
      return absl::FailedPreconditionError(absl::StrCat(t.file, ": tensor ", name, ": dtype ", DTypeName(t.dtype),
                                                        " but ", scale_name, " exists (expected F8_E4M3)"));
    }
    return m;
  }

  // FP8: multiply by the block scales.
  if (!config.fp8) {
    return absl::FailedPreconditionError(absl::StrCat(t.file, ": tensor ", name,
                                                      ": FP8 weight but config.json has no fp8 quantization_config"));
  }
  const int64_t br = config.fp8->block_rows, bc = config.fp8->block_cols;
  const int64_t srows = (rows + br - 1) / br, scols = (cols + bc - 1) / bc;
  auto s = ckpt.Get(scale_name, {srows, scols});
  if (!s.ok()) return Annotate(s.status(), absl::StrCat(t.file, ": scales of FP8 tensor ", name));
  if (s->dtype != DType::kF32 && s->dtype != DType::kBF16) {
    return absl::FailedPreconditionError(
        absl::StrCat(s->file, ": tensor ", scale_name, ": dtype ", DTypeName(s->dtype), ", expected F32 or BF16"));
  }
  std::vector<float> scales(static_cast<size_t>(srows * scols));
  ConvertToFloat(s->dtype, s->data, scales.size(), scales.data());
  for (float v : scales) {
    if (!std::isfinite(v)) {
      return absl::DataLossError(absl::StrCat(s->file, ": tensor ", scale_name, ": non-finite scale"));
    }
  }
  for (int64_t r = 0; r < m.rows; ++r) {
    const int64_t gr = (row_range.begin + r) / br;
    float* dst = m.data.data() + r * m.cols;
    for (int64_t c = 0; c < m.cols; ++c) dst[c] *= scales[gr * scols + (col_range.begin + c) / bc];
  }
  return m;
}

absl::StatusOr<std::vector<float>> LoadVector(const Checkpoint& ckpt, const std::string& name, int64_t size) {
  R1_ASSIGN_OR_RETURN(TensorView t, ckpt.Get(name, {size}));
  if (!IsFloat(t.dtype) || t.dtype == DType::kF8E4M3) {
    return absl::FailedPreconditionError(
        absl::StrCat(t.file, ": tensor ", name, ": dtype ", DTypeName(t.dtype), ", expected F32, BF16 or F16"));
  }
  std::vector<float> v(static_cast<size_t>(size));
  ConvertToFloat(t.dtype, t.data, v.size(), v.data());
  return v;
}

}  // namespace r1
