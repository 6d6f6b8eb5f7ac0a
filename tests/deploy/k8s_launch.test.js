// The registration launch path exactly as deploy/k8s runs it, as processes on this machine, on
// the CPU backend: the rendered two-node overlays' containers (command, args, environment from the
// ConfigMaps, the Secret and the downward API, and the variables LeaderWorkerSet or a StatefulSet
// gives each pod) are started as the kubelet would start them, r1-worker-pod and all. What differs
// from a cluster is only what must: the model folder, ranks per pod and KV blocks (ConfigMap
// values: the tiny CPU model, 2 ranks per "pod"), and addresses (Services and 0.0.0.0 become
// loopback with ports chosen now). Then: the group becomes ready, the probes answer, a chat
// request is served with the API key from the Secret, a pod stopped and restarted as the kubelet
// would re-forms the group, and stopping the coordinator ends every process.
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("fs");
const os = require("os");
const path = require("path");
const k8s = require("./k8s.js");
const { freePort, launch, waitFor, exitWithin, descendants, stillRunning, sleep } = require("./procs.js");

const ROOT = path.resolve(__dirname, "..", "..");
const MODEL = process.env.R1_TEST_MODEL;
const COORDINATOR = process.env.R1_TEST_COORDINATOR;
const WORKER = process.env.R1_TEST_WORKER;
const OpenAI = k8s.requirePackage("openai");
const API_KEY = "deploy-test-key";
const RANKS_PER_POD = 2;

// The images' PATH: the three commands the manifests name.
function binDir() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "r1-deploy-bin-"));
  fs.symlinkSync(path.resolve(COORDINATOR), path.join(dir, "r1-coordinator"));
  fs.symlinkSync(path.resolve(WORKER), path.join(dir, "r1-worker"));
  fs.symlinkSync(path.join(ROOT, "deploy", "bin", "r1-worker-pod"), path.join(dir, "r1-worker-pod"));
  return dir;
}

const find = (objects, kind, name) => objects.find((x) => x.kind === kind && x.metadata.name === name);

// One overlay, rendered, with the ConfigMap values for this machine.
function renderForCpu(overlay) {
  const objects = k8s.renderKustomization(path.join(ROOT, "deploy", "k8s", "overlays", overlay));
  const config = find(objects, "ConfigMap", "r1-config").data;
  const lws = find(objects, "LeaderWorkerSet", "r1-worker");
  const sts = find(objects, "StatefulSet", "r1-worker");
  const pods = lws ? lws.spec.leaderWorkerTemplate.size : sts.spec.replicas;
  assert.equal(pods, 2, `${overlay} has two worker pods`);
  config.R1_MODEL_DIR = MODEL;
  config.R1_GPUS_PER_POD = String(RANKS_PER_POD);
  config.R1_WORKERS = String(pods * RANKS_PER_POD);
  config.R1_KV_BLOCKS = "512";
  return { objects, lws, sts, pods };
}

// Services and 0.0.0.0 listeners become loopback; every container port gets a free port.
async function addressMap(objects) {
  const coordinator = find(objects, "Deployment", "r1-coordinator").spec.template.spec.containers[0];
  const ports = {};
  for (const p of coordinator.ports) ports[p.containerPort] = await freePort();
  const byName = Object.fromEntries(coordinator.ports.map((p) => [p.name, p.containerPort]));
  const services = {};
  for (const s of objects.filter((o) => o.kind === "Service" && o.spec.selector["app.kubernetes.io/component"] === "coordinator")) {
    for (const p of s.spec.ports) services[`${s.metadata.name}:${p.port}`] = `127.0.0.1:${ports[byName[p.targetPort]]}`;
  }
  const local = (word) =>
    word.replace(/0\.0\.0\.0:(\d+)/g, (m, p) => `127.0.0.1:${ports[p]}`).replace(/([a-z0-9-]+:\d+)/g, (m) => services[m] ?? m);
  return { local, url: (name) => `http://127.0.0.1:${ports[byName[name]]}`, port: (name) => ports[byName[name]] };
}

// argv and environment of a container, as the kubelet runs it.
function containerLaunch(container, objects, podEnv, addresses, bin) {
  const env = { PATH: `${bin}:/usr/bin:/bin`, ...podEnv };
  Object.assign(env, k8s.containerEnv(container, objects, {
    fieldRefs: { "status.podIP": "127.0.0.1" },
    secrets: { "r1-api-key": { "api-key": API_KEY } },
  }));
  assert.deepEqual(k8s.undefinedReferences(container, env), []);
  const argv = [...container.command, ...(container.args || [])].map((w) => addresses.local(k8s.expand(w, env)));
  return { argv, env };
}

