// deploy/mpirun/serve.sh on the CPU backend with 2 ranks: it becomes ready, serves a chat request
// (OpenAI and Ollama routes), and SIGTERM stops the coordinator, mpirun and every rank, leaving no
// process behind; when the coordinator dies on its own, serve.sh stops the ranks and fails. Its
// --help and the GPU-mode command line (--dry-run) are checked too.
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const path = require("path");
const { spawnSync } = require("child_process");
const k8s = require("./k8s.js");
const { freePort, launch, waitFor, exitWithin, descendants, stillRunning } = require("./procs.js");

const ROOT = path.resolve(__dirname, "..", "..");
const SERVE = path.join(ROOT, "deploy", "mpirun", "serve.sh");
const MODEL = process.env.R1_TEST_MODEL;
const BUILD = process.env.R1_TEST_BUILD_DIR;
const OpenAI = k8s.requirePackage("openai");

// After a failed assertion: whatever serve.sh started goes too (they run in sessions of their own,
// so killing serve.sh alone would leave them).
function killAll(serve) {
  if (serve.proc.exitCode !== null || serve.proc.signalCode !== null) return;
  for (const p of descendants(serve.proc.pid)) {
    try {
      process.kill(p.pid, "SIGKILL");
    } catch (e) {
      // already gone
    }
  }
  serve.proc.kill("SIGKILL");
}

function env() {
  return { ...process.env, OMP_WAIT_POLICY: "passive" };
}

async function startServe() {
  assert.ok(MODEL && BUILD, "R1_TEST_MODEL and R1_TEST_BUILD_DIR must be set (run through ctest)");
  const http = `127.0.0.1:${await freePort()}`;
  const control = `127.0.0.1:${await freePort()}`;
  const serve = launch(SERVE, ["--model", MODEL, "--gpus", "2", "--backend", "cpu", "--build", BUILD, "--http", http,
                               "--control", control, "--name", "tiny", "--ready-timeout", "90"], { env: env() });
  await waitFor(() => /serve\.sh: ready: /.test(serve.output()) || serve.proc.exitCode !== null, 100000, "serve.sh: ready")
    .catch((e) => {
      killAll(serve);
      throw new Error(`${e.message}\n${serve.output().slice(-3000)}`);
    });
  assert.match(serve.output(), /serve\.sh: ready: http:\/\/127\.0\.0\.1/, serve.output().slice(-3000));
  return { serve, url: `http://${http}` };
}

// The processes serve.sh started: the coordinator, mpirun and the two ranks.
function tree(serve) {
  const procs = descendants(serve.proc.pid);
  const count = (re) => procs.filter((p) => re.test(p.cmd)).length;
  assert.equal(count(/^\S*\/r1-coordinator /), 1, JSON.stringify(procs.map((p) => p.cmd)));
  assert.equal(count(/^\S*\/mpirun /), 1);
  assert.equal(count(/^\S*\/r1-worker --model/), 2, "one r1-worker per rank");
  return procs;
}

test("serve.sh --help", () => {
  const r = spawnSync(SERVE, ["--help"], { encoding: "utf8" });
  assert.equal(r.status, 0);
  for (const flag of ["--model", "--gpus", "--backend", "--http", "--grpc", "--control", "--kv-blocks", "--dry-run"]) {
    assert.match(r.stdout, new RegExp(`^  ${flag} `, "m"), flag);
  }
  const bad = spawnSync(SERVE, ["--gpus", "2"], { encoding: "utf8" });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--model DIR is required/);
});

test("the GPU command line: one GPU per rank, NVLink SHARP off", () => {
  const r = spawnSync(SERVE, ["--model", MODEL, "--gpus", "8", "--backend", "gpu", "--build", BUILD, "--dry-run",
                              "--", "--api-key", "k"], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  const workers = r.stdout.match(/^workers: (.*)$/m)[1];
  assert.match(workers, /mpirun -np 8 /);
  assert.match(workers, / -x NCCL_NVLS_ENABLE=0 /);
  assert.match(workers, /--bind-to none .*deploy\/mpirun\/bind-rank\.sh \S+\/r1-worker --model /);
  const coordinator = r.stdout.match(/^coordinator: (.*)$/m)[1];
  assert.match(coordinator, /r1-coordinator --workers 8 --listen 127\.0\.0\.1:50051 .*--http-listen 127\.0\.0\.1:8000 --api-key k$/);
});

test("bind-rank.sh gives each rank its own GPU", () => {
  const bind = path.join(ROOT, "deploy", "mpirun", "bind-rank.sh");
  const run = (localRank, visible) => spawnSync(bind, ["sh", "-c", 'echo "$CUDA_VISIBLE_DEVICES"'], {
    encoding: "utf8", env: { PATH: "/usr/bin:/bin", OMPI_COMM_WORLD_LOCAL_RANK: String(localRank), ...(visible ? { CUDA_VISIBLE_DEVICES: visible } : {}) } });
  assert.equal(run(3).stdout.trim(), "3");
  assert.equal(run(1, "4,5,6,7").stdout.trim(), "5", "the rank-th of the GPUs this job was given");
  const outside = spawnSync(bind, ["true"], { encoding: "utf8", env: { PATH: "/usr/bin:/bin" } });
  assert.notEqual(outside.status, 0, "refused outside mpirun");
});

test("2 CPU ranks: a chat request is served, SIGTERM stops every process", async () => {
  const { serve, url } = await startServe();
  try {
    const procs = tree(serve);
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "none", maxRetries: 0, timeout: 60000 });
    const r = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "Hi" }], max_tokens: 10, temperature: 0 });
    assert.equal(r.choices[0].finish_reason, "length");
    assert.equal(r.usage.completion_tokens, 10);
    assert.ok(((r.choices[0].message.reasoning_content ?? "") + (r.choices[0].message.content ?? "")).length > 0);
    const ollama = await (await fetch(`${url}/api/chat`, { method: "POST", body: JSON.stringify({
      model: "tiny", messages: [{ role: "user", content: "Hi" }], stream: false, options: { num_predict: 4, temperature: 0 } }) })).json();
    assert.equal(ollama.done, true);
    assert.equal(ollama.eval_count, 4);
    serve.proc.kill("SIGTERM");
    assert.equal(await exitWithin(serve, 60000, "serve.sh"), 0, serve.output().slice(-3000));
    assert.deepEqual(stillRunning(procs), [], "nothing outlives serve.sh");
  } finally {
    killAll(serve);
  }
});

test("the coordinator dies: serve.sh stops the ranks and fails", async () => {
  const { serve } = await startServe();
  try {
    const procs = tree(serve);
    process.kill(procs.find((p) => /^\S*\/r1-coordinator /.test(p.cmd)).pid, "SIGKILL");
    assert.equal(await exitWithin(serve, 60000, "serve.sh"), 1, serve.output().slice(-3000));
    assert.match(serve.output(), /r1-coordinator exited/);
    assert.deepEqual(stillRunning(procs), [], "no rank is left running");
  } finally {
    killAll(serve);
  }
});
