// The internal gRPC API (proto/r1serve.proto) of `r1 serve --grpc-listen`, driven by
// @grpc/grpc-js + @grpc/proto-loader, on the tiny random model `r1 make-tiny` writes (the same
// fixture as e2e.test.js). The model's text is random, so these check the plumbing against the
// HTTP routes: the same text for the same seed, reasoning split, tokenization, cancellation and
// deadlines freeing the engine's blocks, status codes, the API key.
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const path = require("path");
const { startServer, requireClient, postJson } = require("./harness.js");
const grpc = requireClient("@grpc/grpc-js");
const protoLoader = requireClient("@grpc/proto-loader");

const KEY = "grpc-test-key";
const auth = { authorization: `Bearer ${KEY}` };
const definition = protoLoader.loadSync(path.resolve(__dirname, "..", "..", "proto", "r1serve.proto"), {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});
const R1Serve = grpc.loadPackageDefinition(definition).r1serve.v1.R1Serve;

let server, client, grpcAddress;

function metadata(headers = auth) {
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(headers)) md.set(k, v);
  return md;
}

function unary(method, request, headers = auth, options = {}) {
  return new Promise((resolve, reject) =>
    client[method](request, metadata(headers), options, (err, res) => (err ? reject(err) : resolve(res))));
}

// Collects a server stream: resolves to its chunks, rejects with the gRPC error.
function collect(method, request, headers = auth, options = {}) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    const call = client[method](request, metadata(headers), options);
    call.on("data", (c) => chunks.push(c));
    call.on("error", reject);
    call.on("end", () => resolve(chunks));
  });
}

const join = (chunks, field) => chunks.map((c) => c[field]).join("");
const http = (route, body) => postJson(`${server.url}${route}`, body, { authorization: `Bearer ${KEY}` });

