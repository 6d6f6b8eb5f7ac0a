// common/safetensors: a good file reads back exactly; every corrupt checkpoint fails with an
// error naming the file and, where there is one, the tensor. Also the model-level view: a
// checkpoint that disagrees with its config.json fails DeepseekV3Model::Load the same way.
#include "common/safetensors.h"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "common/log.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/test_util.h"
#include "worker/model/deepseek_v3.h"

namespace r1 {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::GoldenModel;
using testing::TempDir;
using testing::WriteRawSafetensors;

// One tensor as it goes into a file: safetensors dtype name, shape and raw bytes.
struct Tensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

// Writes `tensors` back to back as a safetensors file; `edit` may change the header first.
void WriteSafetensors(const std::string& path, const std::vector<Tensor>& tensors,
                      const std::function<void(json&)>& edit = {}) {
  json header = json::object();
  std::string data;
  for (const Tensor& t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", json::array({data.size(), data.size() + t.bytes.size()})}};
    data += t.bytes;
  }
  header["__metadata__"] = {{"format", "pt"}};
  if (edit) edit(header);
  WriteRawSafetensors(path, header.dump(), data);
}

// Every tensor of a safetensors file, in name order.
std::vector<Tensor> ReadTensors(const std::string& path) {
  auto f = SafetensorsFile::Open(path);
  EXPECT_TRUE(f.ok()) << f.status();
  std::vector<Tensor> out;
  if (!f.ok()) return out;
  for (const auto& [name, v] : (*f)->tensors()) {
    out.push_back({name, std::string(DTypeName(v.dtype)), v.shape,
                   std::string(reinterpret_cast<const char*>(v.data), v.nbytes)});
  }
  return out;
}

void WriteText(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

std::string Bytes(size_t n, char fill) { return std::string(n, fill); }

// Checks that `status` is an error whose message contains every one of `parts`.
void ExpectErrorNames(const absl::Status& status, std::initializer_list<std::string> parts) {
  ASSERT_FALSE(status.ok()) << "expected an error naming " << *parts.begin();
  const std::string msg(status.message());
  for (const std::string& p : parts) {
    EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' is not named in: " << msg;
  }
}

// A one-file folder holding model.safetensors; returns the file's path.
std::string SingleFile(const std::string& test, const std::vector<Tensor>& tensors,
                       const std::function<void(json&)>& edit = {}) {
  const std::string path = TempDir(test) + "/model.safetensors";
  WriteSafetensors(path, tensors, edit);
  return path;
}

absl::Status OpenFile(const std::string& path) { return SafetensorsFile::Open(path).status(); }
absl::Status OpenDir(const std::string& dir) { return Checkpoint::Open(dir).status(); }

const std::vector<Tensor> kTwoTensors = {
    {"a.weight", "F32", {2, 3}, Bytes(24, 1)},
    {"b.weight", "BF16", {4}, Bytes(8, 2)},
};

// ---- a good file -------------------------------------------------------------------------

TEST(Safetensors, ReadsEveryDtypeBackExactly) {
  std::vector<Tensor> tensors;
  std::string f32(6 * 4, 0), bf16(5 * 2, 0), fp8(7 * 3, 0), i32(4 * 4, 0);
  for (size_t i = 0; i < f32.size(); ++i) f32[i] = static_cast<char>(i * 7 + 1);
  for (size_t i = 0; i < bf16.size(); ++i) bf16[i] = static_cast<char>(200 - i);
  for (size_t i = 0; i < fp8.size(); ++i) fp8[i] = static_cast<char>(i * 13);
  for (size_t i = 0; i < i32.size(); ++i) i32[i] = static_cast<char>(i ^ 0x5a);
  tensors.push_back({"x.f32", "F32", {2, 3}, f32});
  tensors.push_back({"x.bf16", "BF16", {5}, bf16});
  tensors.push_back({"x.fp8", "F8_E4M3", {7, 3}, fp8});
  tensors.push_back({"x.i32", "I32", {1, 2, 2}, i32});
  tensors.push_back({"x.empty", "F32", {0, 4}, ""});
  const std::string path = SingleFile("good_file", tensors);

  auto ck = Checkpoint::Open(fs::path(path).parent_path().string());
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_EQ((*ck)->num_files(), 1u);
  EXPECT_EQ((*ck)->Names().size(), tensors.size());
  EXPECT_EQ((*ck)->total_bytes(), f32.size() + bf16.size() + fp8.size() + i32.size());
  const DType dtypes[] = {DType::kF32, DType::kBF16, DType::kF8E4M3, DType::kI32, DType::kF32};
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    SCOPED_TRACE(t.name);
    auto v = (*ck)->Get(t.name, t.shape);
    ASSERT_TRUE(v.ok()) << v.status();
    EXPECT_EQ(v->name, t.name);
    EXPECT_EQ(v->file, path);
    EXPECT_EQ(v->dtype, dtypes[i]);
    EXPECT_EQ(v->shape, t.shape);
    ASSERT_EQ(v->nbytes, t.bytes.size());
    EXPECT_EQ(std::memcmp(v->data, t.bytes.data(), t.bytes.size()), 0);
  }
  EXPECT_EQ((*ck)->Get("x.i32")->ShapeString(), "[1, 2, 2]");
  EXPECT_EQ((*ck)->Get("x.fp8")->numel(), 21);

  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->metadata().at("format"), "pt");
  EXPECT_EQ((*f)->data_bytes(), (*ck)->total_bytes());
}

