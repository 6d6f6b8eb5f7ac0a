// Load test of `r1 serve` (LocalEngine, CPU) on the tiny model `r1 make-tiny` writes; loopback only.
//
//  1. Reference: each of the distinct requests the clients send is run alone first (streamed).
//  2. R1_LOAD_CLIENTS (500) clients loop — a warm-up (at least R1_LOAD_WARMUP_S (10) s, and until
//     every client has finished one request), then R1_LOAD_SECONDS (60) s measured: send
//     a streaming chat request (fixed seed), read the stream to the end, compare it with its
//     reference (text, and the tokens one by one through logprobs), repeat. Errors must be 0,
//     tokens lost or duplicated 0; the queue is sized (--max-queued-requests) so no 429 occurs.
//  3. Server RSS at start, after warm-up and at the end: the end may exceed the after-warm-up
//     figure by at most R1_LOAD_RSS_TOLERANCE (0.10 = 10 %).
//  4. r1_engine_kv_blocks_used (/metrics) back to 0 once the clients stop.
//  5. R1_LOAD_DISCONNECT (100) clients start long streams and disconnect mid-stream: every block
//     is returned within R1_LOAD_RETURN_S (5) s and each disconnect counted as a cancellation.
//
// Run through ctest (-DR1_LOAD_TESTS=ON; tests/load/README.md) or by hand with R1_TEST_SERVER=r1,
// R1_TEST_SERVER_ARGS=serve, R1_TEST_MODEL=<make-tiny folder>. Exit code 0: every check passed.
//
// Against a server already running (the soak on the simulated cluster, tests/cluster): R1_LOAD_URL
// (its base URL) and R1_LOAD_PID (the process whose RSS is sampled); the server is left running.
// R1_LOAD_FAULTS=1 when faults are injected meanwhile: a failed request is counted with its reason
// instead of failing the run, but every token it delivered must still be its reference's (so lost
// or duplicated tokens stay 0); a client waits R1_LOAD_ERROR_BACKOFF_MS after a failure. A line
// "measuring N s" marks the start of the measured window, and the last line, LOAD_RESULT {...},
// carries the figures as JSON.
"use strict";
const fs = require("fs");
const path = require("path");
const { startServer } = require(path.join(__dirname, "..", "clients", "harness.js"));

const CLIENTS = Number(process.env.R1_LOAD_CLIENTS || 500);
const WARMUP_S = Number(process.env.R1_LOAD_WARMUP_S || 10);
const SECONDS = Number(process.env.R1_LOAD_SECONDS || 60);
const DISCONNECT = Number(process.env.R1_LOAD_DISCONNECT || 100);
const RSS_TOLERANCE = Number(process.env.R1_LOAD_RSS_TOLERANCE || 0.1);
const RETURN_S = Number(process.env.R1_LOAD_RETURN_S || 5);
const MAX_TOKENS = Number(process.env.R1_LOAD_MAX_TOKENS || 24);
const EXTERNAL_URL = process.env.R1_LOAD_URL || "";
const FAULTS = process.env.R1_LOAD_FAULTS === "1";
const ERROR_BACKOFF_MS = Number(process.env.R1_LOAD_ERROR_BACKOFF_MS || 0);
const DISTINCT = 20;  // distinct requests: prompt i % 10 x seed i % 20

const failures = [];
function check(ok, what) {
  console.log(`${ok ? "ok  " : "FAIL"}  ${what}`);
  if (!ok) failures.push(what);
}

function rssMiB(pid) {
  const m = fs.readFileSync(`/proc/${pid}/status`, "utf8").match(/^VmRSS:\s+(\d+) kB/m);
  return Number(m[1]) / 1024;
}

async function metrics(url) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const get = (name) => {
    const m = text.match(new RegExp(`^${name} (\\S+)$`, "m"));
    return m ? Number(m[1]) : NaN;
  };
  return {
    blocksUsed: get("r1_engine_kv_blocks_used"),
    blocksTotal: get("r1_engine_kv_blocks_total"),
    running: get("r1_engine_running_sequences"),
    waiting: get("r1_engine_queue_depth"),
    active: get("r1_http_active_requests"),
    cancels: get("r1_client_cancellations_total"),
    generated: get("r1_generated_tokens_total"),
    text,
  };
}

