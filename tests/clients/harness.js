// Starts the server under test (R1_TEST_SERVER: r1_fake_server, or `r1` with
// R1_TEST_SERVER_ARGS=serve) on a free loopback port with the model folder R1_TEST_MODEL, and hands
// the tests its URL; loads the npm clients from tests/js.
"use strict";
const { spawn } = require("child_process");
const path = require("path");
const { createRequire } = require("module");

const jsRequire = createRequire(path.resolve(__dirname, "..", "js", "package.json"));

function requireClient(name) {
  try {
    return jsRequire(name);
  } catch (e) {
    throw new Error(`npm package ${name} is missing: run npm ci --prefix tests/js (${e.message})`);
  }
}

// Resolves to { url, proc, output(), stop() }; stop() sends SIGTERM and resolves to the exit code.
function startServer(args = [], env = {}) {
  const server = process.env.R1_TEST_SERVER;
  const model = process.env.R1_TEST_MODEL;
  if (!server || !model) throw new Error("R1_TEST_SERVER and R1_TEST_MODEL must be set (run through ctest)");
  // R1_TEST_SERVER_ARGS: words before the flags ("serve" when the server is `r1 serve`).
  const prefix = (process.env.R1_TEST_SERVER_ARGS || "").split(" ").filter(Boolean);
  const proc = spawn(server, [...prefix, "--model", model, "--listen", "127.0.0.1:0", ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  const exited = new Promise((resolve) => proc.on("exit", (code, signal) => resolve(code ?? signal)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${out}`)), 20000);
    const onData = (d) => {
      out += d.toString();
      const m = out.match(/listening on (http:\/\/\S+)/);
      if (m && timer) {
        clearTimeout(timer);
        resolve({
          url: m[1],
          proc,
          output: () => out,
          exited,
          stop: async () => {
            if (proc.exitCode === null) proc.kill("SIGTERM");
            return exited;
          },
        });
      }
    };
    proc.stdout.on("data", onData);
    proc.stderr.on("data", onData);
    proc.on("exit", (code) => reject(new Error(`server exited with ${code}:\n${out}`)));
  });
}

async function postJson(url, body, headers = {}) {
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" || body instanceof Uint8Array ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch (e) {
    // not JSON
  }
  return { status: res.status, text, json, headers: res.headers };
}

module.exports = { startServer, requireClient, postJson };
