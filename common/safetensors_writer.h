// Writes safetensors files (the format common/safetensors.h reads): 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}} padded with
// spaces to a multiple of 8 bytes, then the tensors' bytes back to back in the order they were
// added. The file appears atomically: it is written to PATH.tmp and renamed.
//
// Holds the tensors' bytes in memory until Write: meant for test and demo models, not for
// rewriting a 700 GB checkpoint.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/dtype.h"

namespace r1 {

class SafetensorsWriter {
 public:
  // Adds a tensor; `bytes` must hold exactly dtype size x the product of `shape`. A repeated name
  // is an error.
  absl::Status Add(const std::string& name, DType dtype, std::vector<int64_t> shape,
                   std::string bytes);
  absl::Status Write(const std::string& path,
                     const std::map<std::string, std::string>& metadata = {{"format", "pt"}}) const;
  // A checkpoint folder as published: the tensors in name order split evenly by count over
  // `shards` files DIR/model-0000i-of-0000n.safetensors plus DIR/model.safetensors.index.json
  // (one shard: DIR/model.safetensors, no index). Returns each file written and its data bytes.
  absl::StatusOr<std::vector<std::pair<std::string, size_t>>> WriteSharded(const std::string& dir,
                                                                           int64_t shards) const;

  size_t data_bytes() const { return data_bytes_; }
  size_t num_tensors() const { return tensors_.size(); }
  std::vector<std::string> names() const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::string bytes;
  };
  absl::Status WriteEntries(const std::string& path, const std::vector<const Entry*>& entries,
                            const std::map<std::string, std::string>& metadata) const;

  std::vector<Entry> tensors_;
  std::map<std::string, size_t> index_;
  size_t data_bytes_ = 0;
};

// Writes `text` to `path` through PATH.tmp and a rename.
absl::Status WriteFileAtomically(const std::string& path, const std::string& text);

}  // namespace r1