// Polls /metrics until no block is used and nothing runs or waits; resolves to seconds taken or
// null after `limitS`.
async function waitBlocksReturned(url, limitS) {
  const t0 = performance.now();
  for (;;) {
    const m = await metrics(url);
    if (m.blocksUsed === 0 && m.running === 0 && m.waiting === 0 && m.active === 0) {
      return (performance.now() - t0) / 1000;
    }
    if (performance.now() - t0 > limitS * 1000) {
      console.log(`  after ${limitS} s: blocks used ${m.blocksUsed}, running ${m.running}, waiting ${m.waiting}, active ${m.active}`);
      return null;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

// One streamed request: { status, text, tokens[] (from logprobs), usage, error }.
async function stream(url, body, { signal, onChunk } = {}) {
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ ...body, stream: true, logprobs: true, stream_options: { include_usage: true } }),
    signal,
  });
  if (res.status !== 200) return { status: res.status, error: await res.text() };
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "", reasoning = "", content = "", usage = null, done = false, finish = null;
  const tokens = [];
  for (;;) {
    const r = await reader.read();
    if (r.done) break;
    buf += decoder.decode(r.value, { stream: true });
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const e = buf.slice(0, end);
      buf = buf.slice(end + 2);
      if (!e.startsWith("data: ")) continue;
      if (e === "data: [DONE]") { done = true; continue; }
      const j = JSON.parse(e.slice(6));
      if (j.error) return { status: 200, error: JSON.stringify(j.error), tokens };
      if (j.usage) usage = j.usage;
      const c = j.choices?.[0];
      if (!c) continue;
      reasoning += c.delta?.reasoning_content ?? "";
      content += c.delta?.content ?? "";
      for (const t of c.logprobs?.content ?? []) tokens.push(t.token);
      if (c.finish_reason) finish = c.finish_reason;
      if (onChunk) onChunk(tokens.length);
    }
  }
  if (!done) return { status: 200, error: "the stream ended without [DONE]" };
  return { status: 200, text: `${reasoning}|${content}`, tokens, usage, finish };
}

