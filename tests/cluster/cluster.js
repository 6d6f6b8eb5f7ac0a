// The scenarios run on the simulated cluster (tests/cluster/README.md): r1-coordinator on host
// `coord`, two r1-worker ranks on hosts `w0` and `w1`, a spare host `w2`, and this driver with the
// clients and a single-process reference (`r1 serve`, on its own loopback) on host `cli`. Every
// address is on the cluster's private bridge; no process listens on, or dials, localhost across
// hosts. run.sh builds the network, starts this file inside host `cli`, and removes everything
// afterwards.
//
//   node cluster.js registration|mpirun|kill9|sigstop|coordinator-restart|link-cut|link-flap|netem|
//                   checkpoint|version|soak
//
// Every fault is checked against the expected outcome: the request in flight either fails with a
// clear error or completes, and every token it delivered equals the reference's (never a wrong
// token), within the configured timeouts; /ready is 503 while the group is short and 200 again
// once the fault is gone, with no manual restart of the healthy parts; afterwards the same
// requests give the reference's text, every KV block is back, and memory is at its baseline.
// Each fault prints one RESULT line (what the client saw, time to detect, time to recover) and
// appends it to $R1C_RESULTS when set. Exit code 0: every check passed.
"use strict";
const { spawn, execFileSync } = require("child_process");
const fs = require("fs");
const path = require("path");

const E = process.env;
for (const v of ["R1C_RUN", "R1C_HOSTS", "R1C_SUBNET", "R1C_LOGS", "R1C_MODEL", "R1C_COORDINATOR", "R1C_WORKER", "R1C_R1"]) {
  if (!E[v]) throw new Error(`${v} is not set: run this through tests/cluster/run.sh`);
}
const RUN = E.R1C_RUN;
const NETNS = path.join(__dirname, "netns.sh");
const RSH_AGENT = path.join(__dirname, "rsh_agent.sh");
const HOSTS = Object.fromEntries(E.R1C_HOSTS.split(" ").map((s) => s.split("=")).map(([h, a]) => [h, a.split("/")[0]]));
const MODEL = E.R1C_MODEL;
const SCENARIO = process.argv[2];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.now();
const secs = (ms) => (ms / 1000).toFixed(3);

// ---- checks -------------------------------------------------------------------------------------

