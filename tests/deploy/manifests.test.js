// deploy/k8s: every overlay is rendered (the kustomize subset in k8s.js; also `kubectl kustomize`
// where kubectl is installed, and the two must agree), every object is validated against the
// Kubernetes API schemas (kubernetes-models, strict about unknown fields), the LeaderWorkerSet
// against its CRD's schema; then what the manifests mean is checked: references resolve, the
// worker count adds up and equals `r1 plan`'s, the probes, Services and volumes are the ones the
// processes need, and every flag in them exists in the binaries' --help.
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("fs");
const os = require("os");
const path = require("path");
const { execFileSync, spawnSync } = require("child_process");
const k8s = require("./k8s.js");

const ROOT = path.resolve(__dirname, "..", "..");
const K8S = path.join(ROOT, "deploy", "k8s");
const OVERLAYS = fs.readdirSync(path.join(K8S, "overlays")).sort();
const LWS_CRD = k8s.loadCrd(path.join(__dirname, "data", "leaderworkerset-crd.yaml"), [
  "/spec/leaderWorkerTemplate/workerTemplate",
  "/spec/leaderWorkerTemplate/leaderTemplate",
]);
const CRDS = { LeaderWorkerSet: LWS_CRD };
const R1 = process.env.R1_TEST_R1;
const COORDINATOR = process.env.R1_TEST_COORDINATOR;
const WORKER = process.env.R1_TEST_WORKER;

// The cluster each overlay is for, as `r1 plan` flags.
const PLAN_FLAGS = {
  "one-node": ["--gpu", "h200", "--gpus-per-node", "8", "--nodes", "1"],
  "one-node-statefulset": ["--gpu", "h200", "--gpus-per-node", "8", "--nodes", "1"],
  "two-nodes": ["--gpu", "h100", "--gpus-per-node", "8", "--nodes", "2"],
  "two-nodes-statefulset": ["--gpu", "h100", "--gpus-per-node", "8", "--nodes", "2"],
};

const rendered = {};
for (const o of OVERLAYS) rendered[o] = k8s.renderKustomization(path.join(K8S, "overlays", o));

const find = (objects, kind, name) => objects.find((x) => x.kind === kind && x.metadata.name === name);
const clone = (x) => JSON.parse(JSON.stringify(x));

// The worker pod template and pod count, whichever controller runs them.
function workers(objects) {
  const lws = find(objects, "LeaderWorkerSet", "r1-worker");
  if (lws) return { kind: "LeaderWorkerSet", template: lws.spec.leaderWorkerTemplate.workerTemplate, pods: lws.spec.leaderWorkerTemplate.size ?? 1, controller: lws };
  const sts = find(objects, "StatefulSet", "r1-worker");
  assert.ok(sts, "neither a LeaderWorkerSet nor a StatefulSet r1-worker");
  return { kind: "StatefulSet", template: sts.spec.template, pods: sts.spec.replicas ?? 1, controller: sts };
}

function coordinatorPod(objects) {
  const d = find(objects, "Deployment", "r1-coordinator");
  assert.ok(d, "no Deployment r1-coordinator");
  return d.spec.template;
}

function argValue(args, flag) {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === flag) return args[i + 1];
    if (args[i].startsWith(`${flag}=`)) return args[i].slice(flag.length + 1);
  }
  return undefined;
}

function kubectlVersion() {
  const r = spawnSync("kubectl", ["version", "--client", "-o", "json"], { encoding: "utf8" });
  if (r.error || r.status !== 0) return null;
  try {
    const v = JSON.parse(r.stdout).clientVersion;
    return { major: Number(v.major), minor: Number(String(v.minor).replace(/\D.*$/, "")), text: v.gitVersion };
  } catch (e) {
    return null;
  }
}

const byId = (objects) => Object.fromEntries(objects.map((o) => [`${o.apiVersion} ${o.kind} ${o.metadata.name}`, o]));

