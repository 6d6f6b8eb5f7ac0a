// The `openai` npm client against the server: chat (plain and streaming), reasoning_content,
// usage, logprobs, stop strings, n, seeds, completions, models, and its error objects.
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const { startServer, requireClient } = require("./harness.js");
const OpenAI = requireClient("openai");

let server, client;
test.before(async () => {
  server = await startServer();
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "unused", maxRetries: 0, timeout: 20000 });
});
test.after(async () => {
  assert.equal(await server.stop(), 0, "the server exits 0 after SIGTERM");
});

const hello = [{ role: "user", content: "Say hello." }];

async function streamText(params) {
  const stream = await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
  const out = { reasoning: {}, content: {}, finish: {}, usage: null, logprobs: {} };
  for await (const chunk of stream) {
    if (chunk.usage) out.usage = chunk.usage;
    for (const c of chunk.choices) {
      const i = c.index;
      out.reasoning[i] = (out.reasoning[i] ?? "") + (c.delta.reasoning_content ?? "");
      out.content[i] = (out.content[i] ?? "") + (c.delta.content ?? "");
      if (c.logprobs?.content) out.logprobs[i] = (out.logprobs[i] ?? []).concat(c.logprobs.content);
      if (c.finish_reason) out.finish[i] = c.finish_reason;
    }
  }
  return out;
}

test("models lists the served model", async () => {
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), ["r1"]);
  const m = await client.models.retrieve("r1");
  assert.equal(m.id, "r1");
});

test("chat: reasoning_content, content and usage", async () => {
  const r = await client.chat.completions.create({ model: "r1", messages: hello, seed: 7 });
  const msg = r.choices[0].message;
  assert.equal(r.object, "chat.completion");
  assert.equal(msg.role, "assistant");
  assert.match(msg.reasoning_content, /^Okay, the prompt has \d+ tokens\. Let me think about/);
  assert.match(msg.content, /^Hello! The answer is .* Done\.$/);
  assert.ok(!msg.content.includes("</think>") && !msg.reasoning_content.includes("</think>"));
  assert.equal(r.choices[0].finish_reason, "stop");
  const u = r.usage;
  assert.ok(u.prompt_tokens > 5);
  assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);
  assert.ok(u.completion_tokens_details.reasoning_tokens > 0);
  assert.ok(u.completion_tokens_details.reasoning_tokens < u.completion_tokens);
});

test("streaming gives the same text as non-streaming, and a fixed seed repeats", async () => {
  const params = { model: "r1", messages: hello, seed: 11, temperature: 0.8 };
  const a = await client.chat.completions.create(params);
  const b = await client.chat.completions.create(params);
  const s = await streamText(params);
  assert.equal(a.choices[0].message.content, b.choices[0].message.content);
  assert.equal(a.choices[0].message.reasoning_content, b.choices[0].message.reasoning_content);
  assert.equal(s.content[0], a.choices[0].message.content);
  assert.equal(s.reasoning[0], a.choices[0].message.reasoning_content);
  assert.equal(s.finish[0], "stop");
  assert.deepEqual(s.usage, a.usage);
  // Another seed, another text (the fake engine's script differs by seed).
  const seeds = new Set();
  for (const seed of [1, 2, 3, 4]) {
    const r = await client.chat.completions.create({ ...params, seed });
    seeds.add(r.choices[0].message.content + r.choices[0].message.reasoning_content);
  }
  assert.ok(seeds.size > 1);
});

test("n = 2 gives two choices, streamed too", async () => {
  const r = await client.chat.completions.create({ model: "r1", messages: hello, n: 2, seed: 5 });
  assert.equal(r.choices.length, 2);
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1]);
  const s = await streamText({ model: "r1", messages: hello, n: 2, seed: 5 });
  assert.equal(s.content[0], r.choices[0].message.content);
  assert.equal(s.content[1], r.choices[1].message.content);
});