const failures = [];
function check(ok, what) {
  console.log(`${ok ? "ok  " : "FAIL"}  ${what}`);
  if (!ok) failures.push(what);
  return ok;
}
function require_(ok, what) {
  if (!check(ok, what)) throw new Error(`cannot go on: ${what}`);
}
async function waitFor(pred, ms, what) {
  const until = now() + ms;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (now() > until) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`);
    await sleep(50);
  }
}

// ---- processes ----------------------------------------------------------------------------------

const procs = [];
let launches = 0;
// Starts argv on `host` (its namespace and hostname), its output in R1C_LOGS/<name>.log.
function launch(name, host, argv, env = {}) {
  const file = path.join(E.R1C_LOGS, `${String(++launches).padStart(2, "0")}-${name}.log`);
  const log = fs.openSync(file, "w");
  const childEnv = { ...E, OMP_NUM_THREADS: "1", OMP_WAIT_POLICY: "passive", ...env };
  for (const [k, v] of Object.entries(childEnv)) if (v === null) delete childEnv[k];
  const proc = spawn(NETNS, ["exec", RUN, host, ...argv], { env: childEnv, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  const onData = (d) => {
    out += d;
    fs.writeSync(log, d);
  };
  proc.stdout.on("data", onData);
  proc.stderr.on("data", onData);
  const p = { name, host, proc, pid: proc.pid, file, output: () => out, code: undefined };
  p.exited = new Promise((resolve) => proc.on("exit", (code, signal) => {
    p.code = code ?? signal;
    resolve(p.code);
  }));
  p.alive = () => p.code === undefined;
  procs.push(p);
  return p;
}
function killAll() {
  for (const p of procs) if (p.alive()) p.proc.kill("SIGKILL");
}
process.on("exit", killAll);

// The process is what netns.sh exec finally runs (it execs all the way), so its pid is the binary's.
function signal(p, sig) {
  process.kill(p.pid, sig);
}
function rssMiB(pid) {
  const m = fs.readFileSync(`/proc/${pid}/status`, "utf8").match(/^VmRSS:\s+(\d+) kB/m);
  return Number(m[1]) / 1024;
}
function netns(...args) {
  return execFileSync(NETNS, args.map(String), { env: E, encoding: "utf8" }).trim();
}
function linkBytes(host) {
  const [rx, tx] = netns("bytes", RUN, host).split(" ").map(Number);
  return rx + tx;
}

// ---- the cluster --------------------------------------------------------------------------------

const port = () => 20000 + Math.floor(Math.random() * 40000);
const GRPC = `${HOSTS.coord}:${port()}`;
const HTTP = `${HOSTS.coord}:${port()}`;
const URL_ = `http://${HTTP}`;
const HEARTBEAT_TIMEOUT_S = 3;
const NOT_READY_TIMEOUT_S = 30;
let coordinator = null;
const workers = {};  // rank -> process (registration path)
let mpirun = null;

let heartbeatTimeoutS = HEARTBEAT_TIMEOUT_S;
// R1C_COORDINATOR_ENV="NAME=VALUE ...": extra environment for the coordinator only (for example
// MALLOC_ARENA_MAX=2, to compare its memory under the soak).
function coordinatorEnv() {
  return Object.fromEntries((E.R1C_COORDINATOR_ENV || "").split(" ").filter(Boolean).map((kv) => kv.split("=")));
}
async function startCoordinator() {
  coordinator = launch("coordinator", "coord", [
    E.R1C_COORDINATOR, "--workers", "2", "--listen", GRPC, "--model", MODEL, "--http-listen", HTTP,
    "--heartbeat-timeout", String(heartbeatTimeoutS), "--gloo-timeout", "5", "--step-timeout", "60",
    "--not-ready-timeout", String(NOT_READY_TIMEOUT_S), "--kv-blocks", "512", "--max-context", "1024",
    "--served-model-name", "tiny-r1", "--max-queued-requests", String(Number(E.R1C_MAX_QUEUED || 1000)),
    "--startup-timeout", "120"], coordinatorEnv());
  await waitFor(() => /listening on http:\/\//.test(coordinator.output()) || !coordinator.alive(), 20000,
                "the coordinator to listen");
  require_(coordinator.alive(), `the coordinator listens on ${HTTP} (HTTP) and ${GRPC} (workers)`);
  return coordinator;
}

// A rank on the registration path, named as Kubernetes names it: rank 0 by LeaderWorkerSet's
// LWS_WORKER_INDEX, rank 1 by a StatefulSet hostname; Gloo peers reach it at its host's address.
function startWorker(rank, { host = `w${rank}`, binary = E.R1C_WORKER, model = MODEL } = {}) {
  const env = rank === 0 ? { LWS_WORKER_INDEX: "0", HOSTNAME: null } : { LWS_WORKER_INDEX: null, HOSTNAME: `r1-worker-${rank}` };
  const p = launch(`worker${rank}-${host}`, host, [
    binary, "--coordinator", GRPC, "--model", model, "--rank-from-env", "--world-size", "2",
    "--advertise-address", HOSTS[host], "--connect-timeout", "30"], env);
  if (binary === E.R1C_WORKER && model === MODEL) workers[rank] = p;
  return p;
}

// Both ranks under one mpirun started on the coordinator's host: Open MPI reaches w0 and w1 through
// rsh_agent.sh (as it would through ssh), daemons and MPI traffic on the bridge's subnet only.
function startMpirun() {
  mpirun = launch("mpirun", "coord", [
    E.R1C_MPIRUN, "--allow-run-as-root", "-np", "2", "--host", `${HOSTS.w0}:1,${HOSTS.w1}:1`,
    "--mca", "plm_rsh_agent", RSH_AGENT, "--mca", "plm_rsh_no_tree_spawn", "1",
    "--mca", "oob_tcp_if_include", E.R1C_SUBNET, "--mca", "pml", "ob1", "--mca", "btl", "tcp,self",
    "--mca", "btl_tcp_if_include", E.R1C_SUBNET, "-x", "OMP_NUM_THREADS=1", "-x", "OMP_WAIT_POLICY=passive",
    E.R1C_WORKER, "--coordinator", GRPC, "--model", MODEL]);
  return mpirun;
}

// What the coordinator logged about each registration: rank -> { host, pid, via } (the latest).
function registrations(log = coordinator.output()) {
  const ranks = {};
  for (const m of log.matchAll(/rank (\d+) of \d+ registered \(host (\S+), pid (\d+)\) via (\w+)/g)) {
    ranks[m[1]] = { host: m[2], pid: Number(m[3]), via: m[4] };
  }
  return ranks;
}
// Ranks whose latest load kept their weights.
function keptWeights(log) {
  const kept = {};
  for (const m of log.matchAll(/rank (\d+) loaded in \S+ s \((weights kept|weights read)\)/g)) kept[m[1]] = m[2] === "weights kept";
  return kept;
}

// Polls /ready every 50 ms and keeps every change: [{ t, status }] (status 200, 503 or "down").
class ReadyWatch {
  constructor() {
    this.changes = [];
    this.stopped = false;
    this.loop = this.run();
  }
  async run() {
    while (!this.stopped) {
      let status;
      try {
        status = (await fetch(`${URL_}/ready`, { signal: AbortSignal.timeout(2000) })).status;
      } catch (e) {
        status = "down";
      }
      const last = this.changes[this.changes.length - 1];
      if (!last || last.status !== status) this.changes.push({ t: now(), status });
      await sleep(50);
    }
  }
  current() {
    return this.changes.length ? this.changes[this.changes.length - 1].status : undefined;
  }
  // The first moment after `t` that /ready was `status` (or satisfied pred); null if never.
  firstAfter(t, want) {
    const match = typeof want === "function" ? want : (s) => s === want;
    const prior = this.changes.filter((c) => c.t <= t).pop();
    if (prior && match(prior.status)) return t;
    const c = this.changes.find((c) => c.t > t && match(c.status));
    return c ? c.t : null;
  }
  async waitFor(t, want, ms, what) {
    return waitFor(() => this.firstAfter(t, want), ms, what);
  }
  statusesBetween(t0, t1) {
    const prior = this.changes.filter((c) => c.t <= t0).pop();
    return [...new Set([prior?.status, ...this.changes.filter((c) => c.t > t0 && c.t <= t1).map((c) => c.status)].filter((s) => s !== undefined))];
  }
  async stop() {
    this.stopped = true;
    await this.loop;
  }
}

// ---- requests -----------------------------------------------------------------------------------

async function metrics(url = URL_) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const get = (name) => {
    const m = text.match(new RegExp(`^${name} (\\S+)$`, "m"));
    return m ? Number(m[1]) : NaN;
  };
  return { blocksUsed: get("r1_engine_kv_blocks_used"), running: get("r1_engine_running_sequences"),
           waiting: get("r1_engine_queue_depth"), active: get("r1_http_active_requests") };
}

// One streamed chat request, token by token (logprobs): { status, tokens[], text, done, error,
// closed, t0, tEnd }. `onToken(n)` is called as tokens arrive. Never throws.
async function stream(url, body, { onToken, timeoutMs = 120000 } = {}) {
  const r = { status: 0, tokens: [], text: "", done: false, error: null, closed: false, t0: now(), tEnd: 0 };
  try {
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ ...body, stream: true, logprobs: true }), signal: AbortSignal.timeout(timeoutMs) });
    r.status = res.status;
    if (res.status !== 200) {
      r.error = await res.text();
      r.tEnd = now();
      return r;
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const e = buf.slice(0, end);
        buf = buf.slice(end + 2);
        if (!e.startsWith("data: ")) continue;
        if (e === "data: [DONE]") {
          r.done = true;
          continue;
        }
        const j = JSON.parse(e.slice(6));
        if (j.error) {
          r.error = j.error.message ?? JSON.stringify(j.error);
          continue;
        }
        const c = j.choices?.[0];
        if (!c) continue;
        r.text += (c.delta?.reasoning_content ?? "") + (c.delta?.content ?? "");
        for (const t of c.logprobs?.content ?? []) r.tokens.push(t.token);
        if (onToken) onToken(r.tokens.length);
      }
    }
    if (!r.done && !r.error) r.closed = true;
  } catch (e) {
    r.closed = true;
    r.error = r.error ?? `${e.name}: ${e.cause?.code ?? e.cause?.message ?? e.message}`;
  }
  r.tEnd = now();
  return r;
}