test("every overlay renders the same objects as kubectl kustomize (where kubectl is installed)", (t) => {
  assert.deepEqual(OVERLAYS, ["one-node", "one-node-statefulset", "two-nodes", "two-nodes-statefulset"]);
  for (const o of OVERLAYS) {
    const kinds = rendered[o].map((x) => x.kind).sort();
    const workerKinds = o.endsWith("statefulset") ? ["Service", "StatefulSet"] : ["LeaderWorkerSet"];
    assert.deepEqual(kinds, ["ConfigMap", "ConfigMap", "Deployment", "PersistentVolumeClaim", "Service", "Service", ...workerKinds].sort(), o);
  }
  const v = kubectlVersion();
  if (!v || v.major < 1 || (v.major === 1 && v.minor < 21)) {
    t.diagnostic(`kubectl ${v ? v.text + " (kustomize older than v4)" : "not installed"}: rendered by k8s.js only`);
    return;
  }
  t.diagnostic(`kubectl ${v.text}: comparing with kubectl kustomize`);
  for (const o of OVERLAYS) {
    const out = execFileSync("kubectl", ["kustomize", path.join(K8S, "overlays", o)], { encoding: "utf8" });
    assert.deepEqual(byId(k8s.parseYamlDocuments(out, `kubectl kustomize ${o}`)), byId(rendered[o]), o);
  }
});

test("every object is valid against the Kubernetes API schemas; the LeaderWorkerSet against its CRD", async () => {
  // The CRD written for the tests is itself a valid CustomResourceDefinition.
  assert.deepEqual(await k8s.validateObject(LWS_CRD.crd), []);
  for (const o of OVERLAYS) {
    for (const obj of rendered[o]) assert.deepEqual(await k8s.validateObject(obj, CRDS), [], `${o}: ${obj.kind}/${obj.metadata.name}`);
  }
});

test("the validators reject broken manifests", async () => {
  const objects = rendered["two-nodes"];
  const broken = async (kind, name, change) => {
    const obj = clone(find(objects, kind, name));
    change(obj);
    return (await k8s.validateObject(obj, CRDS)).join("\n");
  };
  const coordinator = (d) => d.spec.template.spec.containers[0];
  // A misspelled field: kubernetes-models alone accepts it, the strict check does not.
  assert.match(await broken("Deployment", "r1-coordinator", (d) => {
    coordinator(d).readinesProbe = coordinator(d).readinessProbe;
  }), /containers\/0\/readinesProbe: unknown field/);
  assert.match(await broken("Deployment", "r1-coordinator", (d) => { d.spec.replicas = "one"; }), /replicas must be integer/);
  assert.match(await broken("Deployment", "r1-coordinator", (d) => { delete coordinator(d).name; }), /name/);
  assert.match(await broken("Service", "r1", (s) => { s.spec.ports[0].protocol = "HTTP"; }), /protocol|allowed/);
  assert.match(await broken("PersistentVolumeClaim", "r1-model", (p) => { p.spec.accessModes = ["ReadOnly"]; }), /accessModes/);
  assert.match(await broken("ConfigMap", "r1-config", (c) => { c.data.R1_WORKERS = 16; }), /data\/R1_WORKERS must be string/);
  // The LeaderWorkerSet: its own fields against the CRD, its pod template against the core schema.
  const lws = (l) => l.spec.leaderWorkerTemplate;
  assert.match(await broken("LeaderWorkerSet", "r1-worker", (l) => { lws(l).restartPolicy = "Always"; }), /restartPolicy: must be equal to one of the allowed values/);
  assert.match(await broken("LeaderWorkerSet", "r1-worker", (l) => { lws(l).size = 0; }), /size: must be >= 1/);
  assert.match(await broken("LeaderWorkerSet", "r1-worker", (l) => { lws(l).groupSize = 2; }), /leaderWorkerTemplate\/groupSize: unknown field/);
  assert.match(await broken("LeaderWorkerSet", "r1-worker", (l) => { delete lws(l).workerTemplate; }), /workerTemplate/);
  assert.match(await broken("LeaderWorkerSet", "r1-worker", (l) => {
    lws(l).workerTemplate.spec.containers[0].resources.limit = {};
  }), /workerTemplate\/spec\/containers\/0\/resources\/limit: unknown field/);
  assert.match(await broken("LeaderWorkerSet", "r1-worker", (l) => {
    lws(l).workerTemplate.spec.volumes[1].emptyDir.sizeLimit = true;
  }), /sizeLimit/);
});