function startPod(spec, index) {
  return launch(spec.argv[0], spec.argv.slice(1), { env: spec.env(index) });
}

async function ready(url) {
  try {
    return (await fetch(`${url}/ready`)).status;
  } catch (e) {
    return 0;
  }
}

async function chat(url, apiKey) {
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey, maxRetries: 0, timeout: 60000 });
  const r = await client.chat.completions.create({
    model: "deepseek-r1", messages: [{ role: "user", content: "Hello from the pods" }], max_tokens: 12, temperature: 0 });
  const m = r.choices[0].message;
  return { text: (m.reasoning_content ?? "") + (m.content ?? ""), usage: r.usage, finish: r.choices[0].finish_reason, model: r.model };
}

async function scenario(t, overlay) {
  assert.ok(MODEL && COORDINATOR && WORKER, "R1_TEST_MODEL, R1_TEST_COORDINATOR and R1_TEST_WORKER must be set (run through ctest)");
  const { objects, lws, pods } = renderForCpu(overlay);
  const bin = binDir();
  const addresses = await addressMap(objects);
  const coordinatorPod = find(objects, "Deployment", "r1-coordinator").spec.template;
  const coordinatorSpec = containerLaunch(coordinatorPod.spec.containers[0], objects,
                                          { HOSTNAME: "r1-coordinator-5d4f9c7b8-x2x7q" }, addresses, bin);
  const workerTemplate = lws ? lws.spec.leaderWorkerTemplate.workerTemplate : find(objects, "StatefulSet", "r1-worker").spec.template;
  // What the controller gives pod `i` of the group.
  const podEnv = (i) => lws
    ? { HOSTNAME: i === 0 ? "r1-worker-0" : `r1-worker-0-${i}`, LWS_WORKER_INDEX: String(i), LWS_GROUP_SIZE: String(pods),
        LWS_LEADER_ADDRESS: "r1-worker-0.r1-worker.default" }
    : { HOSTNAME: `r1-worker-${i}` };
  const first = containerLaunch(workerTemplate.spec.containers[0], objects, podEnv(0), addresses, bin);
  const workerSpec = { argv: first.argv, env: (i) => containerLaunch(workerTemplate.spec.containers[0], objects, podEnv(i), addresses, bin).env };
  t.diagnostic(`coordinator: ${coordinatorSpec.argv.join(" ")}`);
  t.diagnostic(`worker pod: ${workerSpec.argv.join(" ")}`);

  const coordinator = launch(coordinatorSpec.argv[0], coordinatorSpec.argv.slice(1), { env: coordinatorSpec.env });
  const group = [];
  const url = addresses.url("http");
  try {
    await waitFor(() => /listening on http/.test(coordinator.output()), 20000, "the coordinator's HTTP listener");
    assert.equal(await ready(url), 503, "not ready before the workers");
    for (let i = 0; i < pods; i++) group.push(startPod(workerSpec, i));
    await waitFor(async () => (await ready(url)) === 200, 90000, "/ready 200 with every rank loaded").catch((e) => {
      throw new Error(`${e.message}\n${coordinator.output().slice(-2000)}\n${group.map((g) => g.output().slice(-1500)).join("\n")}`);
    });
    // Each pod's ranks: pod index x ranks per pod + local index.
    for (let i = 0; i < pods; i++) {
      const ranks = [...group[i].output().matchAll(/registered with \S+ as rank (\d+) of (\d+)/g)];
      assert.deepEqual(ranks.map((m) => Number(m[1])).sort(), [i * RANKS_PER_POD, i * RANKS_PER_POD + 1], `pod ${i}`);
      for (const m of ranks) assert.equal(Number(m[2]), pods * RANKS_PER_POD);
    }
    // The probes, as the kubelet sends them.
    const c = coordinatorPod.spec.containers[0];
    for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
      const res = await fetch(`${addresses.url(c[probe].httpGet.port)}${c[probe].httpGet.path}`);
      assert.equal(res.status, 200, probe);
    }
    // The public gRPC port listens.
    await new Promise((resolve, reject) => {
      const s = require("net").connect(addresses.port("grpc"), "127.0.0.1", () => s.end(resolve));
      s.on("error", reject);
    });
    // A chat request: the key from the Secret is required.
    const r = await chat(url, API_KEY);
    assert.ok(r.usage.completion_tokens > 0 && r.text.length > 0, JSON.stringify(r));
    assert.equal(r.model, "deepseek-r1", "the served model name from r1-config");
    const refused = await fetch(`${url}/v1/models`, { headers: { authorization: "Bearer wrong" } });
    assert.equal(refused.status, 401);

    if (lws) {
      // The kubelet stops pod 1 (SIGTERM to the container's process): its ranks end, nothing is
      // left behind, and the coordinator reports not ready ...
      const procs = descendants(group[1].proc.pid);
      assert.equal(procs.filter((p) => /r1-worker --coordinator/.test(p.cmd)).length, RANKS_PER_POD, "one r1-worker per rank in the pod");
      group[1].proc.kill("SIGTERM");
      assert.equal(await exitWithin(group[1], 30000, "the stopped pod"), 0);
      assert.deepEqual(stillRunning(procs), [], "no rank outlives its pod");
      await waitFor(async () => (await ready(url)) === 503, 15000, "/ready 503 with a pod gone");
      // ... until the pod runs again: the group re-forms and serves.
      group[1] = startPod(workerSpec, 1);
      await waitFor(async () => (await ready(url)) === 200, 60000, "/ready 200 after the pod came back");
      const again = await chat(url, API_KEY);
      assert.equal(again.text, r.text, "the same greedy reply from the re-formed group");
    }

    // Stopping the coordinator (SIGTERM, as on a rollout) drains it and shuts the workers down.
    const all = group.flatMap((g) => descendants(g.proc.pid));
    coordinator.proc.kill("SIGTERM");
    assert.equal(await exitWithin(coordinator, 60000, "the coordinator"), 0, coordinator.output().slice(-2000));
    for (const [i, g] of group.entries()) assert.equal(await exitWithin(g, 30000, `pod ${i}`), 0, g.output().slice(-2000));
    assert.deepEqual(stillRunning(all), []);
  } finally {
    for (const g of group) if (g.proc.exitCode === null && g.proc.signalCode === null) g.proc.kill("SIGKILL");
    if (coordinator.proc.exitCode === null && coordinator.proc.signalCode === null) coordinator.proc.kill("SIGKILL");
    await sleep(100);
    fs.rmSync(bin, { recursive: true, force: true });
  }
}