async function postChat(url, body) {
  try {
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
      signal: AbortSignal.timeout(60000) });
    const text = await res.text();
    let message = text;
    try {
      message = JSON.parse(text).error?.message ?? text;
    } catch (e) { /* not JSON */ }
    return { status: res.status, message };
  } catch (e) {
    return { status: "error", message: String(e.cause?.code ?? e.message) };
  }
}

// Every token of `got` equals the reference's at its position (none wrong, none duplicated).
function isPrefix(got, want) {
  if (got.tokens.length > want.tokens.length) return false;
  return got.tokens.every((t, i) => t === want.tokens[i]);
}

// The requests every scenario runs before and after its fault, and the long one it cuts into.
const WORKLOAD = Array.from({ length: 8 }, (_, i) => ({
  model: "tiny-r1", max_tokens: 12 + i, temperature: 0.7, seed: 100 + i,
  messages: [{ role: "user", content: `Question ${i} for the cluster` }] }));
const LONG = { model: "tiny-r1", max_tokens: 400, temperature: 0.8, seed: 42, ignore_eos: true,
               messages: [{ role: "user", content: "Tell a long story about a cluster of machines." }] };

const WARMUP = Array.from({ length: 8 }, (_, i) => ({ ...LONG, max_tokens: 100, seed: 200 + i }));

let reference = null;  // r1 serve on this host's loopback
const refCache = new Map();
async function startReference() {
  const p = launch("reference-r1-serve", "cli", [E.R1C_R1, "serve", "--model", MODEL, "--listen", "127.0.0.1:0",
                                                 "--max-context", "1024", "--served-model-name", "tiny-r1"]);
  const m = await waitFor(() => p.output().match(/listening on (http:\/\/\S+)/) || (!p.alive() && "dead"), 30000,
                          "the reference server");
  require_(m !== "dead", "the reference (r1 serve, one process) runs");
  reference = m[1];
}
async function want(body) {
  const key = JSON.stringify(body);
  if (!refCache.has(key)) {
    const r = await stream(reference, body);
    if (!r.done || r.error) require_(false, `the reference answers ${key.slice(0, 80)}: ${r.error}`);
    refCache.set(key, r);
  }
  return refCache.get(key);
}

// The workload, concurrently, each answer compared with the reference's: true if all equal.
async function runWorkload(label) {
  const wants = [];
  for (const b of WORKLOAD) wants.push(await want(b));
  const gots = await Promise.all(WORKLOAD.map((b) => stream(URL_, b)));
  const bad = gots.map((g, i) => (g.done && !g.error && g.text === wants[i].text && g.tokens.join("\u0001") === wants[i].tokens.join("\u0001") ? null : i))
    .filter((i) => i !== null);
  for (const i of bad.slice(0, 3)) console.log(`    request ${i}: ${gots[i].error ?? "different text"}`);
  return check(bad.length === 0, `${label}: ${WORKLOAD.length} concurrent requests give the reference's tokens`);
}

async function waitIdle(ms = 5000) {
  try {
    await waitFor(async () => {
      const m = await metrics();
      return m.blocksUsed === 0 && m.running === 0 && m.waiting === 0 && m.active === 0;
    }, ms, "every KV block back");
    return true;
  } catch (e) {
    console.log(`    ${JSON.stringify(await metrics())}`);
    return false;
  }
}

// ---- bring-up, baseline, recovery ---------------------------------------------------------------

let watch = null;
let baseline = null;

async function up(launchPath) {
  await startReference();
  await startCoordinator();
  watch = new ReadyWatch();
  check((await postChat(URL_, WORKLOAD[0])).status === 503, "before the workers: requests are refused with 503");
  const t0 = now();
  if (launchPath === "mpirun") {
    startMpirun();
  } else {
    startWorker(0);
    startWorker(1);
  }
  await watch.waitFor(t0, 200, 90000, "the group to become ready");
  const ranks = registrations();
  console.log(`cluster (${launchPath}) ready in ${secs(now() - t0)} s: ${JSON.stringify(ranks)}`);
  check(ranks[0]?.host === "r1c-w0" && ranks[1]?.host === "r1c-w1",
        "rank 0 registered from host r1c-w0, rank 1 from host r1c-w1");
  check(ranks[0]?.via === (launchPath === "mpirun" ? "mpi" : "registration") && ranks[1]?.via === ranks[0]?.via,
        `both ranks came by the ${launchPath} launch path`);
  const bytes0 = linkBytes("w1");
  await runWorkload("at start");
  const crossed = linkBytes("w1") - bytes0;
  check(crossed > 10000, `the workload's traffic to and from w1 crossed the bridge (${crossed} bytes)`);
  // Memory is measured once the processes are warm: their allocators grow over the first few
  // hundred concurrent tokens and then stay flat (measured: 89 MiB at start, 135 after 8 streams
  // of 100 tokens, 138-144 over the next 29 rounds).
  const warm = await Promise.all(WARMUP.map((b) => stream(URL_, b)));
  check(warm.every((w) => w.done && !w.error), `warm-up: ${WARMUP.length} concurrent streams of ${WARMUP[0].max_tokens} tokens`);
  require_(await waitIdle(), "every KV block back after the workload");
  baseline = { coordinator: rssMiB(coordinator.pid), workers: {} };
  for (const [rank, r] of Object.entries(ranks)) baseline.workers[rank] = { pid: r.pid, rss: rssMiB(r.pid) };
  console.log(`baseline RSS: coordinator ${baseline.coordinator.toFixed(1)} MiB, workers ${Object.values(baseline.workers).map((w) => w.rss.toFixed(1)).join(", ")} MiB`);
  return ranks;
}