test("references resolve: ConfigMaps, the model claim, $(VAR)s, Service selectors and ports", () => {
  for (const o of OVERLAYS) {
    const objects = rendered[o];
    const pods = [coordinatorPod(objects), workers(objects).template];
    for (const pod of pods) {
      for (const v of pod.spec.volumes || []) {
        if (v.persistentVolumeClaim) assert.ok(find(objects, "PersistentVolumeClaim", v.persistentVolumeClaim.claimName), `${o}: claim ${v.persistentVolumeClaim.claimName}`);
      }
      for (const c of pod.spec.containers) {
        for (const from of c.envFrom || []) assert.ok(find(objects, "ConfigMap", from.configMapRef.name), `${o}: ConfigMap ${from.configMapRef.name}`);
        const env = k8s.containerEnv(c, objects, { fieldRefs: { "status.podIP": "10.0.0.1" } });
        assert.deepEqual(k8s.undefinedReferences(c, env), [], `${o}: ${c.name}: $(VAR) with no value`);
        const portNames = new Set((c.ports || []).map((p) => p.name));
        for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
          if (c[probe]?.httpGet) assert.ok(portNames.has(c[probe].httpGet.port), `${o}: ${c.name} ${probe} port ${c[probe].httpGet.port}`);
        }
      }
    }
    for (const svc of objects.filter((x) => x.kind === "Service")) {
      const selected = pods.filter((p) => Object.entries(svc.spec.selector).every(([k, v]) => p.metadata.labels[k] === v));
      assert.equal(selected.length, 1, `${o}: Service ${svc.metadata.name} selects exactly one kind of pod`);
      const names = new Set(selected[0].spec.containers.flatMap((c) => (c.ports || []).map((p) => p.name)));
      for (const p of svc.spec.ports || []) assert.ok(names.has(p.targetPort), `${o}: Service ${svc.metadata.name} port ${p.name} -> ${p.targetPort}`);
    }
  }
});

test("the worker group adds up and matches r1 plan", () => {
  assert.ok(R1, "R1_TEST_R1 must be set (run through ctest)");
  for (const o of OVERLAYS) {
    const objects = rendered[o];
    const config = find(objects, "ConfigMap", "r1-config").data;
    const w = workers(objects);
    const container = w.template.spec.containers[0];
    const gpus = Number(container.resources.limits["nvidia.com/gpu"]);
    assert.equal(gpus, Number(config.R1_GPUS_PER_POD), `${o}: nvidia.com/gpu limit = R1_GPUS_PER_POD`);
    assert.equal(Number(config.R1_WORKERS), w.pods * gpus, `${o}: R1_WORKERS = pods x GPUs per pod`);
    const plan = JSON.parse(execFileSync(R1, ["plan", "--preset", "deepseek-r1", ...PLAN_FLAGS[o], "--block-size", config.R1_BLOCK_SIZE, "--json"], { encoding: "utf8" }));
    assert.equal(plan.fits, true, `${o}: r1 plan says the model fits`);
    assert.equal(plan.layout.world_size, Number(config.R1_WORKERS), `${o}: W`);
    assert.equal(plan.cluster.nodes, w.pods, `${o}: one pod per node`);
    assert.equal(plan.cluster.gpus_per_node, gpus, `${o}: GPUs per pod`);
    assert.equal(plan.kv.blocks_per_gpu, Number(config.R1_KV_BLOCKS), `${o}: --kv-blocks`);
    // The coordinator listens where the planner's launch line and the workers' Service say.
    const cargs = coordinatorPod(objects).spec.containers[0].args;
    const planned = plan.launch.coordinator;
    assert.match(planned, new RegExp(`--listen ${argValue(cargs, "--listen").replace(/\./g, "\\.")}( |$)`), `${o}: --listen as r1 plan's`);
    assert.match(planned, /--workers (\d+)/);
    assert.equal(Number(planned.match(/--workers (\d+)/)[1]), Number(config.R1_WORKERS));
    const control = find(objects, "Service", "r1-coordinator");
    assert.equal(argValue(container.args, "--coordinator"), `${control.metadata.name}:${control.spec.ports[0].port}`, `${o}: workers dial the control Service`);
    assert.equal(control.spec.ports[0].port, Number(argValue(cargs, "--listen").split(":").pop()), `${o}: control port`);
  }
});

