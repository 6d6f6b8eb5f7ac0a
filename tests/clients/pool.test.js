// The public APIs served by r1-coordinator --http-listen over a group of two r1-worker processes
// (the registration path, ranks from LWS_WORKER_INDEX as in Kubernetes), on the tiny model, driven
// by the openai npm client and compared with `r1 serve` (one process) on the same model: the same
// text and token logprobs for greedy and seeded requests (tokens chosen on rank 0, or from the
// logits where penalties need the history), streamed or not, alone or together. Then
// a worker is killed mid-stream: the stream ends with an error and no wrong token, /ready says 503
// while the group is short, and when the worker comes back the group serves the same text again
// with every KV block returned.
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const { startServer, requireClient, postJson } = require("./harness.js");
const { sleep, freePort, launch } = require("../deploy/procs.js");
const OpenAI = requireClient("openai");

const MODEL = process.env.R1_TEST_MODEL;
const COORDINATOR = process.env.R1_TEST_COORDINATOR;
const WORKER = process.env.R1_TEST_WORKER;

let coordinator, reference, url, coordinatorAddress;
const workers = [];

function startWorker(rank) {
  workers[rank] = launch(
    WORKER,
    ["--coordinator", coordinatorAddress, "--model", MODEL, "--rank-from-env", "--world-size", "2",
     "--heartbeat-interval", "0.2"],
    { env: { ...process.env, LWS_WORKER_INDEX: String(rank), OMP_NUM_THREADS: "1" } });
}

async function waitReady(want, ms) {
  const until = Date.now() + ms;
  let status = 0;
  while (Date.now() < until) {
    status = (await fetch(`${url}/ready`)).status;
    if (status === want) return Date.now();
    await sleep(50);
  }
  assert.fail(`/ready stayed ${status}, wanted ${want}:\n${coordinator.output().slice(-3000)}`);
}

async function metric(name) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const m = text.match(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m"));
  return m ? Number(m[1]) : NaN;
}

async function waitIdle() {
  for (let i = 0; i < 200; i++) {
    if ((await metric("r1_engine_kv_blocks_used")) === 0 && (await metric("r1_engine_running_sequences")) === 0) return;
    await sleep(25);
  }
  assert.fail("KV blocks were not all returned");
}

test.before(async () => {
  assert.ok(COORDINATOR && WORKER && MODEL, "R1_TEST_COORDINATOR, R1_TEST_WORKER and R1_TEST_MODEL must be set");
  coordinatorAddress = `127.0.0.1:${await freePort()}`;
  coordinator = launch(COORDINATOR, [
    "--workers", "2", "--listen", coordinatorAddress, "--model", MODEL, "--http-listen", "127.0.0.1:0",
    "--heartbeat-timeout", "1", "--kv-blocks", "512", "--max-context", "1024", "--served-model-name", "tiny-r1",
    "--startup-timeout", "60"]);
  for (let i = 0; i < 400 && !url; i++) {
    const m = coordinator.output().match(/listening on (http:\/\/\S+)/);
    if (m) url = m[1];
    else await sleep(25);
  }
  assert.ok(url, `the coordinator did not listen:\n${coordinator.output()}`);
  // Before the workers: not ready, and requests are refused with the reason.
  assert.equal((await fetch(`${url}/ready`)).status, 503);
  const early = await postJson(`${url}/v1/completions`, { model: "tiny-r1", prompt: "x", max_tokens: 2 });
  assert.equal(early.status, 503);
  assert.match(early.json.error.message, /not ready/);
  startWorker(0);
  startWorker(1);
  reference = await startServer(["--max-context", "1024", "--served-model-name", "tiny-r1"]);
  await waitReady(200, 60000);
});

test.after(async () => {
  for (const w of workers) if (w && w.proc.exitCode === null) w.proc.kill("SIGKILL");
  if (coordinator && coordinator.proc.exitCode === null) coordinator.proc.kill("SIGTERM");
  assert.equal(await coordinator.exited, 0, coordinator.output().slice(-2000));
  assert.equal(await reference.stop(), 0);
});

const client = (base) => new OpenAI({ baseURL: `${base}/v1`, apiKey: "none", maxRetries: 0 });
const requests = [
  { kind: "completions", body: { model: "tiny-r1", prompt: "The capital of France is", max_tokens: 20, temperature: 0, logprobs: 2 } },
  { kind: "chat", body: { model: "tiny-r1", messages: [{ role: "user", content: "Say hi" }], max_tokens: 24, temperature: 0.8, seed: 11 } },
  { kind: "chat", body: { model: "tiny-r1", messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "2+2?" }], max_tokens: 16, temperature: 0 } },
  // Chosen on rank 0 with min_p and top_logprobs; penalties keep the logits path (their choice
  // needs the sequence's history).
  { kind: "completions", body: { model: "tiny-r1", prompt: "Once there was", max_tokens: 18, temperature: 0.9, top_p: 0.9, seed: 3, logprobs: 3 } },
  { kind: "chat", body: { model: "tiny-r1", messages: [{ role: "user", content: "Name a color" }], max_tokens: 20, temperature: 0.7, seed: 8, presence_penalty: 0.6, frequency_penalty: 0.4 } },
];