const RSS_TOLERANCE = 0.10, RSS_SLACK_MIB = 8;
// The coordinator hands freed memory back to the system every 2 s (common/memory.h), so a
// reading taken just after a burst of work is given up to 5 s to come down.
async function memoryAtBaseline(label, pid, base) {
  const limit = base * (1 + RSS_TOLERANCE) + RSS_SLACK_MIB;
  let rss = rssMiB(pid);
  for (const t0 = now(); rss > limit && now() - t0 < 5000; rss = rssMiB(pid)) await sleep(250);
  return check(rss <= limit,
               `${label} RSS ${rss.toFixed(1)} MiB vs baseline ${base.toFixed(1)} MiB (allowed +${RSS_TOLERANCE * 100}% +${RSS_SLACK_MIB} MiB)`);
}

// After the fault is gone: ready, the workload right, every block back, memory at baseline for
// the processes that lived through it.
async function afterRecovery(label, { survivors = [] } = {}) {
  await watch.waitFor(now(), 200, 90000, "ready");
  await runWorkload(`after ${label}`);
  check(await waitIdle(), `after ${label}: every KV block back, nothing running or queued`);
  await memoryAtBaseline(`after ${label}: coordinator`, coordinator.pid, baseline.coordinator);
  for (const rank of survivors) {
    const w = baseline.workers[rank];
    if (check(isAlive(w.pid), `after ${label}: rank ${rank} (pid ${w.pid}) is the same process`)) {
      await memoryAtBaseline(`after ${label}: rank ${rank}`, w.pid, w.rss);
    }
  }
}
// /proc's state line of `pid` ("R (running)", "Z (zombie)"), or "gone".
function procState(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/status`, "utf8").match(/^State:\s+(.*)$/m)[1];
  } catch (e) {
    return "gone";
  }
}
// Alive and not a zombie waiting for its parent.
function isRunning(pid) {
  const state = procState(pid);
  return state !== "gone" && !state.startsWith("Z");
}
function isAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return false;
  }
}

// Starts LONG and resolves once `n` tokens have arrived, to { result }: the request's promise
// (wrapped, or awaiting this would wait for the whole request).
async function longStreamUnderway(n = 10) {
  let reached;
  const gotN = new Promise((r) => (reached = r));
  const result = stream(URL_, LONG, { onToken: (k) => { if (k >= n) reached(); } });
  await Promise.race([gotN, result.then(() => { throw new Error("the long request ended before the fault"); })]);
  return { result };
}

function describe(r, ref) {
  const prefix = isPrefix(r, ref);
  if (r.done && !r.error) return `completed: ${r.tokens.length} tokens${prefix && r.tokens.length === ref.tokens.length ? ", equal to the reference" : ", DIFFERENT from the reference"}`;
  const how = r.closed && !r.status ? "no response" : r.closed ? "connection closed mid-stream (no [DONE])" : "SSE error event";
  return `${how} after ${r.tokens.length} tokens${prefix ? " (all correct)" : " (WRONG tokens)"}: "${r.error}"`;
}

function result(row) {
  const line = { scenario: SCENARIO, ...row };
  console.log(`RESULT ${JSON.stringify(line)}`);
  if (E.R1C_RESULTS) fs.appendFileSync(E.R1C_RESULTS, `${JSON.stringify(line)}\n`);
}

// The in-flight request's outcome against the expectations: correct tokens, an end within
// `limitS` of the fault, and (unless it may complete) an error that says what happened.
async function judgeInFlight(resultPromise, tFault, limitS, errorPattern) {
  const r = await resultPromise;
  const ref = await want(LONG);
  const endS = (r.tEnd - tFault) / 1000;
  check(isPrefix(r, ref), `in flight: every delivered token equals the reference's (${r.tokens.length} tokens)`);
  check(endS <= limitS, `in flight: the request ended ${endS.toFixed(3)} s after the fault (limit ${limitS} s)`);
  if (errorPattern) check(r.error && errorPattern.test(r.error), `in flight: the error says what happened: "${r.error}"`);
  return { r, ref, endS };
}

// ---- scenarios ----------------------------------------------------------------------------------

const scenarios = {};

scenarios.registration = async () => {
  await up("registration");
  check(/collectives gloo tcp/.test(coordinator.output()), "the ranks' collectives are Gloo over TCP");
};

scenarios.kill9 = async () => {
  await up("registration");
  const { result: inFlight } = await longStreamUnderway();
  const tFault = now();
  signal(workers[1], "SIGKILL");
  const { r, endS } = await judgeInFlight(inFlight, tFault, 10, /rank 1/);
  const tDetect = await watch.waitFor(tFault, 503, 10000, "not ready after the kill");
  const refused = await postChat(URL_, WORKLOAD[0]);
  check(refused.status === 503 && /not ready/.test(refused.message), `while short: a new request gets 503: "${refused.message}"`);
  await sleep(1000);  // a supervisor's restart delay
  const tRestart = now();
  startWorker(1);
  const tReady = await watch.waitFor(tRestart, 200, 60000, "ready after the restart");
  result({ fault: "kill -9 worker rank 1 mid-decode (registration)", client: describe(r, await want(LONG)),
           detect_s: +secs(tDetect - tFault), request_failed_s: +endS.toFixed(3),
           recover_s: +secs(tReady - tRestart), recover_from: "the worker restarted (by its supervisor)" });
  await afterRecovery("kill -9", { survivors: [0] });
  check(keptWeights(coordinator.output())[0] === true, "rank 0 kept its weights through the re-formation");
};

