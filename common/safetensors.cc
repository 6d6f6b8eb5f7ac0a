#include "common/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace r1 {

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorView::ShapeString() const { return absl::StrCat("[", absl::StrJoin(shape, ", "), "]"); }

absl::StatusOr<std::unique_ptr<MappedFile>> MappedFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  const uint8_t* data = nullptr;
  if (size > 0) {
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      return absl::InternalError(absl::StrCat(path, ": mmap failed: ", std::strerror(err)));
    }
    data = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  return std::unique_ptr<MappedFile>(new MappedFile(path, data, size));
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

namespace {

absl::Status HeaderError(const std::string& path, absl::string_view tensor, absl::string_view what) {
  if (tensor.empty()) return absl::DataLossError(absl::StrCat(path, ": ", what));
  return absl::DataLossError(absl::StrCat(path, ": tensor ", tensor, ": ", what));
}

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  auto st = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  R1_ASSIGN_OR_RETURN(st->file_, MappedFile::Open(path));
  const size_t file_size = st->file_->size();
  if (file_size < 8) return HeaderError(path, "", "file too short for a safetensors header (truncated?)");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | st->file_->data()[i];
  if (header_len > kMaxHeaderBytes) {
    return HeaderError(path, "", absl::StrCat("header length ", header_len, " exceeds the limit of ",
                                              kMaxHeaderBytes, " bytes"));
  }
  if (header_len > file_size - 8) {
    return HeaderError(path, "", absl::StrCat("header length ", header_len, " runs past the end of the ",
                                              file_size, "-byte file (truncated?)"));
  }
  const char* hdr = reinterpret_cast<const char*>(st->file_->data() + 8);
  nlohmann::json j = nlohmann::json::parse(hdr, hdr + header_len, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return HeaderError(path, "", "header is not a valid JSON object");

  const uint8_t* base = st->file_->data() + 8 + header_len;
  const size_t data_bytes = file_size - 8 - header_len;
  st->data_bytes_ = data_bytes;
  struct Span { uint64_t begin, end; std::string name; };
  std::vector<Span> spans;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& e = it.value();
    if (name == "__metadata__") {
      if (!e.is_object()) return HeaderError(path, "", "__metadata__ is not an object");
      for (auto m = e.begin(); m != e.end(); ++m) {
        if (!m.value().is_string()) return HeaderError(path, "", "__metadata__ values must be strings");
        st->metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets")) {
      return HeaderError(path, name, "entry must have dtype, shape and data_offsets");
    }
    if (!e["dtype"].is_string()) return HeaderError(path, name, "dtype is not a string");
    auto dtype = ParseDType(e["dtype"].get<std::string>());
    if (!dtype) return HeaderError(path, name, absl::StrCat("unsupported dtype ", e["dtype"].get<std::string>()));
    const nlohmann::json& shape = e["shape"];
    const nlohmann::json& offs = e["data_offsets"];
    if (!shape.is_array() || shape.size() > 8) return HeaderError(path, name, "shape must be an array of at most 8 dims");
    TensorView v;
    v.name = name;
    v.file = path;
    v.dtype = *dtype;
    uint64_t numel = 1;
    for (const auto& d : shape) {
      if (!d.is_number_unsigned()) return HeaderError(path, name, "shape entries must be non-negative integers");
      uint64_t dim = d.get<uint64_t>();
      if (dim > (1ull << 40) || (dim != 0 && numel > (1ull << 50) / dim)) {
        return HeaderError(path, name, "shape is implausibly large");
      }
      numel *= dim;
      v.shape.push_back(static_cast<int64_t>(dim));
    }
    if (!offs.is_array() || offs.size() != 2 || !offs[0].is_number_unsigned() || !offs[1].is_number_unsigned()) {
      return HeaderError(path, name, "data_offsets must be two non-negative integers");
    }
    const uint64_t begin = offs[0].get<uint64_t>(), end = offs[1].get<uint64_t>();
    if (begin > end) return HeaderError(path, name, "data_offsets begin after they end");
    if (end > data_bytes) {
      return HeaderError(path, name, absl::StrCat("data ends at byte ", end, " but the file holds ", data_bytes,
                                                  " data bytes (shard truncated?)"));
    }
    const uint64_t expect = numel * DTypeSize(*dtype);
    if (end - begin != expect) {
      return HeaderError(path, name, absl::StrCat("holds ", end - begin, " bytes but ", DTypeName(*dtype), " ",
                                                  v.ShapeString(), " needs ", expect));
    }
    v.data = base + begin;
    v.nbytes = static_cast<size_t>(expect);
    spans.push_back({begin, end, name});
    st->tensors_.emplace(name, std::move(v));
  }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < spans.size(); ++i) {
    if (spans[i].begin < spans[i - 1].end) {
      return HeaderError(path, spans[i].name, absl::StrCat("data overlaps tensor ", spans[i - 1].name));
    }
  }
  return st;
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  namespace fs = std::filesystem;
  auto ck = std::unique_ptr<Checkpoint>(new Checkpoint());
  ck->dir_ = dir;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return absl::NotFoundError(absl::StrCat(dir, ": not a directory"));
  const std::string index_path = (fs::path(dir) / "model.safetensors.index.json").string();
  const std::string single_path = (fs::path(dir) / "model.safetensors").string();
  if (fs::exists(index_path, ec)) {
    std::ifstream in(index_path);
    nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      return absl::DataLossError(absl::StrCat(index_path, ": not valid JSON"));
    }
    if (!j.contains("weight_map") || !j["weight_map"].is_object()) {
      return absl::DataLossError(absl::StrCat(index_path, ": no weight_map object"));
    }
    std::map<std::string, std::vector<std::string>> by_file;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string()) {
        return absl::DataLossError(absl::StrCat(index_path, ": tensor ", it.key(), ": file name is not a string"));
      }
      const std::string file = it.value().get<std::string>();
      // A shard's name is a plain file name in the folder: no separators, no parent, and no control
      // bytes (an embedded NUL would open a different file than the one the index names).
      const bool control = std::any_of(file.begin(), file.end(), [](char c) {
        return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
      });
      if (file.empty() || control || file.find('/') != std::string::npos ||
          file.find('\\') != std::string::npos || file == "." || file == "..") {
        return absl::DataLossError(absl::StrCat(index_path, ": tensor ", absl::CHexEscape(it.key()),
                                                ": bad file name '", absl::CHexEscape(file), "'"));
      }
      by_file[file].push_back(it.key());
    }
    for (const auto& [file, names] : by_file) {
      const std::string path = (fs::path(dir) / file).string();
      auto f = SafetensorsFile::Open(path);
      if (!f.ok()) return Annotate(f.status(), absl::StrCat("shard listed in ", index_path));
      for (const auto& n : names) {
        auto t = (*f)->tensors().find(n);
        if (t == (*f)->tensors().end()) {
          return absl::DataLossError(absl::StrCat(path, ": tensor ", n, ": listed in ", index_path,
                                                  " but missing from the shard"));
        }
        ck->by_name_[n] = &t->second;
      }
      for (const auto& [n, v] : (*f)->tensors()) {
        auto listed = j["weight_map"].find(n);
        if (listed == j["weight_map"].end()) {
          return absl::DataLossError(absl::StrCat(path, ": tensor ", n, ": in the shard but not in ", index_path));
        }
        if (listed->get<std::string>() != file) {
          return absl::DataLossError(absl::StrCat(path, ": tensor ", n, ": in the shard but ", index_path,
                                                  " places it in ", listed->get<std::string>()));
        }
      }
      ck->files_.push_back(std::move(*f));
    }
  } else if (fs::exists(single_path, ec)) {
    R1_ASSIGN_OR_RETURN(auto f, SafetensorsFile::Open(single_path));
    for (const auto& [n, v] : f->tensors()) ck->by_name_[n] = &v;
    ck->files_.push_back(std::move(f));
  } else {
    return absl::NotFoundError(
        absl::StrCat(dir, ": neither model.safetensors.index.json nor model.safetensors is there"));
  }
  return ck;
}

