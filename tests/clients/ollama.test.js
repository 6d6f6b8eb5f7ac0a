// The `ollama` npm client against the server: chat with and without think, streaming and not,
// generate, list, show, ps, version, and its errors.
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const { startServer, requireClient } = require("./harness.js");
const { Ollama } = requireClient("ollama");

let server, ollama;
test.before(async () => {
  server = await startServer();
  ollama = new Ollama({ host: server.url });
});
test.after(async () => {
  assert.equal(await server.stop(), 0);
});

const hello = [{ role: "user", content: "Say hello." }];

test("list, show, ps, version", async () => {
  const list = await ollama.list();
  assert.deepEqual(list.models.map((m) => m.name), ["r1"]);
  assert.equal(list.models[0].details.family, "deepseek2");
  const show = await ollama.show({ model: "r1" });
  assert.ok(show.capabilities.includes("thinking"));
  assert.match(show.template, /<｜Assistant｜>/);
  assert.equal(show.model_info["deepseek2.context_length"], 4096);
  const ps = await ollama.ps();
  assert.equal(ps.models[0].name, "r1");
  const v = await ollama.version();
  assert.match(v.version, /^\d+\.\d+\.\d+$/);
  const root = await fetch(`${server.url}/`);
  assert.equal(await root.text(), "Ollama is running");
});

test("chat with think: reasoning in message.thinking, answer in content", async () => {
  const r = await ollama.chat({ model: "r1", messages: hello, think: true, stream: false, options: { seed: 7 } });
  assert.match(r.message.thinking, /^Okay, the prompt has \d+ tokens/);
  assert.match(r.message.content, /^Hello! The answer is/);
  assert.equal(r.done, true);
  assert.equal(r.done_reason, "stop");
  for (const k of ["total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration"]) {
    assert.equal(typeof r[k], "number", k);
  }
  assert.ok(r.prompt_eval_count > 5 && r.eval_count > 10);
  assert.ok(r.total_duration >= r.eval_duration);
});

test("streamed chat equals the non-streamed one; a fixed seed repeats", async () => {
  const params = { model: "r1", messages: hello, think: true, options: { seed: 9, temperature: 0.7 } };
  const whole = await ollama.chat({ ...params, stream: false });
  const again = await ollama.chat({ ...params, stream: false });
  assert.equal(again.message.content, whole.message.content);
  let content = "", thinking = "", last;
  for await (const part of await ollama.chat({ ...params, stream: true })) {
    content += part.message.content;
    thinking += part.message.thinking ?? "";
    last = part;
  }
  assert.equal(content, whole.message.content);
  assert.equal(thinking, whole.message.thinking);
  assert.equal(last.done, true);
  assert.equal(last.eval_count, whole.eval_count);
});

test("think: false closes the reasoning block in the prompt", async () => {
  const on = await ollama.chat({ model: "r1", messages: hello, think: true, stream: false });
  const off = await ollama.chat({ model: "r1", messages: hello, think: false, stream: false });
  // The prompt gains "</think>\n\n" and nothing is reported as thinking.
  assert.ok(off.prompt_eval_count > on.prompt_eval_count);
  assert.equal(off.message.thinking, undefined);
});

test("options: num_predict, stop, seed", async () => {
  const r = await ollama.chat({ model: "r1", messages: hello, stream: false, options: { num_predict: 4 } });
  assert.equal(r.eval_count, 4);
  assert.equal(r.done_reason, "length");
  const s = await ollama.chat({ model: "r1", messages: hello, stream: false, options: { seed: 7, stop: ["answer"] } });
  assert.equal(s.message.content, "Hello! The ");
  const all = await ollama.chat({
    model: "r1", messages: hello, stream: false,
    options: { num_ctx: 2048, temperature: 0.5, top_p: 0.9, top_k: 40, min_p: 0.05, repeat_penalty: 1.1, presence_penalty: 0.1, frequency_penalty: 0.1, seed: 1 },
  });
  assert.equal(all.done, true);
});

test("generate: response and thinking, streamed and not", async () => {
  const r = await ollama.generate({ model: "r1", prompt: "Why is the sky blue?", think: true, stream: false, options: { seed: 4 } });
  assert.match(r.thinking, /^Okay/);
  assert.match(r.response, /^Hello!/);
  let response = "";
  for await (const part of await ollama.generate({ model: "r1", prompt: "Why is the sky blue?", think: true, stream: true, options: { seed: 4 } })) {
    response += part.response;
  }
  assert.equal(response, r.response);
  const raw = await ollama.generate({ model: "r1", prompt: "raw text", raw: true, stream: false, options: { num_predict: 3 } });
  assert.equal(raw.eval_count, 3);
});

test("an empty chat loads the model", async () => {
  const r = await ollama.chat({ model: "r1", messages: [], stream: false });
  assert.equal(r.done_reason, "load");
});

test("chat with tools: tool_calls with arguments as objects", async () => {
  const tools = [{ type: "function", function: { name: "get_weather", description: "Weather in a city",
                                                   parameters: { type: "object", properties: { city: { type: "string" } } } } }];
  const messages = [{ role: "user", content: "Weather in Paris and Oslo? [tool]" }];
  const r = await ollama.chat({ model: "r1", messages, tools });
  assert.deepEqual(r.message.tool_calls, [
    { function: { name: "get_weather", arguments: { city: "Paris" } } },
    { function: { name: "get_weather", arguments: { city: "Oslo" } } },
  ]);
  assert.equal(r.message.content, "");
  const calls = [];
  for await (const part of await ollama.chat({ model: "r1", messages, tools, stream: true })) {
    calls.push(...(part.message.tool_calls ?? []));
  }
  assert.deepEqual(calls, r.message.tool_calls);
});

test("errors: unknown model, bad options", async () => {
  await assert.rejects(ollama.chat({ model: "nope", messages: hello, stream: false }),
    (e) => e.status_code === 404 && /nope/.test(e.error));
  await assert.rejects(ollama.show({ model: "nope" }), (e) => e.status_code === 404);
  await assert.rejects(ollama.chat({ model: "r1", messages: hello, stream: false, options: { temperature: "x" } }),
    (e) => e.status_code === 400 && /options.temperature/.test(e.error));
  const ok = await ollama.chat({ model: "r1", messages: hello, stream: false, options: { num_predict: 2 } });
  assert.equal(ok.done, true);
});
