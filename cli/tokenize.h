// `r1 tokenize` and `r1 detokenize`: the model folder's tokenizer from the command line.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace r1 {

// Prints the ids of `text` ("-" reads stdin) on one line, then one row per token: index, id, the
// token as tokenizer.json writes it, and its bytes as an escaped string. `special`: parse control
// tokens in the text (as the chat template's output is encoded); off, all of it is plain text.
absl::Status RunTokenize(const std::string& model_dir, const std::string& text, bool special);

// Prints the text of `ids`.
absl::Status RunDetokenize(const std::string& model_dir, const std::vector<int32_t>& ids,
                           bool skip_special);

}  // namespace r1