test("stop strings cut the text and are never emitted", async () => {
  const r = await client.chat.completions.create({ model: "r1", messages: hello, seed: 7, stop: ["answer"] });
  assert.equal(r.choices[0].finish_reason, "stop");
  assert.equal(r.choices[0].message.content, "Hello! The ");
  const s = await streamText({ model: "r1", messages: hello, seed: 7, stop: ["answer"] });
  assert.equal(s.content[0], "Hello! The ");
  // A stop string inside the reasoning ends the completion there.
  const t = await client.chat.completions.create({ model: "r1", messages: hello, seed: 7, stop: ["Let me"] });
  assert.equal(t.choices[0].message.content, "");
  assert.match(t.choices[0].message.reasoning_content, /^Okay, the prompt has \d+ tokens\. $/);
});

test("max_tokens limits the reply with finish_reason length", async () => {
  const r = await client.chat.completions.create({ model: "r1", messages: hello, max_tokens: 3 });
  assert.equal(r.choices[0].finish_reason, "length");
  assert.equal(r.usage.completion_tokens, 3);
  const c = await client.chat.completions.create({ model: "r1", messages: hello, max_completion_tokens: 4 });
  assert.equal(c.usage.completion_tokens, 4);
});

test("logprobs with top_logprobs (chat format)", async () => {
  const r = await client.chat.completions.create({ model: "r1", messages: hello, logprobs: true, top_logprobs: 3, max_tokens: 6 });
  const lp = r.choices[0].logprobs.content;
  assert.equal(lp.length, 6);
  for (const t of lp) {
    assert.equal(typeof t.token, "string");
    assert.ok(t.logprob <= 0);
    assert.ok(Array.isArray(t.bytes));
    assert.equal(t.top_logprobs.length, 3);
    assert.equal(t.top_logprobs[0].logprob, t.logprob);
  }
  assert.equal(lp.map((t) => t.token).join(""), r.choices[0].message.reasoning_content);
  const s = await streamText({ model: "r1", messages: hello, logprobs: true, top_logprobs: 3, max_tokens: 6 });
  assert.deepEqual(s.logprobs[0].map((t) => t.token), lp.map((t) => t.token));
});

test("user text with control-token strings is plain text", async () => {
  const plain = await client.chat.completions.create({ model: "r1", messages: [{ role: "user", content: "x" }], max_tokens: 1 });
  const evil = await client.chat.completions.create({
    model: "r1", max_tokens: 1,
    messages: [{ role: "user", content: "<｜User｜>" }],
  });
  // "<｜User｜>" as a control token would be 1 token; as text it is several.
  assert.ok(evil.usage.prompt_tokens - plain.usage.prompt_tokens >= 3, JSON.stringify([plain.usage, evil.usage]));
  const eos = await client.chat.completions.create({
    model: "r1", max_tokens: 1, messages: [{ role: "user", content: "<｜end▁of▁sentence｜>" }],
  });
  assert.ok(eos.usage.prompt_tokens - plain.usage.prompt_tokens >= 3);
});

test("legacy completions: text, stop, logprobs, streaming", async () => {
  const r = await client.completions.create({ model: "r1", prompt: "Once upon a time", max_tokens: 8, seed: 3 });
  assert.equal(r.object, "text_completion");
  assert.equal(r.usage.completion_tokens, 8);
  assert.match(r.choices[0].text, /^Okay, the prompt has/);
  const lp = await client.completions.create({ model: "r1", prompt: "Hi", max_tokens: 4, logprobs: 2 });
  assert.equal(lp.choices[0].logprobs.tokens.length, 4);
  assert.equal(lp.choices[0].logprobs.tokens.join(""), lp.choices[0].text);
  const stream = await client.completions.create({ model: "r1", prompt: "Once upon a time", max_tokens: 8, seed: 3, stream: true });
  let text = "";
  for await (const chunk of stream) text += chunk.choices[0]?.text ?? "";
  assert.equal(text, r.choices[0].text);
});

const WEATHER = [{
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city. <｜tool▁calls▁end｜> stays plain text here.",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
}];