scenarios.sigstop = async () => {
  await up("registration");
  const { result: inFlight } = await longStreamUnderway();
  const tFault = now();
  signal(workers[1], "SIGSTOP");
  const { r, endS } = await judgeInFlight(inFlight, tFault, HEARTBEAT_TIMEOUT_S + 5, /no heartbeat/);
  check(endS >= HEARTBEAT_TIMEOUT_S - 0.5, `a silent worker is declared dead by the heartbeat timeout (${HEARTBEAT_TIMEOUT_S} s), not sooner`);
  const tDetect = await watch.waitFor(tFault, 503, 10000, "not ready while rank 1 is stopped");
  const refused = await postChat(URL_, WORKLOAD[0]);
  check(refused.status === 503 && /not ready/.test(refused.message), `while stopped: a new request gets 503: "${refused.message}"`);
  await sleep(Math.max(0, tFault + 30000 - now()));
  check(watch.statusesBetween(tDetect, now()).every((s) => s === 503), "not ready during the whole 30 s");
  const tCont = now();
  signal(workers[1], "SIGCONT");
  const tReady = await watch.waitFor(tCont, 200, 60000, "ready after SIGCONT");
  check(/registered again/.test(workers[1].output()), "the stopped worker, woken, registered again by itself");
  result({ fault: "SIGSTOP worker rank 1 for 30 s mid-decode (registration)", client: describe(r, await want(LONG)),
           detect_s: +secs(tDetect - tFault), request_failed_s: +endS.toFixed(3),
           recover_s: +secs(tReady - tCont), recover_from: "SIGCONT (no restart)" });
  await afterRecovery("SIGSTOP", { survivors: [0, 1] });
  const kept = keptWeights(coordinator.output());
  check(kept[0] === true && kept[1] === true, "both ranks kept their weights");
};

async function coordinatorRestart(launchPath) {
  const before = registrations();
  const { result: inFlight } = await longStreamUnderway();
  const tFault = now();
  signal(coordinator, "SIGKILL");
  const { r, endS } = await judgeInFlight(inFlight, tFault, 5, null);
  check(r.closed, `in flight: the client sees the connection end without [DONE] ("${r.error}")`);
  const tDetect = await watch.waitFor(tFault, "down", 5000, "/ready unreachable");
  await sleep(2000);  // the coordinator's supervisor restarting it
  const old = coordinator;
  const tRestart = now();
  await startCoordinator();
  const ready = watch.waitFor(tRestart, 200, 60000, "ready after the coordinator restart");
  // Under mpirun the kill may land while the step is on its way to the ranks: a rank that got it
  // waits in an MPI collective for one that did not, which cannot be cancelled, so it exits after
  // its stuck-step timeout, mpirun ends the job and the supervisor (this driver) starts it again.
  const job = launchPath === "mpirun" ? mpirun : null;
  const first = await Promise.race([ready.then((t) => ({ t })),
                                    ...(job ? [job.exited.then((code) => ({ code }))] : [])]);
  let tReady = first.t, recoverFrom = "the coordinator restarted; workers untouched";
  if (tReady === undefined) {
    ready.catch(() => {});
    const line = (job.output().match(/[^\n]*stuck in an MPI collective[^\n]*/) || ["(no such line)"])[0];
    check(/stuck in an MPI collective/.test(line) && secs(now() - tFault) < 30,
          `the kill cut a step in half: a rank stuck in its collective ended the MPI job ${secs(now() - tFault)} s after the kill (exit ${first.code}): "${line.trim()}"`);
    startMpirun();
    tReady = await watch.waitFor(now(), 200, 90000, "ready after mpirun is started again");
    recoverFrom = "the coordinator restarted; the MPI job ended (a step cut in half) and was started again";
    const after = registrations();
    check([0, 1].every((k) => after[k]?.via === "mpi" && after[k]?.pid !== before[k]?.pid),
          "the new MPI job's ranks registered with the new coordinator");
  } else {
    const after = registrations();
    check([0, 1].every((k) => after[k]?.pid === before[k]?.pid && isAlive(before[k].pid)),
          `the workers stayed up and registered again with the new coordinator (pids ${before[0]?.pid}, ${before[1]?.pid})`);
    const kept = keptWeights(coordinator.output());
    check(kept[0] === true && kept[1] === true, "both ranks kept their weights");
  }
  check(old.code === "SIGKILL", "the old coordinator was killed");
  result({ fault: `coordinator kill -9 mid-decode, restarted after 2 s (${launchPath})`, client: describe(r, await want(LONG)),
           detect_s: +secs(tDetect - tFault), request_failed_s: +endS.toFixed(3), recover_s: +secs(tReady - tRestart),
           recover_from: recoverFrom });
  // New MPI ranks have no baseline of their own: only the coordinator's memory is compared then.
  await afterRecovery(`coordinator restart (${launchPath})`, { survivors: first.t === undefined ? [] : [0, 1] });
}

scenarios["coordinator-restart"] = async () => {
  await up("registration");
  await coordinatorRestart("registration");
};

scenarios["link-cut"] = async () => {
  await up("registration");
  const { result: inFlight } = await longStreamUnderway();
  const tFault = now();
  netns("link", RUN, "w1", "down");
  const { r, endS } = await judgeInFlight(inFlight, tFault, HEARTBEAT_TIMEOUT_S + 6, /rank 1/);
  const tDetect = await watch.waitFor(tFault, 503, 10000, "not ready while w1 is cut off");
  // Long enough for the worker's side to notice too (gRPC keepalive: 5 s + 5 s).
  await waitFor(() => /lost the coordinator/.test(workers[1].output()), 30000, "w1's worker to notice the cut");
  const workerDetect = now() - tFault;
  await sleep(Math.max(0, tFault + 15000 - now()));
  check(watch.statusesBetween(tDetect, now()).every((s) => s === 503), "not ready while the link is down");
  const tUp = now();
  netns("link", RUN, "w1", "up");
  const tReady = await watch.waitFor(tUp, 200, 60000, "ready after the link is back");
  result({ fault: "link w1 cut (veth down) 15 s mid-decode, restored (registration)", client: describe(r, await want(LONG)),
           detect_s: +secs(tDetect - tFault), worker_detect_s: +secs(workerDetect), request_failed_s: +endS.toFixed(3),
           recover_s: +secs(tReady - tUp), recover_from: "link up (no restart)" });
  await afterRecovery("link cut", { survivors: [0, 1] });
  const kept = keptWeights(coordinator.output());
  check(kept[0] === true && kept[1] === true, "both ranks kept their weights");
};