TEST(Checkpoint, OpensShardedGoldenModel) {
  auto ck = Checkpoint::Open(GoldenModel("golden-a-bf16"));
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_EQ((*ck)->num_files(), 3u);
  EXPECT_TRUE((*ck)->Has("model.embed_tokens.weight"));
  EXPECT_TRUE((*ck)->Has("lm_head.weight"));
}

// ---- corrupt files -----------------------------------------------------------------------

TEST(Safetensors, TruncatedShardNamesFileAndLastTensor) {
  const std::string golden = GoldenModel("golden-b-bf16") + "/model.safetensors";
  // The tensor whose data ends last: the one a cut at the end of the file damages.
  std::string last;
  size_t last_end = 0;
  {
    auto f = SafetensorsFile::Open(golden);
    ASSERT_TRUE(f.ok()) << f.status();
    const uint8_t* end = nullptr;
    for (const auto& [name, v] : (*f)->tensors()) {
      if (end == nullptr || v.data + v.nbytes > end) {
        end = v.data + v.nbytes;
        last = name;
      }
    }
    last_end = (*f)->data_bytes();
  }
  ASSERT_FALSE(last.empty());
  ASSERT_GT(last_end, 16u);

  const std::string dir = TempDir("truncated_shard");
  const std::string path = dir + "/model.safetensors";
  fs::copy_file(golden, path);
  fs::resize_file(path, fs::file_size(path) - 7);
  ExpectErrorNames(OpenDir(dir), {path, last, "truncated"});
}

TEST(Safetensors, FileShorterThanEightBytes) {
  const std::string dir = TempDir("short_file");
  const std::string path = dir + "/model.safetensors";
  WriteText(path, std::string("\x05\x00\x00", 3));
  ExpectErrorNames(OpenFile(path), {path, "too short"});
  WriteText(path, "");
  ExpectErrorNames(OpenDir(dir), {path, "too short"});
}

TEST(Safetensors, HeaderLengthPastEndOfFile) {
  const std::string path = TempDir("header_past_end") + "/model.safetensors";
  WriteRawSafetensors(path, "{}", "", /*header_len_override=*/1000);
  ExpectErrorNames(OpenFile(path), {path, "header length 1000", "truncated"});
}

TEST(Safetensors, HeaderLengthOverLimit) {
  const std::string path = TempDir("header_over_limit") + "/model.safetensors";
  WriteRawSafetensors(path, "{}", "", SafetensorsFile::kMaxHeaderBytes + 1);
  ExpectErrorNames(OpenFile(path), {path, "exceeds the limit"});
}

