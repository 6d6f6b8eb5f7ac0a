#!/usr/bin/env node
// The Hugging Face side of bench_tokenizer: times @anush008/tokenizers (HF's Rust tokenizers via
// N-API) on the tokenizer test corpus and the linearity inputs, and writes them with the timings
// so the C++ side times itself on exactly the same strings.
// One encode in flight at a time; run with RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
// UV_THREADPOOL_SIZE=1 (bench_tokenizer sets them).
// Usage: node hf_bench.js MODEL_DIR OUT_JSON [REPEATS]
"use strict";
const fs = require("fs");
const path = require("path");
const { createRequire } = require("module");

const root = path.resolve(__dirname, "..", "..");
const jsDir = path.join(root, "tests", "js");
if (!fs.existsSync(path.join(jsDir, "node_modules"))) {
  console.error(`FAIL: ${jsDir}/node_modules is missing; run: npm ci --prefix tests/js`);
  process.exit(1);
}
const { Tokenizer } = createRequire(path.join(jsDir, "package.json"))("@anush008/tokenizers");
const { corpus } = require(path.join(root, "tests", "tokenizer", "corpus.js"));

const [modelDir, outPath, repeatsArg] = process.argv.slice(2);
if (!modelDir || !outPath) {
  console.error("usage: node hf_bench.js MODEL_DIR OUT_JSON [REPEATS]");
  process.exit(2);
}
const repeats = Number(repeatsArg || 20);

// Seeded lowercase letters: one long word with varied merges and no spaces.
function noSpaces(bytes) {
  let s = 12345, t = "";
  while (t.length < bytes) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    t += String.fromCharCode(97 + ((s >>> 16) % 26));
  }
  return t;
}

async function timeEncode(tok, text, reps) {
  const opts = { addSpecialTokens: false };
  let ids = (await tok.encode(text, null, opts)).getIds();  // warm-up (fills HF's word cache)
  let best = Infinity;
  for (let r = 0; r < reps; ++r) {
    const t0 = process.hrtime.bigint();
    ids = (await tok.encode(text, null, opts)).getIds();
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return { seconds: best, tokens: ids.length };
}

async function main() {
  const json = JSON.parse(fs.readFileSync(path.join(modelDir, "tokenizer.json"), "utf8"));
  const full = Tokenizer.fromString(JSON.stringify(json));
  const plain = Tokenizer.fromString(JSON.stringify({ ...json, added_tokens: [] }));
  // The corpus as one document (one call: no per-call N-API overhead in HF's figure).
  const document = corpus().map((e) => e.text).join("\n");
  const prose = corpus().filter((e) => e.name !== "one_letter_4k").map((e) => e.text).join("\n");
  const result = {
    document,
    prose,
    hf_plain: await timeEncode(plain, document, repeats),
    hf_special: await timeEncode(full, document, repeats),
    hf_prose: await timeEncode(plain, prose, repeats),
    linearity: [],
  };
  for (const kind of ["one_char", "no_spaces"]) {
    for (const kb of [12.5, 25, 50, 100]) {
      const bytes = Math.round(kb * 1024);
      const text = kind === "one_char" ? "a".repeat(bytes) : noSpaces(bytes);
      const t = await timeEncode(plain, text, Math.max(3, Math.floor(repeats / 4)));
      result.linearity.push({ kind, bytes, text, hf_seconds: t.seconds, hf_tokens: t.tokens });
    }
  }
  fs.writeFileSync(outPath, JSON.stringify(result));
}

main().catch((e) => {
  console.error(`FAIL: ${e.stack || e}`);
  process.exit(1);
});