bool Checkpoint::Has(absl::string_view name) const { return by_name_.find(std::string(name)) != by_name_.end(); }

absl::StatusOr<TensorView> Checkpoint::Get(absl::string_view name) const {
  auto it = by_name_.find(std::string(name));
  if (it == by_name_.end()) {
    return absl::NotFoundError(absl::StrCat(dir_, ": tensor ", name, ": missing from the checkpoint"));
  }
  return *it->second;
}

absl::StatusOr<TensorView> Checkpoint::Get(absl::string_view name, const std::vector<int64_t>& shape) const {
  R1_ASSIGN_OR_RETURN(TensorView v, Get(name));
  if (v.shape != shape) {
    return absl::FailedPreconditionError(absl::StrCat(v.file, ": tensor ", name, ": shape ", v.ShapeString(),
                                                      " but the config implies [", absl::StrJoin(shape, ", "), "]"));
  }
  return v;
}

std::vector<std::string> Checkpoint::Names() const {
  std::vector<std::string> names;
  names.reserve(by_name_.size());
  for (const auto& [n, v] : by_name_) names.push_back(n);
  return names;
}

size_t Checkpoint::total_bytes() const {
  size_t total = 0;
  for (const auto& [n, v] : by_name_) total += v->nbytes;
  return total;
}

}  // namespace r1
