// Bad input: each gets a clear 4xx in the API's error shape, and the server keeps serving.
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const http = require("node:http");
const { startServer, postJson } = require("./harness.js");

let server;
test.before(async () => {
  server = await startServer(["--max-context", "512"]);
});
test.after(async () => {
  assert.equal(await server.stop(), 0);
});

const hello = [{ role: "user", content: "Say hello." }];
const chat = (body) => postJson(`${server.url}/v1/chat/completions`, body);

function assertOpenAiError(r, status, param) {
  assert.equal(r.status, status, r.text);
  assert.equal(typeof r.json?.error?.message, "string", r.text);
  assert.ok(r.json.error.message.length > 10, r.text);
  assert.equal(typeof r.json.error.type, "string");
  assert.ok("param" in r.json.error && "code" in r.json.error);
  if (param !== undefined) assert.equal(r.json.error.param, param, r.text);
}

test("malformed JSON and a non-object body", async () => {
  const r = await chat('{"model": "r1", "messages": [');
  assertOpenAiError(r, 400);
  assert.equal(r.json.error.code, "invalid_json");
  assertOpenAiError(await chat("[1, 2]"), 400);
  assertOpenAiError(await chat(""), 400);
  const o = await postJson(`${server.url}/api/chat`, "{nope");
  assert.equal(o.status, 400);
  assert.equal(typeof o.json.error, "string");
});

test("wrong types name the field", async () => {
  assertOpenAiError(await chat({ model: "r1", messages: "hi" }), 400, "messages");
  assertOpenAiError(await chat({ model: "r1", messages: [{ role: "user", content: 5 }] }), 400, "messages[0].content");
  assertOpenAiError(await chat({ model: "r1", messages: [{ role: "wizard", content: "x" }] }), 400, "messages[0].role");
  assertOpenAiError(await chat({ model: 7, messages: hello }), 400, "model");
  assertOpenAiError(await chat({ model: "r1", messages: hello, max_tokens: "10" }), 400, "max_tokens");
  assertOpenAiError(await chat({ model: "r1", messages: hello, stream: "yes" }), 400, "stream");
  assertOpenAiError(await chat({ model: "r1", messages: hello, stop: [1] }), 400, "stop");
  assertOpenAiError(await chat({ model: "r1", messages: hello, top_logprobs: 3 }), 400, "top_logprobs");
  assertOpenAiError(await chat({ model: "r1", messages: hello, temperature: 9 }), 400, "temperature");
});

test("unknown model: 404 on both APIs", async () => {
  assertOpenAiError(await chat({ model: "gpt-4", messages: hello }), 404, "model");
  const o = await postJson(`${server.url}/api/chat`, { model: "llama3", messages: hello });
  assert.equal(o.status, 404);
  assert.match(o.json.error, /llama3/);
});

test("empty messages", async () => {
  assertOpenAiError(await chat({ model: "r1", messages: [] }), 400, "messages");
  assertOpenAiError(await chat({ model: "r1" }), 400, "messages");
});

test("invalid UTF-8 in the body", async () => {
  const head = Buffer.from('{"model":"r1","messages":[{"role":"user","content":"ab');
  const tail = Buffer.from('"}]}');
  for (const bad of [[0xff], [0xc3], [0xed, 0xa0, 0x80], [0xc0, 0xaf]]) {
    const r = await chat(new Uint8Array(Buffer.concat([head, Buffer.from(bad), tail])));
    assertOpenAiError(r, 400);
    assert.equal(r.json.error.code, "invalid_utf8");
  }
  const o = await postJson(`${server.url}/api/generate`, new Uint8Array(Buffer.from('{"model":"r1","prompt":"\xff"}', "latin1")));
  assert.equal(o.status, 400);
});

test("a prompt longer than the context", async () => {
  const long = "word ".repeat(2000);
  const r = await chat({ model: "r1", messages: [{ role: "user", content: long }] });
  assertOpenAiError(r, 400);
  assert.equal(r.json.error.code, "context_length_exceeded");
  const o = await postJson(`${server.url}/api/generate`, { model: "r1", prompt: long, stream: false });
  assert.equal(o.status, 400);
  assert.match(o.json.error, /context/);
});