TEST(Safetensors, HeaderNotJson) {
  const std::string path = TempDir("header_not_json") + "/model.safetensors";
  WriteRawSafetensors(path, "{\"a\": [1, 2", "");
  ExpectErrorNames(OpenFile(path), {path, "not a valid JSON object"});
}

TEST(Safetensors, HeaderIsJsonArray) {
  const std::string path = TempDir("header_array") + "/model.safetensors";
  WriteRawSafetensors(path, "[1, 2, 3]", "");
  ExpectErrorNames(OpenFile(path), {path, "not a valid JSON object"});
}

TEST(Safetensors, UnknownDtype) {
  const std::string path = SingleFile("unknown_dtype", kTwoTensors, [](json& h) { h["b.weight"]["dtype"] = "F8_E5M2"; });
  ExpectErrorNames(OpenFile(path), {path, "b.weight", "F8_E5M2"});
}

TEST(Safetensors, NegativeDim) {
  const std::string path = SingleFile("negative_dim", kTwoTensors, [](json& h) { h["a.weight"]["shape"] = {-2, -3}; });
  ExpectErrorNames(OpenFile(path), {path, "a.weight", "non-negative"});
}

TEST(Safetensors, OffsetsBeginAfterEnd) {
  const std::string path =
      SingleFile("offsets_reversed", kTwoTensors, [](json& h) { h["a.weight"]["data_offsets"] = {24, 0}; });
  ExpectErrorNames(OpenFile(path), {path, "a.weight", "begin after they end"});
}

TEST(Safetensors, ByteSizeDisagreesWithShape) {
  const std::string path = SingleFile("bad_byte_size", kTwoTensors, [](json& h) { h["a.weight"]["shape"] = {2, 2}; });
  ExpectErrorNames(OpenFile(path), {path, "a.weight", "holds 24 bytes but F32 [2, 2] needs 16"});
}

TEST(Safetensors, OverlappingTensors) {
  const std::vector<Tensor> tensors = {
      {"a.weight", "F32", {4}, Bytes(16, 1)},
      {"b.weight", "F32", {4}, Bytes(16, 2)},
  };
  // b starts 8 bytes into a.
  const std::string path = SingleFile("overlap", tensors, [](json& h) { h["b.weight"]["data_offsets"] = {8, 24}; });
  ExpectErrorNames(OpenFile(path), {path, "b.weight", "overlaps tensor a.weight"});
}

// ---- index and shards --------------------------------------------------------------------

// A folder with two shards, one tensor each, and an index; `weight_map` overrides the index.
std::string Sharded(const std::string& test, const json& weight_map) {
  const std::string dir = TempDir(test);
  WriteSafetensors(dir + "/model-00001-of-00002.safetensors", {kTwoTensors[0]});
  WriteSafetensors(dir + "/model-00002-of-00002.safetensors", {kTwoTensors[1]});
  WriteText(dir + "/model.safetensors.index.json",
            json{{"metadata", {{"total_size", 32}}}, {"weight_map", weight_map}}.dump(2));
  return dir;
}

const json kWeightMap = {{"a.weight", "model-00001-of-00002.safetensors"},
                         {"b.weight", "model-00002-of-00002.safetensors"}};

TEST(Checkpoint, OpensShardsListedByIndex) {
  auto ck = Checkpoint::Open(Sharded("sharded_ok", kWeightMap));
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_EQ((*ck)->num_files(), 2u);
  EXPECT_EQ((*ck)->Get("b.weight")->file, (*ck)->dir() + "/model-00002-of-00002.safetensors");
}

TEST(Checkpoint, IndexNamesTensorTheShardLacks) {
  json map = kWeightMap;
  map["c.weight"] = "model-00002-of-00002.safetensors";
  const std::string dir = Sharded("index_extra_tensor", map);
  ExpectErrorNames(OpenDir(dir), {dir + "/model-00002-of-00002.safetensors", "c.weight", "missing from the shard"});
}