// A short cut with a coordinator that tolerates long silences (--heartbeat-timeout 30): the worker
// notices first (keepalive), and when the link is back it registers again while the coordinator
// still holds its old stream. The coordinator must take the new stream for the stale one.
scenarios["link-flap"] = async () => {
  heartbeatTimeoutS = 30;
  await up("registration");
  const before = registrations();
  const { result: inFlight } = await longStreamUnderway();
  const tFault = now();
  netns("link", RUN, "w1", "down");
  await waitFor(() => /lost the coordinator/.test(workers[1].output()), 20000, "w1's worker to notice the cut");
  const workerDetect = now() - tFault;
  const tUp = now();
  netns("link", RUN, "w1", "up");
  // Either rank 1 named as reconnected, or rank 0 reporting the collective that timed out on it.
  const { r, endS } = await judgeInFlight(inFlight, tFault, 30, /rank \d/);
  const tDetect = watch.firstAfter(tFault, 503);
  check(tDetect !== null, "the group went not-ready");
  // Two orders are possible once the link is back: the worker's new registration reaches the
  // coordinator while it still holds the old stream (which it must then replace), or the old
  // stream's reset, retransmitted by TCP, arrives first and the coordinator drops it itself. Both
  // must end in the same process registered again (checked below); which one happened is said.
  const out = coordinator.output();
  const replaced = /its old stream is stale/.test(out), closed = /worker rank 1 lost \(stream closed\)/.test(out);
  check(replaced || closed, replaced ? "the coordinator replaced the stale stream of rank 1"
                                     : "the old stream's reset arrived first: the coordinator dropped it (stream closed)");
  const tReady = await watch.waitFor(tDetect ?? tUp, 200, 60000, "ready after the flap");
  check(registrations()[1]?.pid === before[1].pid, "rank 1 is the same process, registered again");
  result({ fault: "link w1 cut until the worker notices (keepalive), then restored; coordinator --heartbeat-timeout 30 (registration)",
           client: describe(r, await want(LONG)), detect_s: +secs(tDetect - tFault), worker_detect_s: +secs(workerDetect),
           request_failed_s: +endS.toFixed(3), recover_s: +secs(tReady - tUp), recover_from: "link up (no restart)" });
  await afterRecovery("link flap", { survivors: [0, 1] });
};

scenarios.netem = async () => {
  await up("registration");
  const how = netns("how", RUN, "w1");
  const body = { ...LONG, max_tokens: 6 };
  const ref = await want(body);
  const timed = async () => {
    const r = await stream(URL_, body);
    return { r, s: (r.tEnd - r.t0) / 1000 };
  };
  const clean = await timed();
  check(clean.r.done && isPrefix(clean.r, ref) && clean.r.tokens.length === ref.tokens.length, `clean link: ${body.max_tokens} tokens in ${clean.s.toFixed(2)} s, correct`);
  const tFault = now();
  netns("impair", RUN, "w1", 200, 5);
  const slow = await timed();
  const slow2 = await timed();
  const during = watch.statusesBetween(tFault, now());
  const outcomes = [slow, slow2].map((x) => describe(x.r, ref));
  for (const x of [slow, slow2]) {
    check(isPrefix(x.r, ref), `200 ms + 5% loss: every token correct (${x.r.tokens.length} in ${x.s.toFixed(2)} s)`);
    check(x.r.done || x.r.error, "200 ms + 5% loss: the request ended (completed or failed with an error), no hang");
  }
  const tClear = now();
  netns("clear", RUN, "w1");
  const tReady = await watch.waitFor(tClear, 200, 60000, "ready once the link is clean");
  const after = await timed();
  const tBack = after.r.tEnd;
  check(after.r.done && after.r.tokens.length === ref.tokens.length && isPrefix(after.r, ref), `clean again: correct in ${after.s.toFixed(2)} s`);
  check(after.s < Math.max(3 * clean.s, 1), "clean again: at the clean link's speed");
  const degraded = during.includes(503);
  check(slow.r.done || degraded, "the impaired link slows the group; if it also trips a timeout, the group reports not-ready");
  result({ fault: `200 ms latency + 5% loss on w1's link (${how}) (registration)`,
           client: `${outcomes.join("; ")}; clean link ${clean.s.toFixed(2)} s per request`,
           detect_s: degraded ? +secs(watch.firstAfter(tFault, 503) - tFault) : null,
           ready_during: during.join(","), recover_s: +secs(Math.max(tReady, tBack) - tClear),
           recover_from: "impairment removed (recovered: a request served at the clean speed)",
           slowdown: +(Math.min(slow.s, slow2.s) / clean.s).toFixed(1) });
  await afterRecovery("netem", { survivors: degraded ? [] : [0, 1] });
};

// Rank 1 is replaced by a worker the group must refuse, then by the right one.
async function badReplacement(label, start, reasonPattern) {
  const tKill = now();
  signal(workers[1], "SIGKILL");
  await watch.waitFor(tKill, 503, 10000, "not ready after the kill");
  const tStart = now();
  const bad = start();
  const code = await Promise.race([bad.exited, sleep(20000).then(() => "still running")]);
  const tRefused = now();
  const line = (bad.output().match(/r1-worker: error: .*/) || [""])[0];
  check(code === 1, `${label}: the worker exits 1 (got ${code})`);
  check(reasonPattern.test(line), `${label}: it says why: "${line}"`);
  check(reasonPattern.test(coordinator.output()), `${label}: the coordinator logs the refusal`);
  check(watch.statusesBetween(tKill + 100, now()).every((s) => s === 503) || watch.current() === 503, `${label}: the group stays not ready`);
  const refused = await postChat(URL_, WORKLOAD[0]);
  check(refused.status === 503, `${label}: requests get 503 meanwhile: "${refused.message}"`);
  const tGood = now();
  startWorker(1);
  const tReady = await watch.waitFor(tGood, 200, 60000, "ready with the right worker");
  return { refusedS: (tRefused - tStart) / 1000, recoverS: (tReady - tGood) / 1000, line };
}