async function run(base, { kind, body }, stream = false) {
  const c = client(base);
  if (kind === "completions") {
    if (!stream) {
      const r = await c.completions.create(body);
      return { text: r.choices[0].text, tokens: r.choices[0].logprobs?.tokens, finish: r.choices[0].finish_reason };
    }
    let text = "";
    let finish;
    for await (const chunk of await c.completions.create({ ...body, stream: true })) {
      text += chunk.choices[0]?.text ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    return { text, finish };
  }
  if (!stream) {
    const r = await c.chat.completions.create(body);
    const m = r.choices[0].message;
    return { text: (m.reasoning_content ?? "") + "|" + (m.content ?? ""), finish: r.choices[0].finish_reason };
  }
  let reasoning = "", content = "", finish;
  for await (const chunk of await c.chat.completions.create({ ...body, stream: true })) {
    const d = chunk.choices[0]?.delta ?? {};
    reasoning += d.reasoning_content ?? "";
    content += d.content ?? "";
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  return { text: reasoning + "|" + content, finish };
}

test("the group gives r1 serve's text, streamed or not", async () => {
  for (const r of requests) {
    const want = await run(reference.url, r);
    assert.ok(want.text.length > 1, "the reference produced text");
    assert.deepEqual(await run(url, r), want, JSON.stringify(r.body));
    const streamed = await run(url, r, true);
    assert.equal(streamed.text, want.text);
    assert.equal(streamed.finish, want.finish);
  }
  await waitIdle();
});

test("12 concurrent requests on the group equal each alone", async () => {
  const batch = [];
  for (let i = 0; i < 12; i++) {
    batch.push({ kind: "chat", body: { model: "tiny-r1", messages: [{ role: "user", content: `Question ${i}` }],
                                       max_tokens: 12 + i, temperature: 0.7, seed: 100 + i } });
  }
  const wants = await Promise.all(batch.map((r) => run(reference.url, r)));
  const gots = await Promise.all(batch.map((r) => run(url, r, true)));
  for (let i = 0; i < batch.length; i++) assert.equal(gots[i].text, wants[i].text, `request ${i}`);
  await waitIdle();
});

test("the steps carried tokens and block-table changes, not logits and whole tables", async () => {
  // After the tests above: rank 0 chose the rows without penalties; only the penalised request's
  // rows brought logits back; a decode row sends a table entry only when it takes a new block.
  const chosen = await metric("r1_executor_rows_chosen_remotely_total");
  const withLogits = await metric("r1_executor_rows_with_logits_total");
  const sent = await metric("r1_executor_block_table_entries_sent_total");
  const held = await metric("r1_executor_block_table_entries_total");
  console.log(`# rows chosen on rank 0 ${chosen}, with logits ${withLogits}; block-table entries sent ${sent} of ${held}`);
  assert.ok(chosen > 100, `rows chosen on rank 0: ${chosen}`);
  assert.ok(withLogits > 0 && withLogits < chosen / 4, `rows with logits ${withLogits}, chosen ${chosen}`);
  assert.ok(held > 0 && sent < held / 2, `block-table entries sent ${sent} of ${held}`);
});

test("a worker killed mid-stream: error, not ready, then back with the same text", async () => {
  const body = { model: "tiny-r1", prompt: "Once upon a time", max_tokens: 900, temperature: 0, stream: true };
  const full = await run(reference.url, { kind: "completions", body: { ...body, stream: false } });
  const res = await fetch(`${url}/v1/completions`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let sse = "";
  let killedAt = 0;
  while (true) {
    const { value, done } = await reader.read();
    if (done) break;
    sse += decoder.decode(value, { stream: true });
    if (!killedAt && (sse.match(/^data: \{/gm) || []).length >= 5) {
      workers[1].proc.kill("SIGKILL");
      killedAt = Date.now();
    }
  }
  const endedAfter = Date.now() - killedAt;
  assert.ok(killedAt, "the stream delivered tokens before the kill");
  let text = "";
  let error = null;
  for (const line of sse.split("\n")) {
    if (!line.startsWith("data: {")) continue;
    const j = JSON.parse(line.slice(6));
    if (j.error) error = j.error;
    else text += j.choices[0]?.text ?? "";
  }
  assert.ok(error, `the stream ended without an error event:\n${sse.slice(-500)}`);
  assert.match(error.message, /rank|worker/, error.message);
  assert.ok(full.text.startsWith(text), "every token before the error is the right one");
  assert.ok(endedAfter < 10000, `the stream ended ${endedAfter} ms after the kill`);
  await waitReady(503, 5000);
  const refused = await postJson(`${url}/v1/completions`, { model: "tiny-r1", prompt: "x", max_tokens: 2 });
  assert.equal(refused.status, 503);
  assert.match(refused.json.error.message, /not ready/);
  await workers[1].exited;
  startWorker(1);
  await waitReady(200, 30000);
  const again = await run(url, { kind: "completions", body: { ...body, max_tokens: 40, stream: false } });
  const want = await run(reference.url, { kind: "completions", body: { ...body, max_tokens: 40, stream: false } });
  assert.equal(again.text, want.text);
  await waitIdle();
  assert.equal(await metric("r1_engine_kv_blocks_used"), 0);
});