test("coordinator: probes, Services, API key, drain", () => {
  for (const o of OVERLAYS) {
    const objects = rendered[o];
    const deployment = find(objects, "Deployment", "r1-coordinator");
    assert.equal(deployment.spec.replicas, 1);
    assert.equal(deployment.spec.strategy.type, "Recreate", `${o}: never two coordinators at once`);
    const pod = deployment.spec.template.spec;
    const c = pod.containers[0];
    assert.equal(c.readinessProbe.httpGet.path, "/ready");
    assert.equal(c.livenessProbe.httpGet.path, "/health");
    assert.equal(c.startupProbe.httpGet.path, "/ready");
    // Start-up budget: --startup-timeout for the workers to register, then DeepSeek-R1's 640 GB
    // read at no less than 150 MB/s (a modest network volume).
    const budget = c.startupProbe.periodSeconds * c.startupProbe.failureThreshold;
    const registration = Number(argValue(c.args, "--startup-timeout"));
    assert.ok(budget >= registration + 640e9 / 150e6, `${o}: startup probe allows ${budget} s`);
    assert.ok(!c.resources.limits?.["nvidia.com/gpu"] && !c.resources.requests?.["nvidia.com/gpu"], "the coordinator needs no GPU");
    assert.ok(pod.terminationGracePeriodSeconds >= Number(argValue(c.args, "--drain-timeout")) + 10, `${o}: room to drain`);
    const key = c.env.find((e) => e.name === "R1_API_KEY");
    assert.equal(key.valueFrom.secretKeyRef.optional, true, "the API key Secret is optional");
    const api = find(objects, "Service", "r1");
    const control = find(objects, "Service", "r1-coordinator");
    assert.deepEqual(api.spec.ports.map((p) => p.targetPort).sort(), ["grpc", "http"]);
    assert.ok(!api.spec.publishNotReadyAddresses, "clients reach only a ready coordinator");
    assert.deepEqual(control.spec.ports.map((p) => p.targetPort), ["control"]);
    assert.equal(control.spec.publishNotReadyAddresses, true, "workers must reach a coordinator that is not ready yet");
    const ports = Object.fromEntries(c.ports.map((p) => [p.name, p.containerPort]));
    assert.equal(Number(argValue(c.args, "--http-listen").split(":").pop()), ports.http);
    assert.equal(Number(argValue(c.args, "--grpc-api-listen").split(":").pop()), ports.grpc);
    assert.equal(Number(argValue(c.args, "--listen").split(":").pop()), ports.control);
  }
});

test("workers: whole nodes, /dev/shm, the model read-only, NCCL settings, group restart", () => {
  const templates = {};
  for (const o of OVERLAYS) {
    const objects = rendered[o];
    const w = workers(objects);
    const pod = w.template.spec;
    const c = pod.containers[0];
    const volume = (name) => pod.volumes.find((v) => v.name === name);
    const mount = (p) => c.volumeMounts.find((m) => m.mountPath === p);
    assert.equal(volume(mount("/dev/shm").name).emptyDir.medium, "Memory", `${o}: /dev/shm in memory`);
    const model = mount(find(objects, "ConfigMap", "r1-config").data.R1_MODEL_DIR);
    assert.ok(model && model.readOnly, `${o}: the model folder is a read-only mount`);
    const claim = volume(model.name).persistentVolumeClaim;
    assert.equal(claim.readOnly, true);
    assert.deepEqual(find(objects, "PersistentVolumeClaim", claim.claimName).spec.accessModes, ["ReadOnlyMany"], "every node mounts the model");
    const env = k8s.containerEnv(c, objects, { fieldRefs: { "status.podIP": "10.0.0.1" } });
    assert.equal(env.NCCL_NVLS_ENABLE, "0");
    assert.equal(k8s.expand(argValue(c.args, "--advertise-address"), env), "10.0.0.1", "peers reach the pod's own IP");
    assert.equal(c.command[0], "r1-worker-pod");
    if (w.kind === "LeaderWorkerSet") {
      assert.equal(w.controller.spec.leaderWorkerTemplate.restartPolicy, "RecreateGroupOnPodRestart");
      assert.equal(w.controller.spec.replicas, 1, "one group per coordinator");
    } else {
      assert.equal(w.controller.spec.podManagementPolicy, "Parallel");
      const headless = find(objects, "Service", w.controller.spec.serviceName);
      assert.equal(headless.spec.clusterIP, "None");
    }
    templates[o] = w.template;
  }
  // One pod template, whichever controller runs it.
  assert.deepEqual(templates["one-node"], templates["one-node-statefulset"]);
  assert.deepEqual(templates["two-nodes"], templates["two-nodes-statefulset"]);
});