async function main() {
  const s = EXTERNAL_URL
    ? { url: EXTERNAL_URL, proc: { pid: Number(process.env.R1_LOAD_PID) }, stop: async () => 0 }
    : await startServer(["--max-context", "1024", "--served-model-name", "tiny-r1",
                         "--max-queued-requests", String(CLIENTS + DISCONNECT + 64)]);
  const pid = s.proc.pid;
  const url = s.url;
  const figures = {};
  try {
    const rssStart = rssMiB(pid);
    const model = "tiny-r1";
    const body = (i) => ({
      model, seed: i % DISTINCT, max_tokens: MAX_TOKENS,
      messages: [{ role: "user", content: `Load client ${i % 10}: say something about number ${i % 10}.` }],
    });
    // 1. References, one at a time.
    const ref = [];
    for (let i = 0; i < DISTINCT; ++i) {
      const r = await stream(url, body(i));
      if (r.error) throw new Error(`reference ${i}: ${r.status} ${r.error}`);
      ref.push(r);
    }
    console.log(`${DISTINCT} references: ${ref[0].tokens.length} tokens each (max_tokens ${MAX_TOKENS}); RSS ${rssStart.toFixed(1)} MiB at start`);

    // 2. The loop.
    const stats = { done: 0, errors: 0, status: {}, reasons: {}, mismatched: 0, lost: 0, duplicated: 0, tokens: 0,
                    firstErrors: [] };
    let measuring = false, stop = false, warmedClients = 0;
    const latencies = [];
    const client = async (c) => {
      for (let k = 0; !stop; ++k) {
        const i = c + k * CLIENTS;  // walks over the distinct requests
        const t0 = performance.now();
        let r;
        try {
          r = await stream(url, body(i));
        } catch (e) {
          r = { status: "exception", error: String(e) };
        }
        const counted = measuring;
        if (r.error) {
          stats.errors += 1;
          stats.status[r.status] = (stats.status[r.status] || 0) + 1;
          // The reason without the numbers that differ from one failure to the next.
          const reason = `${r.status} ${r.error}`.replace(/\d+(\.\d+)?/g, "N").slice(0, 200);
          stats.reasons[reason] = (stats.reasons[reason] || 0) + 1;
          if (stats.firstErrors.length < 5) stats.firstErrors.push(`${r.status} ${r.error}`.slice(0, 300));
          // Whatever it delivered before failing must be its reference's first tokens.
          const want = ref[i % DISTINCT];
          const got = r.tokens || [];
          const prefix = got.length <= want.tokens.length && got.every((t, n) => t === want.tokens[n]);
          if (!prefix) {
            stats.mismatched += 1;
            stats.duplicated += Math.max(0, got.length - want.tokens.length);
            if (stats.firstErrors.length < 5) stats.firstErrors.push(`wrong tokens before a failure: ${JSON.stringify(got)}`);
          }
          if (ERROR_BACKOFF_MS) await new Promise((res) => setTimeout(res, ERROR_BACKOFF_MS));
          continue;
        }
        if (k === 0) warmedClients += 1;
        const want = ref[i % DISTINCT];
        const n = Math.min(r.tokens.length, want.tokens.length);
        let same = r.text === want.text && r.tokens.length === want.tokens.length &&
                   r.usage?.completion_tokens === r.tokens.length;
        for (let t = 0; t < n && same; ++t) same = r.tokens[t] === want.tokens[t];
        if (!same) {
          stats.mismatched += 1;
          stats.lost += Math.max(0, want.tokens.length - r.tokens.length);
          stats.duplicated += Math.max(0, r.tokens.length - want.tokens.length);
          if (stats.firstErrors.length < 5) stats.firstErrors.push(`mismatch: ${JSON.stringify(r.text)} vs ${JSON.stringify(want.text)}`);
        }
        if (counted) {
          stats.done += 1;
          stats.tokens += r.tokens.length;
          latencies.push(performance.now() - t0);
        }
      }
    };
    const tStart = performance.now();
    const running = Array.from({ length: CLIENTS }, (_, c) => client(c));
    const rssSamples = [];
    const sampler = setInterval(() => rssSamples.push(rssMiB(pid)), 1000);
    await new Promise((r) => setTimeout(r, WARMUP_S * 1000));
    while (warmedClients < CLIENTS && stats.errors === 0) await new Promise((r) => setTimeout(r, 100));
    const errorsBefore = stats.errors;
    const warmupS = (performance.now() - tStart) / 1000;
    const rssWarm = rssMiB(pid);
    const m0 = await metrics(url);
    measuring = true;
    console.log(`measuring ${SECONDS} s`);
    const tMeasure = performance.now();
    await new Promise((r) => setTimeout(r, SECONDS * 1000));
    stop = true;
    await Promise.all(running);
    clearInterval(sampler);
    const measured = (performance.now() - tMeasure) / 1000;
    const m1 = await metrics(url);
    latencies.sort((a, b) => a - b);
    const q = (p) => latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))].toFixed(0) : "-";
    console.log(`${CLIENTS} clients, ${warmupS.toFixed(1)} s warm-up (every client done once) + ${measured.toFixed(1)} s measured (${((performance.now() - tStart) / 1000).toFixed(1)} s in all):`);
    console.log(`  requests done (finished in the measured window) ${stats.done} (${(stats.done / measured).toFixed(1)}/s), tokens ${stats.tokens} (${(stats.tokens / measured).toFixed(0)}/s, server generated ${m1.generated - m0.generated} in the window); request latency p50 ${q(0.5)} ms, p99 ${q(0.99)} ms`);
    console.log(`  errors ${stats.errors} ${JSON.stringify(stats.status)}; streams differing from their reference ${stats.mismatched}; tokens lost ${stats.lost}, duplicated ${stats.duplicated}`);
    for (const e of stats.firstErrors) console.log(`    ${e}`);
    check(stats.done > 0, "requests completed");
    if (FAULTS) {
      console.log(`  failures by reason (faults injected): ${JSON.stringify(stats.reasons)}`);
      check(errorsBefore === 0, "no errors before the faults (no 429: the queue holds every client)");
    } else {
      check(stats.errors === 0, "no errors (no 429: the queue holds every client)");
    }
    Object.assign(figures, { clients: CLIENTS, measured_s: +measured.toFixed(1), served: stats.done,
                             tokens: stats.tokens, failed: stats.errors, failed_by_reason: stats.reasons,
                             mismatched: stats.mismatched, tokens_lost: stats.lost, tokens_duplicated: stats.duplicated });
    check(stats.mismatched === 0 && stats.lost === 0 && stats.duplicated === 0, "every stream equals its reference: no token lost or duplicated");

    // 3, 4. Blocks back to 0, memory flat.
    const returned = await waitBlocksReturned(url, RETURN_S);
    const rssEnd = rssMiB(pid);
    const rssMax = Math.max(...rssSamples, rssEnd);
    console.log(`  RSS start ${rssStart.toFixed(1)} MiB, after warm-up ${rssWarm.toFixed(1)} MiB, end ${rssEnd.toFixed(1)} MiB (peak ${rssMax.toFixed(1)} MiB); tolerance ${(RSS_TOLERANCE * 100).toFixed(0)} % over the after-warm-up figure`);
    check(rssEnd <= rssWarm * (1 + RSS_TOLERANCE), "memory flat after warm-up");
    Object.assign(figures, { rss_start_mib: +rssStart.toFixed(1), rss_warm_mib: +rssWarm.toFixed(1),
                             rss_end_mib: +rssEnd.toFixed(1), rss_peak_mib: +rssMax.toFixed(1) });
    console.log(`  KV blocks used after the load: 0 after ${returned === null ? "-" : returned.toFixed(2)} s (total ${m1.blocksTotal})`);
    check(returned !== null, "every KV block returned after the load");

    // 5. Disconnects mid-stream.
    const cancels0 = (await metrics(url)).cancels;
    let aborted = 0, peakBlocks = 0;
    const disconnecter = async (i) => {
      const ac = new AbortController();
      const after = 1 + (i % 8);  // tokens to read before hanging up
      try {
        await stream(url, { model, seed: i, max_tokens: 600, messages: [{ role: "user", content: `Disconnecting client ${i}, write a long story.` }] },
                     { signal: ac.signal, onChunk: (n) => { if (n >= after) ac.abort(); } });
      } catch (e) {
        if (e.name === "AbortError") aborted += 1;
        else throw e;
      }
    };
    const peakPoll = setInterval(async () => { peakBlocks = Math.max(peakBlocks, (await metrics(url)).blocksUsed); }, 20);
    await Promise.all(Array.from({ length: DISCONNECT }, (_, i) => disconnecter(i)));
    clearInterval(peakPoll);
    const returned2 = await waitBlocksReturned(url, RETURN_S);
    const cancels = (await metrics(url)).cancels - cancels0;
    console.log(`${DISCONNECT} clients disconnected mid-stream (${aborted} aborted after 1-8 tokens; peak ${peakBlocks} blocks used): blocks used back to 0 ${returned2 === null ? "NOT within " + RETURN_S + " s" : "after " + returned2.toFixed(2) + " s"}; ${cancels} client cancellations counted`);
    check(aborted === DISCONNECT, "every disconnecting client got tokens, then hung up");
    check(returned2 !== null, `every KV block returned within ${RETURN_S} s of the last disconnect`);
    check(cancels === DISCONNECT, "each disconnect cancelled its request");
    check((await fetch(`${url}/health`)).status === 200, "server healthy");
  } finally {
    if (!EXTERNAL_URL) {
      const code = await s.stop();
      check(code === 0, "server drained and exited 0");
    }
    console.log(`LOAD_RESULT ${JSON.stringify({ ...figures, failed_checks: failures })}`);
  }
  if (failures.length) {
    console.log(`${failures.length} check(s) failed`);
    process.exit(1);
  }
  console.log("all checks passed");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
