// deploy/docker/Dockerfile without building it (no Docker daemon or registry here): every file it
// copies from the repository exists and is not excluded from the build context; every file it
// copies out of the build stage is one the build stage makes (a CMake target built there, at the
// path CMake puts it: checked against this build tree, which has the same layout); the build uses
// scripts/install-deps.sh and the configure line of scripts/test.sh; the coordinator image has no
// CUDA; the commands the Kubernetes manifests run are installed on the images' PATH; and
// runtime-packages.sh, which picks the runtime images' packages, finds the real ones for the real
// binaries here.
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("fs");
const path = require("path");
const { execFileSync, spawnSync } = require("child_process");
const k8s = require("./k8s.js");

const ROOT = path.resolve(__dirname, "..", "..");
const DOCKERFILE = path.join(ROOT, "deploy", "docker", "Dockerfile");
const BUILD = process.env.R1_TEST_BUILD_DIR;

// Instructions with continuation lines joined and comments dropped, grouped by stage.
function parseDockerfile(text) {
  const lines = text.split("\n").filter((l) => !/^\s*#/.test(l));
  const instructions = [];
  let current = "";
  for (const line of lines) {
    current += line.replace(/\\$/, " ");
    if (!/\\$/.test(line)) {
      if (current.trim()) instructions.push(current.trim().replace(/\s+/g, " "));
      current = "";
    }
  }
  const stages = [];
  for (const ins of instructions) {
    const [op, ...rest] = ins.split(" ");
    if (op === "FROM") {
      const m = ins.match(/^FROM (\S+)(?: AS (\S+))?$/i);
      stages.push({ image: m[1], name: m[2], instructions: [] });
    } else if (stages.length) {
      stages[stages.length - 1].instructions.push({ op, args: rest.join(" ") });
    }
  }
  return stages;
}

function dockerignore() {
  const file = `${DOCKERFILE}.dockerignore`;
  return fs.readFileSync(file, "utf8").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
}

// Docker's ignore patterns (the forms used here: names, `*` within a name, leading `**/`).
function ignored(relPath, patterns) {
  const parts = relPath.split("/");
  return patterns.some((p) => {
    const anyDepth = p.startsWith("**/");
    const re = new RegExp(`^${p.replace(/^\*\*\//, "").replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, "[^/]*")}$`);
    if (anyDepth) return parts.some((_, i) => re.test(parts.slice(i).join("/")) || re.test(parts[i]));
    return re.test(parts[0]) || re.test(relPath);
  });
}

const stages = parseDockerfile(fs.readFileSync(DOCKERFILE, "utf8"));
const stage = (name) => stages.find((s) => s.name === name);
const runs = (s) => s.instructions.filter((i) => i.op === "RUN").map((i) => i.args);
const copies = (s) => s.instructions.filter((i) => i.op === "COPY").map((i) => {
  const words = i.args.split(" ");
  const from = words.find((w) => w.startsWith("--from="));
  const paths = words.filter((w) => !w.startsWith("--"));
  return { from: from && from.slice(7), sources: paths.slice(0, -1), dest: paths[paths.length - 1] };
});

test("stages: a CUDA development image builds, the worker runs on CUDA's runtime, the coordinator without CUDA", () => {
  assert.deepEqual(stages.map((s) => s.name), ["build", "worker", "coordinator"]);
  assert.match(stage("build").image, /^nvidia\/cuda:\$\{CUDA_VERSION\}-devel-/);
  assert.match(stage("worker").image, /^nvidia\/cuda:\$\{CUDA_VERSION\}-runtime-/);
  assert.doesNotMatch(stage("coordinator").image, /cuda/i);
  const configure = runs(stage("build")).join(" && ");
  assert.match(configure, /cmake -S \. -B build-gpu -G Ninja -DR1_CUDA=on /);
  assert.match(configure, /cmake -S \. -B build-cpu -G Ninja -DR1_CUDA=off /);
});

test("every file copied from the repository exists and is in the build context", () => {
  const patterns = dockerignore();
  // The ignore file does keep the build trees and the npm packages out.
  for (const p of ["build", "build-deploy", "tests/js/node_modules", ".git"]) assert.ok(ignored(p, patterns), p);
  let count = 0;
  for (const s of stages) {
    for (const c of copies(s).filter((c) => !c.from)) {
      for (const src of c.sources) {
        const rel = src === "." ? "" : src.replace(/\/$/, "");
        if (rel) {
          assert.ok(fs.existsSync(path.join(ROOT, rel)), `COPY ${src}: missing`);
          assert.ok(!ignored(rel, patterns), `COPY ${src}: excluded by Dockerfile.dockerignore`);
        }
        count++;
      }
    }
  }
  assert.ok(count >= 3);
  // What the build stage runs from the context is there too.
  for (const script of ["scripts/install-deps.sh", "deploy/docker/runtime-packages.sh"]) {
    assert.ok(runs(stage("build")).some((r) => r.includes(script)), script);
    assert.ok(fs.statSync(path.join(ROOT, script)).mode & 0o111, `${script} is executable`);
    assert.ok(!ignored(script, patterns));
  }
});

test("the build commands are scripts/'s: install-deps.sh, then CMake with Ninja as scripts/test.sh", () => {
  const build = runs(stage("build"));
  assert.match(build[0], /^scripts\/install-deps\.sh( |$)/, "dependencies from the same script as CI");
  const testScript = fs.readFileSync(path.join(ROOT, "scripts", "test.sh"), "utf8");
  assert.match(testScript, /scripts\/install-deps\.sh/);
  const ciConfigure = testScript.match(/cmake -S \. -B (\S+) -G Ninja/);
  assert.ok(ciConfigure, "scripts/test.sh configures with cmake -S . -B DIR -G Ninja");
  for (const r of build.filter((r) => r.includes("cmake -S"))) assert.match(r, /cmake -S \. -B \S+ -G Ninja -DR1_CUDA=(on|off)/);
});

test("every binary copied out of the build stage is a CMake target built there, at CMake's path", () => {
  assert.ok(BUILD, "R1_TEST_BUILD_DIR must be set (run through ctest)");
  const built = {};  // build dir -> targets
  for (const r of runs(stage("build"))) {
    for (const m of r.matchAll(/cmake --build (\S+) \S* ?--target ((?:[\w.-]+ ?)+)/g)) {
      built[m[1]] = (built[m[1]] || []).concat(m[2].trim().split(" "));
    }
  }
  const made = runs(stage("build")).flatMap((r) => [...r.matchAll(/> (\/\S+)/g)].map((m) => m[1]));
  let binaries = 0;
  for (const s of [stage("worker"), stage("coordinator")]) {
    for (const c of copies(s).filter((c) => c.from === "build")) {
      const src = c.sources[0];
      if (made.includes(src)) continue;  // a file a RUN line writes
      const m = src.match(/^\/src\/(build-[a-z]+)\/(.+)$/);
      assert.ok(m, `COPY --from=build ${src}: not in a build folder`);
      const target = path.basename(m[2]);
      assert.ok((built[m[1]] || []).includes(target), `${src}: ${target} is not built in ${m[1]}`);
      // Same CMake layout here: the target's file is at that path in this build tree.
      const here = path.join(BUILD, m[2]);
      assert.ok(fs.existsSync(here) && fs.statSync(here).mode & 0o111, `${m[2]} is not where CMake puts ${target}`);
      const q = spawnSync("ninja", ["-C", BUILD, "-t", "query", target], { encoding: "utf8" });
      assert.equal(q.status, 0, `${target} is a build target: ${q.stderr}`);
      binaries++;
    }
  }
  assert.equal(binaries, 4, "r1-worker and r1 in the worker image, r1-coordinator and r1 in the coordinator image");
});

test("the commands and ports the Kubernetes manifests use are in the images", () => {
  const objects = k8s.renderKustomization(path.join(ROOT, "deploy", "k8s", "overlays", "two-nodes"));
  const header = fs.readFileSync(DOCKERFILE, "utf8");
  const installed = (s) => copies(s).map((c) => c.dest).filter((d) => d.startsWith("/usr/local/bin/")).map((d) => path.basename(d));
  const pods = [
    objects.find((o) => o.kind === "Deployment").spec.template,
    objects.find((o) => o.kind === "LeaderWorkerSet").spec.leaderWorkerTemplate.workerTemplate,
  ];
  for (const pod of pods) {
    for (const c of pod.spec.containers) {
      const image = c.image.split(":")[0];
      const m = header.match(new RegExp(`--target (\\w+) +-t ${image} `));
      assert.ok(m, `image ${image} is built by the Dockerfile (docker build --target ... -t ${image})`);
      assert.ok(installed(stage(m[1])).includes(c.command[0]), `${c.command[0]} is in the ${m[1]} image`);
    }
  }
  const expose = stage("coordinator").instructions.find((i) => i.op === "EXPOSE").args.split(" ").map(Number).sort();
  const ports = pods[0].spec.containers[0].ports.map((p) => p.containerPort).sort();
  assert.deepEqual(expose, ports);
});

test("runtime-packages.sh finds the packages of the real binaries", () => {
  const script = path.join(ROOT, "deploy", "docker", "runtime-packages.sh");
  const run = (...bins) => execFileSync(script, bins.map((b) => path.join(BUILD, b)), { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] })
    .trim().split("\n");
  const coordinator = run("coordinator/pool/r1-coordinator", "cli/r1");
  const worker = run("worker/r1-worker", "cli/r1");
  for (const pkgs of [coordinator, worker]) {
    assert.ok(pkgs.some((p) => /^libgrpc\+\+/.test(p)), pkgs.join(" "));
    assert.ok(pkgs.some((p) => /^libprotobuf\d/.test(p)));
    assert.ok(pkgs.some((p) => /^libabsl\d/.test(p)));
    // Each is a package installed here.
    const q = spawnSync("dpkg-query", ["-W", "-f", "${Package} ${Status}\n", ...pkgs], { encoding: "utf8" });
    assert.equal(q.status, 0, q.stderr);
    assert.equal(q.stdout.trim().split("\n").filter((l) => / install ok installed$/.test(l)).length, pkgs.length);
  }
  assert.ok(worker.some((p) => /^libopenmpi\d/.test(p)), "the worker links MPI");
  assert.ok(!coordinator.some((p) => /openmpi|cuda|nccl|cublas/.test(p)), `the coordinator needs neither MPI nor CUDA: ${coordinator.join(" ")}`);
  const bad = spawnSync(script, [path.join(ROOT, "deploy", "docker", "Dockerfile")], { encoding: "utf8" });
  assert.equal(bad.status, 2, "a file that is not an executable is refused");
});
