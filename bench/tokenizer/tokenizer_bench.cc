// bench_tokenizer: encode throughput of coordinator/tokenizer against Hugging Face's tokenizers
// (Rust, via the npm package @anush008/tokenizers) in the same run, one thread each, on the
// tokenizer test corpus; then the linearity table (100 KB of one letter, 100 KB with no spaces).
//   bench_tokenizer --model DIR [--repeats N]
// DIR holds tokenizer.json (e.g. build/tests/tokenizer/reference/r1 after ctest, or the npm
// package's models/ folder). Needs node and tests/js/node_modules (npm ci --prefix tests/js).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "coordinator/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

#ifndef R1_SOURCE_DIR
#error "R1_SOURCE_DIR must be defined"
#endif
#ifndef R1_NODE_EXECUTABLE
#define R1_NODE_EXECUTABLE "node"
#endif

namespace r1 {
namespace {

// Best-of-`reps` seconds to encode `text`, after one warm-up call (which fills the word cache, as
// HF's warm-up fills its own).
double TimeEncode(const Tokenizer& tok, const std::string& text, bool special, int reps,
                  size_t* tokens) {
  *tokens = tok.Encode(text, special).size();
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto ids = tok.Encode(text, special);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, s);
    *tokens = ids.size();
  }
  return best;
}

int Run(const std::string& model_dir, int repeats) {
  const std::string out = absl::StrCat("/tmp/bench_tokenizer_hf_", getpid(), ".json");
  const std::string cmd = absl::StrCat(
      "RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false UV_THREADPOOL_SIZE=1 ", R1_NODE_EXECUTABLE,
      " ", R1_SOURCE_DIR, "/bench/tokenizer/hf_bench.js '", model_dir, "' ", out, " ", repeats);
  if (std::system(cmd.c_str()) != 0) {
    std::fprintf(stderr, "error: the HF side failed: %s\n", cmd.c_str());
    return 1;
  }
  std::ifstream in(out);
  const nlohmann::json hf = nlohmann::json::parse(in);
  std::remove(out.c_str());

  auto tok = Tokenizer::Load(model_dir);
  if (!tok.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(tok.status().message()).c_str());
    return 1;
  }
  const std::string document = hf["document"];
  std::printf(
      "corpus: %zu bytes (tests/tokenizer/corpus.js as one document), best of %d, one thread\n",
      document.size(), repeats);
  std::printf("%-28s %10s %10s %10s %8s\n", "mode", "ours MB/s", "HF MB/s", "ours/HF", "tokens");
  struct Row {
    const char* name;
    const char* text_key;
    const char* hf_key;
    bool special;
  };
  for (const Row& row : {Row{"plain text (user input)", "document", "hf_plain", false},
                         Row{"control tokens parsed", "document", "hf_special", true},
                         Row{"plain, without the 4K run", "prose", "hf_prose", false}}) {
    const std::string text = hf[row.text_key];
    size_t tokens = 0;
    const double ours = TimeEncode(**tok, text, row.special, repeats, &tokens);
    const nlohmann::json& h = hf[row.hf_key];
    const double theirs = h["seconds"];
    const bool same = tokens == h["tokens"].get<size_t>();
    const double mb = text.size() / 1e6;
    std::printf("%-28s %10.1f %10.1f %9.2fx %8zu%s\n", row.name, mb / ours, mb / theirs,
                theirs / ours, tokens, same ? "" : "  (TOKEN COUNT DIFFERS FROM HF)");
  }

  std::printf(
      "\nlinearity (plain text; time ratio per size doubling: 2.0 = linear, 4.0 = quadratic)\n");
  std::printf("%-10s %9s %12s %8s %12s %8s\n", "input", "bytes", "ours ms", "ratio", "HF ms",
              "ratio");
  double prev_ours = 0, prev_hf = 0;
  std::string prev_kind;
  for (const nlohmann::json& row : hf["linearity"]) {
    const std::string kind = row["kind"], text = row["text"];
    size_t tokens = 0;
    const double ours = TimeEncode(**tok, text, false, std::max(3, repeats / 4), &tokens);
    const double theirs = row["hf_seconds"];
    const bool first = kind != prev_kind;
    std::printf("%-10s %9zu %12.3f %8s %12.3f %8s%s\n", kind.c_str(), text.size(), ours * 1e3,
                first ? "" : absl::StrCat(ours / prev_ours).substr(0, 5).c_str(), theirs * 1e3,
                first ? "" : absl::StrCat(theirs / prev_hf).substr(0, 5).c_str(),
                tokens == row["hf_tokens"].get<size_t>() ? "" : "  (TOKEN COUNT DIFFERS FROM HF)");
    prev_ours = ours;
    prev_hf = theirs;
    prev_kind = kind;
  }
  return 0;
}

}  // namespace
}  // namespace r1

int main(int argc, char** argv) {
  std::string model_dir;
  int repeats = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--model" && i + 1 < argc) {
      model_dir = argv[++i];
    } else if (a == "--repeats" && i + 1 < argc) {
      repeats = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: bench_tokenizer --model DIR [--repeats N]\n");
      return 2;
    }
  }
  if (model_dir.empty()) {
    std::fprintf(stderr, "usage: bench_tokenizer --model DIR [--repeats N]\n");
    return 2;
  }
  return r1::Run(model_dir, repeats);
}