async function waitIdle() {
  let h;
  for (let i = 0; i < 200; i++) {
    h = await unary("Health", {}, {});
    if (h.running === 0 && h.waiting === 0 && h.kv_blocks_used === 0 && h.active_streams === 0) return h;
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.fail(`the engine did not become idle: ${JSON.stringify(h)}`);
}

test.before(async () => {
  server = await startServer(
    ["--max-context", "1024", "--served-model-name", "tiny-r1", "--grpc-listen", "127.0.0.1:0", "--api-key", KEY]);
  for (let i = 0; i < 200 && !grpcAddress; i++) {
    const m = server.output().match(/gRPC API \(r1serve\.v1\) listening on (\S+)/);
    if (m) grpcAddress = m[1];
    else await new Promise((r) => setTimeout(r, 25));
  }
  assert.ok(grpcAddress, `no gRPC address in the output:\n${server.output()}`);
  client = new R1Serve(grpcAddress, grpc.credentials.createInsecure());
});
test.after(async () => {
  client?.close();
  assert.equal(await server.stop(), 0);
});

test("Health and ListModels", async () => {
  const h = await unary("Health", {}, {});  // open without the key
  assert.equal(h.status, "SERVING_STATUS_READY");
  assert.equal(h.reason, "");
  assert.ok(h.kv_blocks_total > 0);
  const models = await unary("ListModels", {});
  assert.deepEqual(models.models.map((m) => m.id), ["tiny-r1"]);
  assert.equal(models.models[0].max_context, 1024);
  assert.equal(models.models[0].owned_by, "r1serve");
});

test("Generate streams the same text as /v1/completions (seeded and greedy)", async () => {
  const prompt = "Once upon a time";
  for (const sampling of [{ seed: 7, temperature: 0.8 }, { temperature: 0 }]) {
    const chunks = await collect("Generate", { text: prompt, sampling, max_tokens: 24, ignore_eos: true });
    assert.ok(chunks.length >= 2, `streamed in ${chunks.length} chunks`);
    const last = chunks[chunks.length - 1];
    assert.equal(last.finish_reason, "FINISH_REASON_LENGTH");
    assert.ok(chunks.slice(0, -1).every((c) => c.finish_reason === "FINISH_REASON_UNSPECIFIED" && c.usage === null));
    assert.equal(last.usage.completion_tokens, 24);
    assert.equal(chunks.flatMap((c) => c.token_ids).length, 24);
    const r = await http("/v1/completions", { model: "tiny-r1", prompt, ...sampling, max_tokens: 24, ignore_eos: true });
    assert.equal(r.status, 200, r.text);
    assert.equal(join(chunks, "text"), r.json.choices[0].text);
    assert.equal(last.usage.prompt_tokens, r.json.usage.prompt_tokens);

    // The same prompt as token ids (from Tokenize, BOS included) gives the same tokens.
    const ids = (await unary("Tokenize", { text: prompt, add_special: true })).ids;
    const byIds = await collect("Generate", { token_ids: { ids }, sampling, max_tokens: 24, ignore_eos: true });
    assert.deepEqual(byIds.flatMap((c) => c.token_ids), chunks.flatMap((c) => c.token_ids));
    assert.equal(join(byIds, "text"), join(chunks, "text"));
  }
});

test("Generate with stop strings matches /v1/completions", async () => {
  const base = await collect("Generate", { text: "Hello", sampling: { temperature: 0 }, max_tokens: 32, ignore_eos: true });
  const text = join(base, "text");
  const stop = text.trim().slice(4, 7) || "e";
  const chunks = await collect("Generate", { text: "Hello", sampling: { temperature: 0 }, max_tokens: 32, ignore_eos: true, stop: [stop] });
  const r = await http("/v1/completions", { model: "tiny-r1", prompt: "Hello", temperature: 0, max_tokens: 32, ignore_eos: true, stop: [stop] });
  assert.equal(join(chunks, "text"), r.json.choices[0].text);
  assert.equal(chunks[chunks.length - 1].finish_reason, r.json.choices[0].finish_reason === "stop" ? "FINISH_REASON_STOP" : "FINISH_REASON_LENGTH");
  if (text.includes(stop)) assert.ok(!join(chunks, "text").includes(stop));
});

test("Chat returns reasoning and content separately, as /v1/chat/completions and /api/chat do", async () => {
  const messages = [{ role: "user", content: "Say hello." }];
  const chunks = await collect("Chat", { messages, sampling: { seed: 42 }, max_tokens: 32 });
  const last = chunks[chunks.length - 1];
  const reasoning = join(chunks, "reasoning_delta"), content = join(chunks, "content_delta");
  assert.ok(reasoning.length > 0);
  assert.ok(last.usage.reasoning_tokens > 0);
  const r = await http("/v1/chat/completions", { model: "tiny-r1", messages, seed: 42, max_tokens: 32 });
  assert.equal(r.status, 200, r.text);
  const m = r.json.choices[0].message;
  assert.equal(reasoning, m.reasoning_content ?? "");
  assert.equal(content, m.content);
  assert.equal(last.usage.prompt_tokens, r.json.usage.prompt_tokens);
  assert.equal(last.usage.completion_tokens, r.json.usage.completion_tokens);
  assert.equal(last.usage.reasoning_tokens, r.json.usage.completion_tokens_details.reasoning_tokens);

  // think: false closes the reasoning block in the prompt, as Ollama's think: false.
  const quick = await collect("Chat", { messages, think: false, sampling: { seed: 5 }, max_tokens: 12 });
  const o = await http("/api/chat", { model: "tiny-r1", messages, think: false, stream: false, options: { seed: 5, num_predict: 12 } });
  assert.equal(o.status, 200, o.text);
  assert.equal(join(quick, "reasoning_delta"), o.json.message.thinking ?? "");
  assert.equal(join(quick, "content_delta"), o.json.message.content);
  assert.equal(quick[quick.length - 1].usage.prompt_tokens, o.json.prompt_eval_count);
});

test("Tokenize equals the HTTP path's tokenization; '<｜User｜>' is plain text", async () => {
  const text = "<｜User｜>hello";
  const plain = await unary("Tokenize", { text });
  assert.ok(plain.ids.length >= 3);
  assert.ok(!plain.pieces.includes("<｜User｜>"), JSON.stringify(plain.pieces));
  assert.equal(Buffer.concat(plain.piece_bytes).toString("utf8"), text);
  const withBos = await unary("Tokenize", { text, add_special: true });
  assert.deepEqual(withBos.ids.slice(1), plain.ids);
  assert.equal(withBos.pieces[0], "<｜begin▁of▁sentence｜>");
  // /v1/completions tokenizes the same text into as many prompt tokens.
  const r = await http("/v1/completions", { model: "tiny-r1", prompt: text, max_tokens: 1 });
  assert.equal(r.json.usage.prompt_tokens, withBos.ids.length);
  // A conversation: the ids Chat submits, as many as /v1/chat/completions counts.
  const messages = [{ role: "system", content: "Be brief." }, { role: "user", content: "<｜User｜>" }];
  const chat = await unary("Tokenize", { messages });
  const c = await http("/v1/chat/completions", { model: "tiny-r1", messages, max_tokens: 1 });
  assert.equal(chat.ids.length, c.json.usage.prompt_tokens);
  assert.equal(chat.pieces.filter((p) => p === "<｜User｜>").length, 1);  // the template's own only
});

test("a client cancel mid-stream cancels the engine request and frees its blocks", async () => {
  await waitIdle();
  const call = client.Generate({ text: "Tell a long story", max_tokens: 1000, ignore_eos: true }, metadata());
  let during;
  const result = await new Promise((resolve) => {
    let n = 0;
    call.on("data", async () => {
      if (++n !== 3) return;
      during = await unary("Health", {}, {});
      call.cancel();
    });
    call.on("error", (e) => resolve(e));
    call.on("end", () => resolve(null));
  });
  assert.ok(result, "the stream ran to its end instead of being cancelled");
  assert.equal(result.code, grpc.status.CANCELLED);
  assert.ok(during.running >= 1 && during.kv_blocks_used > 0, JSON.stringify(during));
  const after = await waitIdle();
  assert.equal(after.kv_blocks_used, 0);
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  assert.match(metrics, /r1_engine_kv_blocks_used 0\b/);
});

test("a short deadline gives DEADLINE_EXCEEDED and the server keeps serving", async () => {
  await waitIdle();
  const deadline = Date.now() + 150;
  await assert.rejects(
    collect("Generate", { text: "Tell a long story", max_tokens: 1000, ignore_eos: true }, auth, { deadline }),
    (e) => e.code === grpc.status.DEADLINE_EXCEEDED);
  await waitIdle();
  const chunks = await collect("Generate", { text: "Hi", max_tokens: 4, ignore_eos: true });
  assert.equal(chunks[chunks.length - 1].usage.completion_tokens, 4);
});

test("bad input gives INVALID_ARGUMENT naming the field", async () => {
  const cases = [
    ["Generate", {}, /^prompt:/],
    ["Generate", { text: "" }, /^text:/],
    ["Generate", { text: "x", sampling: { temperature: 5 } }, /^sampling\.temperature:/],
    ["Generate", { text: "x", sampling: { top_p: 0 } }, /^sampling\.top_p:/],
    ["Generate", { text: "x", max_tokens: 5000 }, /^max_tokens:/],
    ["Generate", { text: "x", max_tokens: -1 }, /^max_tokens:/],
    ["Generate", { token_ids: { ids: [1, -4] } }, /^token_ids\.ids\[1\]:/],
    ["Generate", { token_ids: { ids: [1e9] } }, /^token_ids\.ids\[0\]:/],
    ["Generate", { text: "x", stop: Array(17).fill("a") }, /^stop:/],
    ["Generate", { text: "x", stop: ["a", ""] }, /^stop\[1\]:/],
    ["Generate", { text: "x", stop_token_ids: [-1] }, /^stop_token_ids\[0\]:/],
    ["Generate", { text: "word ".repeat(3000) }, /^text:.*context/],
    ["Chat", { messages: [] }, /^messages:/],
    ["Chat", { messages: [{ role: "wizard", content: "hi" }] }, /^messages\[0\]\.role:/],
    ["Chat", { messages: [{ role: "user", content: "word ".repeat(3000) }] }, /^messages:.*context/],
    ["Chat", { messages: [{ role: "user", content: "hi" }], sampling: { min_p: 2 } }, /^sampling\.min_p:/],
  ];
  for (const [method, request, re] of cases) {
    await assert.rejects(collect(method, request), (e) => {
      assert.equal(e.code, grpc.status.INVALID_ARGUMENT, `${JSON.stringify(request).slice(0, 80)}: ${e.details}`);
      assert.match(e.details, re);
      return true;
    });
  }
  await assert.rejects(unary("Tokenize", { text: "x", messages: [{ role: "user", content: "y" }] }),
    (e) => e.code === grpc.status.INVALID_ARGUMENT && /^text:/.test(e.details));
  await assert.rejects(collect("Generate", { text: "x", model: "other" }),
    (e) => e.code === grpc.status.NOT_FOUND && /^model:/.test(e.details));
  // Still serving.
  assert.equal((await unary("Health", {}, {})).status, "SERVING_STATUS_READY");
});

test("a missing or wrong API key gives UNAUTHENTICATED", async () => {
  for (const headers of [{}, { authorization: "Bearer nope" }, { authorization: KEY }]) {
    await assert.rejects(collect("Generate", { text: "x", max_tokens: 1 }, headers),
      (e) => e.code === grpc.status.UNAUTHENTICATED);
    await assert.rejects(collect("Chat", { messages: [{ role: "user", content: "x" }] }, headers),
      (e) => e.code === grpc.status.UNAUTHENTICATED);
    await assert.rejects(unary("Tokenize", { text: "x" }, headers), (e) => e.code === grpc.status.UNAUTHENTICATED);
    await assert.rejects(unary("ListModels", {}, headers), (e) => e.code === grpc.status.UNAUTHENTICATED);
  }
  assert.equal((await unary("Health", {}, {})).status, "SERVING_STATUS_READY");
});

test("64 concurrent streams all finish", async () => {
  const runs = await Promise.all(Array.from({ length: 64 }, (_, i) =>
    collect("Generate", { text: `Story ${i}`, sampling: { seed: i }, max_tokens: 8, ignore_eos: true })));
  for (const chunks of runs) assert.equal(chunks[chunks.length - 1].usage.completion_tokens, 8);
  await waitIdle();
});