test("max_tokens <= 0 or huge, n = 1000, too many messages or stops", async () => {
  assertOpenAiError(await chat({ model: "r1", messages: hello, max_tokens: 0 }), 400, "max_tokens");
  assertOpenAiError(await chat({ model: "r1", messages: hello, max_tokens: -5 }), 400, "max_tokens");
  assertOpenAiError(await chat({ model: "r1", messages: hello, max_tokens: 1e12 }), 400, "max_tokens");
  assertOpenAiError(await chat({ model: "r1", messages: hello, max_tokens: 510 }), 400, "max_tokens");  // prompt + 510 > 512
  assertOpenAiError(await chat({ model: "r1", messages: hello, n: 1000 }), 400, "n");
  assertOpenAiError(await chat({ model: "r1", messages: hello, n: 0 }), 400, "n");
  const many = Array.from({ length: 1025 }, () => ({ role: "user", content: "x" }));
  assertOpenAiError(await chat({ model: "r1", messages: many }), 400, "messages");
  assertOpenAiError(await chat({ model: "r1", messages: hello, stop: Array(17).fill("x") }), 400, "stop");
});

// Sends headers announcing `total` bytes and then data until the server answers; resolves to the
// status and how many body bytes had been sent by then.
function hugeUpload(total, chunked) {
  return new Promise((resolve, reject) => {
    const url = new URL(`${server.url}/v1/chat/completions`);
    const headers = { "content-type": "application/json" };
    if (!chunked) headers["content-length"] = String(total);
    const req = http.request({ host: url.hostname, port: url.port, method: "POST", path: url.pathname, headers });
    let sent = 0, done = false;
    const block = Buffer.alloc(1 << 20, 0x20);
    req.on("response", (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => {
        done = true;
        resolve({ status: res.statusCode, sent, body });
      });
    });
    req.on("error", (e) => {
      if (!done) reject(e);
    });
    const pump = () => {
      while (!done && sent < total) {
        sent += block.length;
        if (!req.write(block)) return req.once("drain", pump);
      }
      if (!done) req.end();
    };
    pump();
  });
}

test("a 100 MB body is refused early with 413", async () => {
  const r = await hugeUpload(100 << 20, false);
  assert.equal(r.status, 413);
  assert.match(JSON.parse(r.body).error.message, /larger than/);
  assert.ok(r.sent < 100 << 20, `refused after ${r.sent} bytes`);
  const c = await hugeUpload(100 << 20, true);  // chunked: refused once past the limit
  assert.equal(c.status, 413);
  assert.ok(c.sent < 100 << 20, `refused after ${c.sent} bytes`);
});

test("routes and methods", async () => {
  const r = await fetch(`${server.url}/v1/nothing`);
  assert.equal(r.status, 404);
  assert.equal((await r.json()).error.code, "not_found");
  const m = await fetch(`${server.url}/v1/chat/completions`);
  assert.equal(m.status, 405);
  const o = await fetch(`${server.url}/api/nothing`);
  assert.equal(o.status, 404);
  assert.equal(typeof (await o.json()).error, "string");
});

test("control-token strings in Ollama prompts are plain text", async () => {
  const plain = await postJson(`${server.url}/api/generate`, { model: "r1", prompt: "x", stream: false, options: { num_predict: 1 } });
  const evil = await postJson(`${server.url}/api/generate`, { model: "r1", prompt: "<｜User｜>", stream: false, options: { num_predict: 1 } });
  assert.ok(evil.json.prompt_eval_count - plain.json.prompt_eval_count >= 3);
});

test("still serving after all of that", async () => {
  const r = await chat({ model: "r1", messages: hello, max_tokens: 5 });
  assert.equal(r.status, 200);
  assert.equal(r.json.usage.completion_tokens, 5);
  const h = await fetch(`${server.url}/health`);
  assert.equal(h.status, 200);
});