TEST(Checkpoint, ShardHoldsTensorTheIndexDoesNotList) {
  const std::string dir = Sharded("shard_extra_tensor", kWeightMap);
  WriteSafetensors(dir + "/model-00002-of-00002.safetensors", {kTwoTensors[1], {"z.weight", "U8", {1}, "z"}});
  ExpectErrorNames(OpenDir(dir), {dir + "/model-00002-of-00002.safetensors", "z.weight",
                                  "not in " + dir + "/model.safetensors.index.json"});
}

TEST(Checkpoint, ShardHoldsTensorTheIndexPlacesInAnotherShard) {
  const std::string dir = Sharded("tensor_in_two_shards", kWeightMap);
  // Shard 2 also holds a.weight, which the index places in shard 1.
  WriteSafetensors(dir + "/model-00002-of-00002.safetensors", {kTwoTensors[0], kTwoTensors[1]});
  ExpectErrorNames(OpenDir(dir), {dir + "/model-00002-of-00002.safetensors", "a.weight",
                                  "model-00001-of-00002.safetensors"});
  // And the other way round: shard 1 holds b.weight, which the index places in shard 2.
  WriteSafetensors(dir + "/model-00001-of-00002.safetensors", {kTwoTensors[0], kTwoTensors[1]});
  WriteSafetensors(dir + "/model-00002-of-00002.safetensors", {kTwoTensors[1]});
  ExpectErrorNames(OpenDir(dir), {dir + "/model-00001-of-00002.safetensors", "b.weight",
                                  "model-00002-of-00002.safetensors"});
}

TEST(Checkpoint, IndexNotJson) {
  const std::string dir = Sharded("index_not_json", kWeightMap);
  WriteText(dir + "/model.safetensors.index.json", "{\"weight_map\": {\"a.weight\": ");
  ExpectErrorNames(OpenDir(dir), {dir + "/model.safetensors.index.json", "not valid JSON"});
}

TEST(Checkpoint, IndexPathTraversalRefused) {
  // A real safetensors file outside the folder: the index must not reach it.
  const std::string outside = TempDir("traversal_target");
  WriteSafetensors(outside + "/model.safetensors", {kTwoTensors[0]});
  const std::vector<std::string> bad_names = {"../traversal_target/model.safetensors", outside + "/model.safetensors",
                                              "sub/model.safetensors", "..", ""};
  for (const std::string& bad : bad_names) {
    SCOPED_TRACE(bad);
    json map = kWeightMap;
    map["a.weight"] = bad;
    const std::string dir = Sharded("index_traversal", map);
    ExpectErrorNames(OpenDir(dir), {dir + "/model.safetensors.index.json", "a.weight", "bad file name"});
  }
}

TEST(Checkpoint, IndexFileNameWithControlBytesRefused) {
  // An embedded NUL would open the real shard under a name the index does not give; a newline or an
  // escape would garble the log line that names it. The message shows the bytes escaped.
  const std::vector<std::string> bad_names = {std::string("model-00001-of-00002.safetensors\0", 33),
                                              "model-00001-of-00002.safetensors\n", "model\x1b[2J.safetensors",
                                              "model-00001-of-00002.safetensors\x7f"};
  for (const std::string& bad : bad_names) {
    SCOPED_TRACE(absl::CHexEscape(bad));
    json map = kWeightMap;
    map["a.weight"] = bad;
    const std::string dir = Sharded("index_control_bytes", map);
    const absl::Status st = OpenDir(dir);
    ExpectErrorNames(st, {dir + "/model.safetensors.index.json", "a.weight", "bad file name"});
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(std::string(st.message()).find_first_of(std::string("\0\n\x1b\x7f", 4)), std::string::npos);
  }
}

TEST(Checkpoint, IndexNamesMissingShard) {
  const std::string dir = Sharded("missing_shard", kWeightMap);
  fs::remove(dir + "/model-00002-of-00002.safetensors");
  ExpectErrorNames(OpenDir(dir), {dir + "/model-00002-of-00002.safetensors", "model.safetensors.index.json",
                                  "cannot open"});
}

TEST(Checkpoint, FolderWithoutWeights) {
  const std::string dir = TempDir("no_weights");
  WriteText(dir + "/config.json", "{}");
  ExpectErrorNames(OpenDir(dir), {dir, "model.safetensors.index.json", "model.safetensors"});
  ExpectErrorNames(OpenDir(dir + "/no-such-folder"), {dir + "/no-such-folder", "not a directory"});
}