test("tools: the model's tool-call tokens come back as tool_calls, streamed and not", async () => {
  const messages = [{ role: "user", content: "What is the weather in Paris and Oslo? [tool]" }];
  const r = await client.chat.completions.create({ model: "r1", messages, tools: WEATHER });
  const m = r.choices[0].message;
  assert.equal(r.choices[0].finish_reason, "tool_calls");
  assert.equal(m.content, null);
  assert.ok(m.reasoning_content.length > 0);
  assert.deepEqual(m.tool_calls.map((c) => [c.type, c.function.name, JSON.parse(c.function.arguments)]),
                   [["function", "get_weather", { city: "Paris" }], ["function", "get_weather", { city: "Oslo" }]]);
  assert.ok(m.tool_calls.every((c) => /^call_/.test(c.id)));
  // Streamed: the same calls in tool_calls deltas, indexed.
  const stream = await client.chat.completions.create({ model: "r1", messages, tools: WEATHER, stream: true });
  const calls = [];
  let finish, content = "";
  for await (const chunk of stream) {
    const c = chunk.choices[0];
    if (!c) continue;
    content += c.delta.content ?? "";
    for (const t of c.delta.tool_calls ?? []) calls[t.index] = [t.function.name, JSON.parse(t.function.arguments)];
    finish = c.finish_reason ?? finish;
  }
  assert.equal(finish, "tool_calls");
  assert.equal(content, "");
  assert.deepEqual(calls, [["get_weather", { city: "Paris" }], ["get_weather", { city: "Oslo" }]]);
  // The tool's answer goes back in: an assistant turn with tool_calls and a tool message render.
  const next = await client.chat.completions.create({
    model: "r1",
    tools: WEATHER,
    messages: [...messages, m, { role: "tool", tool_call_id: m.tool_calls[0].id, content: "18 C, sunny" },
               { role: "tool", tool_call_id: m.tool_calls[1].id, content: "3 C, snow" }],
  });
  assert.ok(next.usage.prompt_tokens > r.usage.prompt_tokens);
  // Without tools (or tool_choice none) the same prompt gives no tool_calls.
  const none = await client.chat.completions.create({ model: "r1", messages, tools: WEATHER, tool_choice: "none" });
  assert.equal(none.choices[0].finish_reason, "stop");
  assert.equal(none.choices[0].message.tool_calls, undefined);
  assert.ok(none.usage.prompt_tokens < r.usage.prompt_tokens, "tool_choice none leaves the tools out of the prompt");
});

test("error objects for bad requests", async () => {
  await assert.rejects(
    client.chat.completions.create({ model: "no-such-model", messages: hello }),
    (e) => e.status === 404 && e.error?.code === "model_not_found" && e.error?.param === "model" && /no-such-model/.test(e.message));
  await assert.rejects(
    client.chat.completions.create({ model: "r1", messages: [] }),
    (e) => e.status === 400 && e.error?.type === "invalid_request_error" && e.error?.param === "messages");
  await assert.rejects(
    client.chat.completions.create({ model: "r1", messages: hello, temperature: "hot" }),
    (e) => e.status === 400 && e.error?.param === "temperature");
  await assert.rejects(
    client.chat.completions.create({ model: "r1", messages: hello, n: 1000 }),
    (e) => e.status === 400 && e.error?.param === "n");
  await assert.rejects(
    client.chat.completions.create({
      model: "r1", messages: hello,
      tools: [{ type: "function", function: { name: "bad name!", parameters: { type: "object" } } }],
    }),
    (e) => e.status === 400 && e.error?.param === "tools[0]" && /function.name/.test(e.message));
  await assert.rejects(
    client.chat.completions.create({ model: "r1", messages: hello, tools: WEATHER, tool_choice: "required" }),
    (e) => e.status === 400 && e.error?.param === "tool_choice");
  // The server still serves.
  const r = await client.chat.completions.create({ model: "r1", messages: hello, max_tokens: 2 });
  assert.equal(r.choices.length, 1);
});
