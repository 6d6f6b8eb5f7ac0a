// Fuzz target: model.safetensors.index.json through Checkpoint::Open (common/safetensors.h), which
// maps tensor names to shard files and checks that the index and the shards agree.
//
// The input is the index file's text. It is written into a scratch model folder that holds three
// valid shards (five tensors of several dtypes, written once by SafetensorsWriter), a truncated
// shard and a folder with a shard's name, so the index can point at good, bad and missing files.
// Oracle, when the checkpoint opens: the tensor names are exactly those of the shards it lists,
// each tensor reads back with the shape, dtype and bytes it was written with, from the shard that
// holds it, and total_bytes is their sum.
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>

#include "common/safetensors.h"
#include "common/safetensors_writer.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

struct Written {
  std::string file;  // the shard's name in the folder
  r1::DType dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

struct Folder {
  std::string dir;
  std::map<std::string, Written> tensors;  // by name
};

const Folder& TheFolder() {
  static const Folder* folder = [] {
    auto* f = new Folder;
    f->dir = r1::fuzz::ScratchDir() + "/model";
    std::filesystem::create_directories(f->dir);
    r1::SafetensorsWriter writer;
    auto add = [&](const std::string& name, r1::DType dtype, std::vector<int64_t> shape) {
      size_t n = r1::DTypeSize(dtype);
      for (int64_t d : shape) n *= static_cast<size_t>(d);
      std::string bytes(n, '\0');
      for (size_t i = 0; i < n; ++i) bytes[i] = static_cast<char>(i * 31 + name.size());
      R1_FUZZ_REQUIRE(writer.Add(name, dtype, shape, bytes).ok(), "adding ", name);
      f->tensors[name] = Written{"", dtype, std::move(shape), std::move(bytes)};
    };
    add("lm_head.weight", r1::DType::kBF16, {4, 2});
    add("model.embed_tokens.weight", r1::DType::kBF16, {4, 2});
    add("model.layers.0.mlp.experts.0.up_proj.weight", r1::DType::kF8E4M3, {3, 5});
    add("model.layers.0.mlp.experts.0.up_proj.weight_scale_inv", r1::DType::kF32, {1, 1});
    add("model.norm.weight", r1::DType::kF32, {2});
    auto files = writer.WriteSharded(f->dir, 3);
    R1_FUZZ_REQUIRE(files.ok(), files.status().ToString());
    for (const auto& [path, bytes] : *files) {
      auto shard = r1::SafetensorsFile::Open(path);
      R1_FUZZ_REQUIRE(shard.ok(), shard.status().ToString());
      for (const auto& [name, view] : (*shard)->tensors()) {
        f->tensors[name].file = std::filesystem::path(path).filename().string();
      }
    }
    // A shard cut short, and a folder where a shard could be.
    std::ofstream(f->dir + "/model-00004-of-00004.safetensors", std::ios::binary) << "\x40\x00";
    std::filesystem::create_directories(f->dir + "/model-00005-of-00005.safetensors");
    return f;
  }();
  return *folder;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Folder& folder = TheFolder();
  const std::string index = folder.dir + "/model.safetensors.index.json";
  {
    std::ofstream out(index, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    R1_FUZZ_REQUIRE(out.good(), "writing ", index);
  }
  auto ck = r1::Checkpoint::Open(folder.dir);
  if (!ck.ok()) {
    R1_FUZZ_REQUIRE(!ck.status().message().empty(), "an error without a message");
    return 0;
  }
  std::set<std::string> files;
  size_t total = 0;
  for (const std::string& name : (*ck)->Names()) {
    auto it = folder.tensors.find(name);
    R1_FUZZ_REQUIRE(it != folder.tensors.end(), "unknown tensor ", name, " in the checkpoint");
    const Written& w = it->second;
    R1_FUZZ_REQUIRE((*ck)->Has(name), name);
    auto view = (*ck)->Get(name, w.shape);
    R1_FUZZ_REQUIRE(view.ok(), name, ": ", view.status().ToString());
    R1_FUZZ_REQUIRE(std::filesystem::path(view->file).filename() == w.file, name, " read from ",
                    view->file, ", written to ", w.file);
    R1_FUZZ_REQUIRE(view->dtype == w.dtype && view->nbytes == w.bytes.size() &&
                        std::memcmp(view->data, w.bytes.data(), w.bytes.size()) == 0,
                    name, ": not the bytes written");
    files.insert(w.file);
    total += view->nbytes;
  }
  // Every tensor of every shard opened is in the checkpoint (the index must list them all).
  for (const auto& [name, w] : folder.tensors) {
    R1_FUZZ_REQUIRE(!files.count(w.file) || (*ck)->Has(name), name, " of ", w.file, " is missing");
  }
  R1_FUZZ_REQUIRE((*ck)->num_files() == files.size(), (*ck)->num_files(),
                  " files opened, tensors from ", files.size());
  R1_FUZZ_REQUIRE((*ck)->total_bytes() == total, "total_bytes ", (*ck)->total_bytes(),
                  " != ", total);
  R1_FUZZ_REQUIRE(!(*ck)->Has("no.such.tensor") && !(*ck)->Get("no.such.tensor").ok(),
                  "a tensor that is not there");
  return 0;
}