function helpFlags(binary) {
  const r = spawnSync(binary, ["--help"], { encoding: "utf8" });
  assert.equal(r.status, 0, `${binary} --help: ${r.stderr}`);
  return new Set([...r.stdout.matchAll(/--[a-z][a-z0-9-]*/g)].map((m) => m[0]));
}

test("every flag in the manifests exists in the binaries' --help", () => {
  assert.ok(COORDINATOR && WORKER, "R1_TEST_COORDINATOR and R1_TEST_WORKER must be set (run through ctest)");
  const flags = {
    "r1-coordinator": helpFlags(COORDINATOR),
    "r1-worker": helpFlags(WORKER),
    "r1-worker-pod": helpFlags(path.join(ROOT, "deploy", "bin", "r1-worker-pod")),
  };
  // r1-worker-pod adds these to every r1-worker.
  for (const f of ["--rank-from-env", "--ranks-per-pod", "--local-rank"]) assert.ok(flags["r1-worker"].has(f), f);
  const check = (binary, args) => {
    for (const a of args) {
      const flag = a.startsWith("--") ? a.split("=")[0] : null;
      if (flag && flag !== "--") assert.ok(flags[binary].has(flag), `${binary} has no ${flag}`);
    }
  };
  for (const o of OVERLAYS) {
    const c = coordinatorPod(rendered[o]).spec.containers[0];
    assert.deepEqual(c.command, ["r1-coordinator"]);
    check("r1-coordinator", c.args);
    const w = workers(rendered[o]).template.spec.containers[0];
    const split = w.args.indexOf("--");
    assert.ok(split > 0, "r1-worker's flags follow --");
    check("r1-worker-pod", w.args.slice(0, split));
    check("r1-worker", w.args.slice(split + 1));
  }
});

test("the renderer refuses what it does not implement", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "r1-kustomize-"));
  try {
    fs.writeFileSync(path.join(dir, "kustomization.yaml"), "resources: []\nnamePrefix: x-\n");
    assert.throws(() => k8s.renderKustomization(dir), /namePrefix.*not supported/);
    fs.writeFileSync(path.join(dir, "cm.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: v}\n");
    fs.writeFileSync(path.join(dir, "kustomization.yaml"),
                     "resources: [cm.yaml]\npatches:\n- target: {kind: ConfigMap, name: b}\n  patch: '[{op: replace, path: /data/k, value: w}]'\n");
    assert.throws(() => k8s.renderKustomization(dir), /no object matches/);
    fs.writeFileSync(path.join(dir, "kustomization.yaml"),
                     "resources: [cm.yaml]\npatches:\n- target: {kind: ConfigMap, name: a}\n  patch: '[{op: replace, path: /data/q, value: w}]'\n");
    assert.throws(() => k8s.renderKustomization(dir), /nothing there to replace/);
    fs.writeFileSync(path.join(dir, "kustomization.yaml"),
                     "resources: [cm.yaml]\npatches:\n- target: {kind: ConfigMap, name: a}\n  patch: '[{op: add, path: /data/q, value: w}]'\n");
    assert.deepEqual(k8s.renderKustomization(dir)[0].data, { k: "v", q: "w" });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