scenarios.checkpoint = async () => {
  const other = E.R1C_OTHER_MODEL;
  require_(other && fs.existsSync(other), "R1C_OTHER_MODEL: a second model");
  check(fs.readFileSync(path.join(other, "config.json"), "utf8") === fs.readFileSync(path.join(MODEL, "config.json"), "utf8"),
        "the other checkpoint has the same config.json (only its weights differ)");
  await up("registration");
  const x = await badReplacement("different checkpoint", () => startWorker(1, { model: other }), /different checkpoint/);
  result({ fault: "rank 1 replaced by a worker with another checkpoint (same config.json, other weights)",
           client: "503 not ready until the right checkpoint registered; no request served by mixed weights",
           detect_s: +x.refusedS.toFixed(3), recover_s: +x.recoverS.toFixed(3),
           recover_from: "the right worker started", refusal: x.line });
  await afterRecovery("a different checkpoint", { survivors: [0] });
};

scenarios.version = async () => {
  require_(E.R1C_WORKER_OTHER && fs.existsSync(E.R1C_WORKER_OTHER), "R1C_WORKER_OTHER: a worker of another protocol version");
  await up("registration");
  // A worker of another release appears while the group serves: refused, nobody disturbed.
  const { result: inFlight } = await longStreamUnderway();
  const tIntruder = now();
  const intruder = startWorker(1, { host: "w2", binary: E.R1C_WORKER_OTHER });
  const code = await Promise.race([intruder.exited, sleep(20000).then(() => "still running")]);
  const refusedS = (now() - tIntruder) / 1000;
  check(code === 1 && /protocol version 99/.test(intruder.output()), `another release on w2 is refused: "${(intruder.output().match(/r1-worker: error: .*/) || [""])[0]}"`);
  const r = await inFlight;
  const ref = await want(LONG);
  check(r.done && r.tokens.length === ref.tokens.length && isPrefix(r, ref), "the request in flight completed with the reference's tokens");
  check(watch.statusesBetween(tIntruder, now()).every((s) => s === 200), "the group stayed ready");
  const x = await badReplacement("another release", () => startWorker(1, { binary: E.R1C_WORKER_OTHER }), /protocol version 99/);
  result({ fault: "a worker of another build (protocol version 99) joins, then replaces rank 1",
           client: `in flight: ${describe(r, ref)}; as a replacement: 503 not ready until the right build registered`,
           detect_s: +Math.min(refusedS, x.refusedS).toFixed(3), recover_s: +x.recoverS.toFixed(3),
           recover_from: "the right build started", refusal: x.line });
  await afterRecovery("another release", { survivors: [0] });
};

scenarios.mpirun = async () => {
  const ranks = await up("mpirun");
  check(/collectives mpi/.test(coordinator.output()), "the ranks' collectives are MPI (over the bridge: btl tcp)");
  // kill -9 one MPI rank: Open MPI ends the whole job; the supervisor (here: this driver) starts it
  // again and the group forms from the new ranks.
  const { result: inFlight } = await longStreamUnderway();
  const tFault = now();
  process.kill(ranks[1].pid, "SIGKILL");
  const { r, endS } = await judgeInFlight(inFlight, tFault, 10, /rank/);
  const tDetect = await watch.waitFor(tFault, 503, 10000, "not ready after the kill");
  const jobEnd = await Promise.race([mpirun.exited, sleep(30000).then(() => "still running")]);
  check(jobEnd !== "still running", `mpirun ended the job when a rank died (exit ${jobEnd})`);
  const gone = await waitFor(() => !isRunning(ranks[0].pid), 10000, "rank 0 to end with the job").catch(() => false);
  check(gone, `the other rank went with the job${gone ? "" : ` (pid ${ranks[0].pid}: ${procState(ranks[0].pid)})`}`);
  const tRestart = now();
  startMpirun();
  const tReady = await watch.waitFor(tRestart, 200, 90000, "ready after mpirun is started again");
  result({ fault: "kill -9 MPI rank 1 mid-decode (mpirun across hosts)", client: describe(r, await want(LONG)),
           detect_s: +secs(tDetect - tFault), request_failed_s: +endS.toFixed(3), recover_s: +secs(tReady - tRestart),
           recover_from: "mpirun started again (an MPI job cannot re-form)" });
  await afterRecovery("an MPI rank killed");
  const fresh = registrations();
  baseline.workers = {};
  for (const [rank, x] of Object.entries(fresh)) baseline.workers[rank] = { pid: x.pid, rss: rssMiB(x.pid) };
  // The coordinator dies while the MPI job lives: the ranks register again with its successor.
  await coordinatorRestart("mpirun");
};

