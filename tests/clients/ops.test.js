// Operations: health, readiness, metrics, API keys, client disconnect → cancel, graceful drain.
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const { startServer, requireClient, postJson } = require("./harness.js");
const OpenAI = requireClient("openai");

const hello = [{ role: "user", content: "Say hello." }];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function metric(url, name) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const m = text.match(new RegExp(`^${name} (\\S+)$`, "m"));
  return m ? Number(m[1]) : undefined;
}

test("health, ready and metrics", async () => {
  const s = await startServer();
  try {
    assert.equal((await fetch(`${s.url}/health`)).status, 200);
    const ready = await fetch(`${s.url}/ready`);
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), { status: "ready" });
    await postJson(`${s.url}/v1/chat/completions`, { model: "r1", messages: hello });
    await postJson(`${s.url}/v1/chat/completions`, { model: "nope", messages: hello });
    const text = await (await fetch(`${s.url}/metrics`)).text();
    assert.match(text, /^r1_http_requests_total\{endpoint="\/v1\/chat\/completions",status="200"\} 1$/m);
    assert.match(text, /^r1_http_requests_total\{endpoint="\/v1\/chat\/completions",status="404"\} 1$/m);
    assert.match(text, /^r1_time_to_first_token_seconds_count 1$/m);
    assert.match(text, /^r1_inter_token_latency_seconds_bucket\{le="\+Inf"\} \d+$/m);
    for (const g of ["r1_engine_queue_depth", "r1_engine_kv_blocks_used", "r1_engine_kv_blocks_total", "r1_engine_batch_size",
                     "r1_prompt_tokens_total", "r1_generated_tokens_total", "r1_ready"]) {
      assert.match(text, new RegExp(`^${g} \\d+`, "m"), g);
    }
    assert.ok((await metric(s.url, "r1_generated_tokens_total")) > 10);
  } finally {
    assert.equal(await s.stop(), 0);
  }
});

test("API key: required on /v1 and /api, /health stays open", async () => {
  const s = await startServer([], { R1_API_KEY: "sekret" });
  try {
    const none = await fetch(`${s.url}/v1/models`);
    assert.equal(none.status, 401);
    assert.equal((await none.json()).error.code, "invalid_api_key");
    const wrong = await fetch(`${s.url}/api/tags`, { headers: { authorization: "Bearer nope" } });
    assert.equal(wrong.status, 401);
    assert.equal(typeof (await wrong.json()).error, "string");
    assert.equal((await fetch(`${s.url}/health`)).status, 200);
    const good = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "sekret", maxRetries: 0 });
    assert.equal((await good.models.list()).data[0].id, "r1");
    const bad = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "sekret2", maxRetries: 0 });
    await assert.rejects(bad.models.list(), (e) => e.status === 401);
  } finally {
    assert.equal(await s.stop(), 0);
  }
});

test("a client that disconnects mid-stream cancels its request", async () => {
  const s = await startServer(["--token-delay-us", "5000"]);
  try {
    const ac = new AbortController();
    const res = await fetch(`${s.url}/v1/chat/completions`, {
      method: "POST", signal: ac.signal, headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "r1", stream: true, messages: [{ role: "user", content: "[long] go" }] }),
    });
    const reader = res.body.getReader();
    await reader.read();
    await reader.read();
    assert.equal(await metric(s.url, "r1_engine_running_sequences"), 1);
    ac.abort();
    let running = 1;
    for (let i = 0; i < 100 && running !== 0; ++i) {
      await sleep(20);
      running = await metric(s.url, "r1_engine_running_sequences");
    }
    assert.equal(running, 0, "the engine stopped generating");
    assert.equal(await metric(s.url, "r1_client_cancellations_total"), 1);
    assert.equal(await metric(s.url, "r1_http_active_requests"), 0);
  } finally {
    assert.equal(await s.stop(), 0);
  }
});

async function readSse(res) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
  }
  const events = text.split("\n\n").filter((e) => e.startsWith("data: ")).map((e) => e.slice(6));
  return events;
}

test("SIGTERM drains: running streams finish, new connections are refused, exit 0", async () => {
  const s = await startServer(["--token-delay-us", "20000", "--drain-timeout-ms", "20000"]);
  const res = await fetch(`${s.url}/v1/chat/completions`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "r1", stream: true, messages: hello }),
  });
  assert.equal(res.status, 200);
  const events = readSse(res);
  await sleep(100);
  s.proc.kill("SIGTERM");
  await sleep(100);
  await assert.rejects(fetch(`${s.url}/health`));  // the listening socket is closed
  const all = await events;
  assert.equal(all[all.length - 1], "[DONE]");
  const finish = all.slice(0, -1).map((e) => JSON.parse(e)).flatMap((c) => c.choices).map((c) => c.finish_reason).filter(Boolean);
  assert.deepEqual(finish, ["stop"]);
  assert.equal(await s.exited, 0);
});

test("SIGTERM past the drain deadline cancels what is left", async () => {
  const s = await startServer(["--token-delay-us", "20000", "--drain-timeout-ms", "300"]);
  const res = await fetch(`${s.url}/v1/chat/completions`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "r1", stream: true, messages: [{ role: "user", content: "[long] go" }] }),
  });
  const events = readSse(res);
  await sleep(100);
  const t0 = Date.now();
  s.proc.kill("SIGTERM");
  const all = await events;
  assert.ok(Date.now() - t0 < 3000);
  assert.equal(all[all.length - 1], "[DONE]");
  const last = JSON.parse(all[all.length - 2]);
  assert.equal(last.choices[0].finish_reason, "abort");
  assert.equal(await s.exited, 0);
});