test("two-nodes (LeaderWorkerSet): ready, chat with the API key, a pod restarted, stopped cleanly", (t) => scenario(t, "two-nodes"));

test("two-nodes-statefulset (ordinals from HOSTNAME): ready, chat, stopped cleanly", (t) => scenario(t, "two-nodes-statefulset"));

test("a pod whose rank would fall outside the group is refused at start", async () => {
  // StatefulSet ordinal 2 of a two-pod group: ranks 4 and 5 of 4.
  const r = launch(WORKER, ["--coordinator", "127.0.0.1:1", "--model", MODEL, "--rank-from-env", "--ranks-per-pod", "2",
                            "--local-rank", "1", "--world-size", "4"], { env: { ...process.env, HOSTNAME: "r1-worker-2" } });
  assert.equal(await exitWithin(r, 10000, "r1-worker"), 1);
  assert.match(r.output(), /rank 5 \(pod 2 x 2 \+ local rank 1\) is outside world size 4/);
  const bad = launch(WORKER, ["--coordinator", "127.0.0.1:1", "--model", MODEL, "--rank-from-env", "--ranks-per-pod", "2",
                              "--local-rank", "2"], { env: { ...process.env, LWS_WORKER_INDEX: "0", LWS_GROUP_SIZE: "2" } });
  assert.equal(await exitWithin(bad, 10000, "r1-worker"), 1);
  assert.match(bad.output(), /--local-rank 2 is outside this pod's 2 rank/);
  // Without --world-size: LeaderWorkerSet's group size (pods) times ranks per pod.
  const lws = launch(WORKER, ["--coordinator", "127.0.0.1:1", "--model", MODEL, "--rank-from-env", "--ranks-per-pod", "2",
                              "--local-rank", "1"], { env: { ...process.env, LWS_WORKER_INDEX: "1", LWS_GROUP_SIZE: "1" } });
  assert.equal(await exitWithin(lws, 10000, "r1-worker"), 1);
  assert.match(lws.output(), /rank 3 \(pod 1 x 2 \+ local rank 1\) is outside world size 2/);
  const launcher = launch(path.join(ROOT, "deploy", "bin", "r1-worker-pod"), ["--ranks", "0"]);
  assert.equal(await exitWithin(launcher, 10000, "r1-worker-pod"), 2);
  assert.match(launcher.output(), /--ranks '0' is not a positive number/);
});
