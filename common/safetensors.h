// Reads checkpoints in the safetensors format exactly as published: one file or shards listed by
// model.safetensors.index.json. Files are mmapped; a tensor's bytes are only touched when the
// caller reads them, so a worker that asks for its slice pages in just that slice.
//
// Every header is validated on open: bounded size, valid JSON, known dtype, byte size equal to
// dtype x shape, offsets inside the file and not overlapping; the index and the shards must agree.
// Errors name the file and, where there is one, the tensor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "common/dtype.h"

namespace r1 {

// A read-only view of one tensor inside a mapped file. Valid while its Checkpoint lives.
struct TensorView {
  std::string name;
  std::string file;  // path of the shard holding it
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;

  int64_t numel() const;
  std::string ShapeString() const;  // "[7168, 576]"
};

// A read-only memory map of a whole file.
class MappedFile {
 public:
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const uint8_t* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  std::string path_;
  const uint8_t* data_;
  size_t size_;
};

// One .safetensors file: its validated header and its mapping.
class SafetensorsFile {
 public:
  // The most header bytes accepted (safetensors' own reader allows 100 MB).
  static constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  const std::string& path() const { return file_->path(); }
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Bytes of tensor data (the file less the header).
  size_t data_bytes() const { return data_bytes_; }

 private:
  std::unique_ptr<MappedFile> file_;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
  size_t data_bytes_ = 0;
};

// A model folder's weights: model.safetensors.index.json with its shards, or model.safetensors.
class Checkpoint {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);

  bool Has(absl::string_view name) const;
  // The tensor, or NOT_FOUND naming the tensor and the folder.
  absl::StatusOr<TensorView> Get(absl::string_view name) const;
  // The tensor after checking its shape; an error names file, tensor, expected and actual shape.
  absl::StatusOr<TensorView> Get(absl::string_view name, const std::vector<int64_t>& shape) const;

  std::vector<std::string> Names() const;
  const std::string& dir() const { return dir_; }
  size_t num_files() const { return files_.size(); }
  // Total tensor bytes over all shards.
  size_t total_bytes() const;

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> by_name_;
};

}  // namespace r1