TEST(Checkpoint, GetMissingTensor) {
  const std::string path = SingleFile("get_missing", kTwoTensors);
  auto ck = Checkpoint::Open(fs::path(path).parent_path().string());
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_FALSE((*ck)->Has("c.weight"));
  auto v = (*ck)->Get("c.weight");
  ExpectErrorNames(v.status(), {(*ck)->dir(), "c.weight", "missing"});
  EXPECT_EQ(v.status().code(), absl::StatusCode::kNotFound);
}

TEST(Checkpoint, GetWithWrongShapeNamesBothShapes) {
  const std::string path = SingleFile("get_wrong_shape", kTwoTensors);
  auto ck = Checkpoint::Open(fs::path(path).parent_path().string());
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_TRUE((*ck)->Get("a.weight", {2, 3}).ok());
  ExpectErrorNames((*ck)->Get("a.weight", {3, 2}).status(), {path, "a.weight", "[2, 3]", "[3, 2]"});
  ExpectErrorNames((*ck)->Get("b.weight", {4, 1}).status(), {path, "b.weight", "[4]", "[4, 1]"});
}

// ---- the model against its checkpoint ----------------------------------------------------

// Quiets progress lines while a test loads a model.
class QuietLog {
 public:
  QuietLog() : saved_(MinLogLevel()) { SetMinLogLevel(LogLevel::WARNING); }
  ~QuietLog() { SetMinLogLevel(saved_); }

 private:
  LogLevel saved_;
};

// A writable copy of golden-b-fp8 (one file: model.safetensors).
std::string CopyOfFp8Model(const std::string& test) {
  const std::string dir = TempDir(test);
  fs::copy(GoldenModel("golden-b-fp8"), dir, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  return dir;
}

absl::Status LoadModel(const std::string& dir) {
  QuietLog quiet;
  return DeepseekV3Model::Load(dir).status();
}

TEST(ModelLoad, CopiedFp8GoldenLoads) {
  EXPECT_TRUE(LoadModel(CopyOfFp8Model("model_ok")).ok());
}

TEST(ModelLoad, HiddenSizeMismatchNamesTensorAndShard) {
  const std::string dir = CopyOfFp8Model("model_hidden_size");
  json config = json::parse(std::ifstream(dir + "/config.json"));
  config["hidden_size"] = config["hidden_size"].get<int64_t>() + 32;
  WriteText(dir + "/config.json", config.dump(2));
  ExpectErrorNames(LoadModel(dir), {dir + "/model.safetensors", "model.embed_tokens.weight", "shape"});
}

TEST(ModelLoad, MissingScaleNamesScaleTensor) {
  const std::string dir = CopyOfFp8Model("model_missing_scale");
  const std::string path = dir + "/model.safetensors";
  const std::string scale = "model.layers.0.self_attn.kv_b_proj.weight_scale_inv";
  std::vector<Tensor> tensors = ReadTensors(path);
  const size_t before = tensors.size();
  std::erase_if(tensors, [&](const Tensor& t) { return t.name == scale; });
  ASSERT_EQ(tensors.size(), before - 1);
  WriteSafetensors(path, tensors);
  ExpectErrorNames(LoadModel(dir), {dir, scale, "model.layers.0.self_attn.kv_b_proj.weight"});
}

TEST(ModelLoad, Fp8WeightRelabelledBf16NamesTensorAndShard) {
  const std::string dir = CopyOfFp8Model("model_relabelled_dtype");
  const std::string path = dir + "/model.safetensors";
  const std::string weight = "model.layers.1.self_attn.o_proj.weight";
  WriteSafetensors(path, ReadTensors(path), [&](json& h) {
    ASSERT_EQ(h[weight]["dtype"], "F8_E4M3");
    h[weight]["dtype"] = "BF16";
  });
  ExpectErrorNames(LoadModel(dir), {path, weight, "BF16"});
}

}  // namespace
}  // namespace r1