// The serving load test (tests/load/serve_load.js: R1C_SOAK_CLIENTS (500) streaming clients, each
// stream compared with the same request run alone) for R1C_SOAK_SECONDS (600) on the cluster, a
// worker killed (-9) and restarted every R1C_SOAK_KILL_EVERY_S (120) seconds, ranks taking turns,
// the first kill half a period into the measured window.
scenarios.soak = async () => {
  const seconds = Number(E.R1C_SOAK_SECONDS || 600);
  const every = Number(E.R1C_SOAK_KILL_EVERY_S || 120);
  const clients = Number(E.R1C_SOAK_CLIENTS || 500);
  require_(E.R1C_LOAD_SCRIPT && fs.existsSync(E.R1C_LOAD_SCRIPT), "R1C_LOAD_SCRIPT: tests/load/serve_load.js");
  await up("registration");
  const workersStart = Object.fromEntries(Object.entries(baseline.workers).map(([k, w]) => [k, +w.rss.toFixed(1)]));
  const load = launch("serve-load", "cli", [process.execPath, E.R1C_LOAD_SCRIPT], {
    R1_LOAD_URL: URL_, R1_LOAD_PID: String(coordinator.pid), R1_LOAD_SECONDS: String(seconds),
    R1_LOAD_CLIENTS: String(clients), R1_LOAD_FAULTS: "1", R1_LOAD_ERROR_BACKOFF_MS: "1000",
    // On the group a request waits about a minute in the queue, and the coordinator's memory
    // climbs for about two: the after-warm-up figure is taken once it has.
    R1_LOAD_WARMUP_S: E.R1C_SOAK_WARMUP_S || "150" });
  await waitFor(() => /measuring/.test(load.output()) || !load.alive(), 900000, "the load test's measured window");
  require_(load.alive(), "the load test reached its measured window");
  const t0 = now();
  const kills = [];
  for (let k = 0; (k + 0.5) * every < seconds; k++) {
    await sleep(Math.max(0, t0 + (k + 0.5) * every * 1000 - now()));
    const rank = k % 2 === 0 ? 1 : 0;
    const tKill = now();
    signal(workers[rank], "SIGKILL");
    await workers[rank].exited;
    await sleep(1000);  // a supervisor's restart delay
    const tRestart = now();
    startWorker(rank);
    const tReady = await watch.waitFor(tRestart, 200, 60000, `ready after restarting rank ${rank}`);
    const tDetect = watch.firstAfter(tKill, 503);
    kills.push({ at_s: +((tKill - t0) / 1000).toFixed(1), rank, detect_s: tDetect === null ? null : +secs(tDetect - tKill),
                 recover_s: +secs(tReady - tRestart) });
    console.log(`kill ${kills.length}: ${JSON.stringify(kills[kills.length - 1])}`);
  }
  const code = await load.exited;
  const m = load.output().match(/^LOAD_RESULT (.*)$/m);
  require_(m !== null, "the load test reported its figures");
  const fig = JSON.parse(m[1]);
  for (const line of load.output().split("\n").filter((l) => /^(ok|FAIL) /.test(l))) console.log(`  load: ${line}`);
  check(code === 0, `the load test's checks passed (exit ${code})`);
  check(fig.served > 0, `requests served: ${fig.served}`);
  check(fig.tokens_lost === 0 && fig.tokens_duplicated === 0 && fig.mismatched === 0,
        `tokens lost ${fig.tokens_lost}, duplicated ${fig.tokens_duplicated}, streams differing ${fig.mismatched}`);
  const unexpected = Object.keys(fig.failed_by_reason || {}).filter((r) => !/rank \w+ lost|not ready|worker group re-formed/.test(r));
  check(unexpected.length === 0, `every failure is a worker loss or the not-ready window it leaves${unexpected.length ? `: ${unexpected.join(" | ")}` : ""}`);
  check(kills.length === Math.floor(seconds / every + 0.5), `${kills.length} kills`);
  const workersEnd = Object.fromEntries(Object.entries(workers).map(([k, w]) => [k, +rssMiB(w.pid).toFixed(1)]));
  result({ fault: `soak: ${seconds} s of ${clients} streaming clients, a worker killed and restarted every ${every} s`,
           served: fig.served, tokens: fig.tokens, failed: fig.failed, failed_by_reason: fig.failed_by_reason,
           tokens_lost: fig.tokens_lost, tokens_duplicated: fig.tokens_duplicated,
           coordinator_rss_mib: { start: fig.rss_start_mib, after_warmup: fig.rss_warm_mib, end: fig.rss_end_mib, peak: fig.rss_peak_mib },
           worker_rss_mib: { start: workersStart, end: workersEnd }, kills });
};

// ---- main ---------------------------------------------------------------------------------------

async function main() {
  if (!scenarios[SCENARIO]) throw new Error(`unknown scenario '${SCENARIO}': ${Object.keys(scenarios).join(", ")}`);
  // Every wait is bounded already; this bounds the whole, below CTest's own timeout, so that a
  // failure still leaves through run.sh's cleanup rather than by CTest killing the run.
  const deadlineS = Number(E.R1C_DEADLINE_S || (SCENARIO === "soak" ? 1400 : 240));
  setTimeout(() => {
    console.log(`FAIL  ${SCENARIO} did not finish within ${deadlineS} s (R1C_DEADLINE_S)`);
    for (const p of procs) console.log(`---- ${p.name} (${p.file}), last lines ----\n${p.output().slice(-1500)}`);
    killAll();
    process.exit(1);
  }, deadlineS * 1000).unref();
  const t0 = now();
  try {
    await scenarios[SCENARIO]();
  } finally {
    if (watch) await watch.stop();
    if (coordinator?.alive()) {
      signal(coordinator, "SIGTERM");
      const code = await Promise.race([coordinator.exited, sleep(15000).then(() => "hung")]);
      check(code === 0, `the coordinator drained and exited 0 on SIGTERM (got ${code})`);
    }
    const stragglers = Object.values(workers).filter((w) => w.alive());
    await Promise.race([Promise.all(stragglers.map((w) => w.exited)), sleep(10000)]);
    check(stragglers.every((w) => !w.alive()), "the workers exited when told to shut down");
    killAll();
  }
  console.log(`${SCENARIO}: ${((now() - t0) / 1000).toFixed(1)} s, logs in ${E.R1C_LOGS}`);
  if (failures.length) {
    console.log(`${failures.length} check(s) failed:\n  ${failures.join("\n  ")}`);
    process.exit(1);
  }
  console.log("all checks passed");
  process.exit(0);  // not waiting for the timers of races already decided
}

main().catch((e) => {
  console.error(e);
  for (const p of procs) console.error(`---- ${p.name} (${p.file}), last lines ----\n${p.output().slice(-1500)}`);
  process.exit(1);
});
