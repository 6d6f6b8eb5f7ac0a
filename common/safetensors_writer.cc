#include "common/safetensors_writer.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace r1 {
namespace {

// Opens PATH.tmp, lets `write` fill it, then renames it to PATH; nothing is left behind on error.
template <typename Fn>
absl::Status WriteThroughTemp(const std::string& path, Fn write) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out)
      return absl::PermissionDeniedError(
          absl::StrCat(tmp, ": cannot create: ", std::strerror(errno)));
    write(out);
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      return absl::DataLossError(absl::StrCat(tmp, ": write failed (disk full?)"));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string err = std::strerror(errno);
    std::remove(tmp.c_str());
    return absl::PermissionDeniedError(absl::StrCat(path, ": cannot rename from ", tmp, ": ", err));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SafetensorsWriter::Add(const std::string& name, DType dtype,
                                    std::vector<int64_t> shape, std::string bytes) {
  if (name.empty() || name == "__metadata__")
    return absl::InvalidArgumentError(absl::StrCat("bad tensor name '", name, "'"));
  if (index_.contains(name))
    return absl::AlreadyExistsError(absl::StrCat("tensor ", name, " added twice"));
  size_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0)
      return absl::InvalidArgumentError(absl::StrCat("tensor ", name, ": negative dimension"));
    numel *= static_cast<size_t>(d);
  }
  if (numel * DTypeSize(dtype) != bytes.size()) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, ": ", bytes.size(),
                                                   " bytes given, ", numel * DTypeSize(dtype),
                                                   " expected for its dtype and shape"));
  }
  index_[name] = tensors_.size();
  data_bytes_ += bytes.size();
  tensors_.push_back({name, dtype, std::move(shape), std::move(bytes)});
  return absl::OkStatus();
}

std::vector<std::string> SafetensorsWriter::names() const {
  std::vector<std::string> out;
  for (const Entry& e : tensors_) out.push_back(e.name);
  return out;
}

absl::Status SafetensorsWriter::Write(const std::string& path,
                                      const std::map<std::string, std::string>& metadata) const {
  std::vector<const Entry*> entries;
  for (const Entry& e : tensors_) entries.push_back(&e);
  return WriteEntries(path, entries, metadata);
}

absl::StatusOr<std::vector<std::pair<std::string, size_t>>> SafetensorsWriter::WriteSharded(
    const std::string& dir, int64_t shards) const {
  if (shards < 1 || shards > 99999)
    return absl::InvalidArgumentError(absl::StrCat(shards, " shards: 1 to 99999"));
  std::vector<const Entry*> sorted;
  for (const auto& [name, i] : index_) sorted.push_back(&tensors_[i]);  // index_ is in name order
  std::vector<std::pair<std::string, size_t>> written;
  if (shards == 1) {
    const std::string file = dir + "/model.safetensors";
    R1_RETURN_IF_ERROR(WriteEntries(file, sorted, {{"format", "pt"}}));
    written.push_back({file, data_bytes_});
    return written;
  }
  const size_t per = (sorted.size() + shards - 1) / shards;
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  for (int64_t s = 0; s < shards; ++s) {
    char fname[64];
    std::snprintf(fname, sizeof fname, "model-%05ld-of-%05ld.safetensors", static_cast<long>(s + 1),
                  static_cast<long>(shards));
    std::vector<const Entry*> part;
    size_t bytes = 0;
    for (size_t i = s * per; i < std::min(sorted.size(), (s + 1) * per); ++i) {
      part.push_back(sorted[i]);
      weight_map[sorted[i]->name] = fname;
      bytes += sorted[i]->bytes.size();
    }
    const std::string file = dir + "/" + fname;
    R1_RETURN_IF_ERROR(WriteEntries(file, part, {{"format", "pt"}}));
    written.push_back({file, bytes});
  }
  const nlohmann::ordered_json index = {{"metadata", {{"total_size", data_bytes_}}},
                                        {"weight_map", weight_map}};
  R1_RETURN_IF_ERROR(
      WriteFileAtomically(dir + "/model.safetensors.index.json", index.dump(2) + "\n"));
  return written;
}

absl::Status SafetensorsWriter::WriteEntries(
    const std::string& path, const std::vector<const Entry*>& entries,
    const std::map<std::string, std::string>& metadata) const {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t offset = 0;
  for (const Entry* e : entries) {
    header[e->name] = {{"dtype", std::string(DTypeName(e->dtype))},
                       {"shape", e->shape},
                       {"data_offsets", {offset, offset + e->bytes.size()}}};
    offset += e->bytes.size();
  }
  std::string text = header.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  return WriteThroughTemp(path, [&](std::ofstream& out) {
    const uint64_t len = text.size();
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>((len >> (8 * i)) & 0xff));
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const Entry* e : entries)
      out.write(e->bytes.data(), static_cast<std::streamsize>(e->bytes.size()));
  });
}

absl::Status WriteFileAtomically(const std::string& path, const std::string& text) {
  return WriteThroughTemp(path, [&](std::ofstream& out) {
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
  });
}

}  // namespace r1
