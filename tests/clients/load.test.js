// 500 concurrent streaming clients on one server (2 io threads): every stream completes with the
// same text as its non-streamed twin; prints time to first token and throughput.
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const { startServer, postJson } = require("./harness.js");

const CLIENTS = Number(process.env.R1_LOAD_CLIENTS || 500);

test(`${CLIENTS} concurrent streaming clients`, { timeout: 240000 }, async () => {
  // With R1_TEST_SERVER_ARGS=serve this measures `r1 serve` on a real (tiny) model instead.
  const s = await startServer(process.env.R1_TEST_SERVER_ARGS ? [] : ["--token-delay-us", "1000"]);
  try {
    const model = (await (await fetch(`${s.url}/v1/models`)).json()).data[0].id;
    const body = (i) => ({ model, seed: i % 10, max_tokens: 32, messages: [{ role: "user", content: `Client ${i % 10}` }] });
    const expected = [];
    for (let i = 0; i < 10; ++i) expected.push((await postJson(`${s.url}/v1/chat/completions`, body(i))).json.choices[0].message.content);
    const t0 = performance.now();
    const durations = [];
    let tokens = 0;
    const one = async (i) => {
      const start = performance.now();
      const res = await fetch(`${s.url}/v1/chat/completions`, {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ ...body(i), stream: true }),
      });
      assert.equal(res.status, 200);
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let text = "";
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        text += decoder.decode(value, { stream: true });
      }
      let content = "";
      for (const e of text.split("\n\n")) {
        if (!e.startsWith("data: ") || e === "data: [DONE]") continue;
        content += JSON.parse(e.slice(6)).choices[0]?.delta?.content ?? "";
        tokens += 1;
      }
      durations.push(performance.now() - start);
      assert.equal(content, expected[i % 10]);
    };
    await Promise.all(Array.from({ length: CLIENTS }, (_, i) => one(i)));
    const seconds = (performance.now() - t0) / 1000;
    durations.sort((a, b) => a - b);
    const metrics = await (await fetch(`${s.url}/metrics`)).text();
    const ttftCount = metrics.match(/^r1_time_to_first_token_seconds_count (\d+)/m)[1];
    const ttftSum = metrics.match(/^r1_time_to_first_token_seconds_sum (\S+)/m)[1];
    console.log(`${CLIENTS} streams in ${seconds.toFixed(2)} s; ${tokens} chunks, ${(tokens / seconds).toFixed(0)} chunks/s; ` +
                `stream duration p50 ${durations[Math.floor(CLIENTS / 2)].toFixed(0)} ms, p99 ${durations[Math.floor(CLIENTS * 0.99)].toFixed(0)} ms; ` +
                `server TTFT mean ${(1000 * Number(ttftSum) / Number(ttftCount)).toFixed(1)} ms`);
    assert.equal((await fetch(`${s.url}/health`)).status, 200);
  } finally {
    assert.equal(await s.stop(), 0);
  }
});
