// Process helpers for the deploy tests: start a command with its output captured, free loopback
// ports, bounded waits, and the process tree under a pid (from /proc) to prove nothing outlives a
// stop.
"use strict";
const fs = require("fs");
const net = require("net");
const { spawn } = require("child_process");

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// { proc, exited (resolves to the exit code, or the signal's name), output() }.
function launch(cmd, args, { env = process.env, cwd } = {}) {
  const proc = spawn(cmd, args, { env, cwd, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  proc.stdout.on("data", (d) => (out += d));
  proc.stderr.on("data", (d) => (out += d));
  const exited = new Promise((resolve) => {
    proc.on("exit", (code, signal) => resolve(code ?? signal));
    proc.on("error", (e) => {
      out += `spawn error: ${e.message}\n`;
      resolve("spawn-error");
    });
  });
  return { proc, exited, output: () => out };
}

// Polls `check` (sync or async; truthy ends the wait) every `every` ms for up to `ms`.
async function waitFor(check, ms, what, every = 100) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    const v = await check();
    if (v) return v;
    await sleep(every);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

// Resolves to the exit code, or throws after `ms`.
async function exitWithin(p, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not exit within ${ms} ms:\n${p.output().slice(-3000)}`)), ms);
  });
  try {
    return await Promise.race([p.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function readStat(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const rest = s.slice(s.lastIndexOf(")") + 2).split(" ");
    // Fields after the name: state, ppid, pgrp, session, ..., starttime is field 22 overall.
    return { pid, state: rest[0], ppid: Number(rest[1]), start: rest[19], cmd: readCmdline(pid) };
  } catch (e) {
    return null;
  }
}

function readCmdline(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean).join(" ");
  } catch (e) {
    return "";
  }
}

// Every live process under `root` (not `root` itself): [{pid, ppid, start, cmd}].
function descendants(root) {
  const all = fs.readdirSync("/proc").filter((d) => /^\d+$/.test(d)).map((d) => readStat(Number(d))).filter(Boolean);
  const out = [];
  const parents = new Set([root]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const p of all) {
      if (!parents.has(p.pid) && parents.has(p.ppid)) {
        parents.add(p.pid);
        out.push(p);
        grew = true;
      }
    }
  }
  return out;
}

// The processes of `list` still running: same pid and same start time, not a zombie.
function stillRunning(list) {
  return list.filter((p) => {
    const now = readStat(p.pid);
    return now && now.start === p.start && now.state !== "Z";
  });
}

module.exports = { sleep, freePort, launch, waitFor, exitWithin, descendants, stillRunning };
