// Kubernetes helpers for the deploy tests: render a kustomization (the subset deploy/k8s uses),
// validate objects against the Kubernetes API schemas, and work out what a container would run.
//
// Rendering: `resources` (files and folders) and `patches` (RFC 6902 JSON patches with a target).
// Any other kustomization field is refused, so nothing is silently left out; where kubectl
// (kustomize v4 or newer) is installed the tests also render with it and compare.
//
// Validation, two layers:
//  - kubernetes-models (npm): the API's OpenAPI schemas compiled to validators: types, required
//    fields, enums, formats.
//  - unknown fields, as `kubectl apply --validate=strict` refuses them: kubernetes-models' type
//    declarations (.d.ts, generated from the same OpenAPI schemas) list every field of every
//    type; each object's keys are checked against them, recursively.
// Custom resources (the LeaderWorkerSet) are checked against their CRD's openAPIV3Schema with Ajv.
"use strict";
const fs = require("fs");
const path = require("path");
const { pathToFileURL } = require("url");
const { createRequire } = require("module");

const JS_DIR = path.resolve(__dirname, "..", "js");
const jsRequire = createRequire(path.join(JS_DIR, "package.json"));

function requirePackage(name) {
  try {
    return jsRequire(name);
  } catch (e) {
    throw new Error(`npm package ${name} is missing: run npm ci --prefix tests/js (${e.message})`);
  }
}

const YAML = requirePackage("yaml");

function parseYamlDocuments(text, where) {
  const docs = YAML.parseAllDocuments(text);
  const out = [];
  for (const d of docs) {
    if (d.errors.length) throw new Error(`${where}: ${d.errors[0].message}`);
    const v = d.toJS();
    if (v !== null && v !== undefined) out.push(v);
  }
  return out;
}

// ---- RFC 6902 JSON patch -----------------------------------------------------------------------

function pointerTokens(pointer) {
  if (pointer === "") return [];
  if (!pointer.startsWith("/")) throw new Error(`JSON pointer '${pointer}' does not start with /`);
  return pointer.slice(1).split("/").map((t) => t.replace(/~1/g, "/").replace(/~0/g, "~"));
}

function applyJsonPatch(doc, ops, where) {
  for (const op of ops) {
    const tokens = pointerTokens(op.path);
    if (tokens.length === 0) throw new Error(`${where}: patching the whole document is not supported`);
    const last = tokens.pop();
    let parent = doc;
    for (const t of tokens) {
      if (parent === null || typeof parent !== "object" || !(t in parent)) {
        throw new Error(`${where}: ${op.op} ${op.path}: '${t}' does not exist`);
      }
      parent = parent[t];
    }
    const isArray = Array.isArray(parent);
    const index = isArray ? (last === "-" ? parent.length : Number(last)) : null;
    if (isArray && !(Number.isInteger(index) && index >= 0 && index <= parent.length)) {
      throw new Error(`${where}: ${op.op} ${op.path}: bad array index`);
    }
    const exists = isArray ? index < parent.length : Object.prototype.hasOwnProperty.call(parent, last);
    switch (op.op) {
      case "add":
        if (isArray) parent.splice(index, 0, op.value);
        else parent[last] = op.value;
        break;
      case "replace":
        if (!exists) throw new Error(`${where}: replace ${op.path}: nothing there to replace`);
        if (isArray) parent[index] = op.value;
        else parent[last] = op.value;
        break;
      case "remove":
        if (!exists) throw new Error(`${where}: remove ${op.path}: nothing there to remove`);
        if (isArray) parent.splice(index, 1);
        else delete parent[last];
        break;
      case "test":
        if (JSON.stringify(isArray ? parent[index] : parent[last]) !== JSON.stringify(op.value)) {
          throw new Error(`${where}: test ${op.path} failed`);
        }
        break;
      default:
        throw new Error(`${where}: JSON patch op '${op.op}' is not supported`);
    }
  }
}

// ---- Kustomize (the subset deploy/k8s uses) ---------------------------------------------------

function groupOf(apiVersion) {
  return apiVersion.includes("/") ? apiVersion.split("/")[0] : "";
}

function matchesTarget(obj, target) {
  if (target.kind && obj.kind !== target.kind) return false;
  if (target.name && obj.metadata?.name !== target.name) return false;
  if (target.group !== undefined && groupOf(obj.apiVersion) !== target.group) return false;
  if (target.version && obj.apiVersion.split("/").pop() !== target.version) return false;
  return true;
}

const KUSTOMIZATION_FIELDS = new Set(["apiVersion", "kind", "resources", "patches"]);

// The objects `kubectl kustomize dir` prints, in kustomize's resource order.
function renderKustomization(dir) {
  const file = path.join(dir, "kustomization.yaml");
  const [k] = parseYamlDocuments(fs.readFileSync(file, "utf8"), file);
  for (const key of Object.keys(k)) {
    if (!KUSTOMIZATION_FIELDS.has(key)) throw new Error(`${file}: field '${key}' is not supported by this renderer`);
  }
  let objects = [];
  for (const r of k.resources || []) {
    const p = path.resolve(dir, r);
    if (!fs.existsSync(p)) throw new Error(`${file}: resource ${r} does not exist`);
    if (fs.statSync(p).isDirectory()) objects.push(...renderKustomization(p));
    else objects.push(...parseYamlDocuments(fs.readFileSync(p, "utf8"), p));
  }
  const ids = new Set();
  for (const o of objects) {
    const id = `${o.apiVersion} ${o.kind} ${o.metadata?.name}`;
    if (ids.has(id)) throw new Error(`${file}: ${id} appears twice`);
    ids.add(id);
  }
  for (const p of k.patches || []) {
    const where = `${file}: patch ${p.path || "(inline)"}`;
    if (!p.target) throw new Error(`${where}: only patches with a target are supported`);
    const text = p.path ? fs.readFileSync(path.resolve(dir, p.path), "utf8") : p.patch;
    const ops = YAML.parse(text);
    if (!Array.isArray(ops)) throw new Error(`${where}: only JSON 6902 patches (a list of ops) are supported`);
    const hits = objects.filter((o) => matchesTarget(o, p.target));
    if (hits.length === 0) throw new Error(`${where}: no object matches ${JSON.stringify(p.target)}`);
    for (const o of hits) applyJsonPatch(o, ops, where);
  }
  return objects;
}

// ---- Schemas ------------------------------------------------------------------------------------

const MODELS_DIR = path.join(JS_DIR, "node_modules", "kubernetes-models");
const NODE_MODULES = path.join(JS_DIR, "node_modules");

async function modelClass(apiVersion, kind) {
  const dir = apiVersion.includes("/") ? apiVersion : `v1`;  // core group lives under v1/
  const file = path.join(MODELS_DIR, dir, `${kind}.js`);
  if (!fs.existsSync(file)) return null;
  const mod = await import(pathToFileURL(file).href);
  return mod[kind];
}

// Parses one kubernetes-models declaration file: { fields: {name: {ref, array}} } for the file's
// interface, or null when the type is a primitive alias (Quantity, IntOrString, Time ...).
const declarationCache = new Map();
function readDeclaration(file) {
  if (declarationCache.has(file)) return declarationCache.get(file);
  const text = fs.readFileSync(file, "utf8");
  const imports = new Map();
  for (const m of text.matchAll(/^import \{ (\w+) \} from "([^"]+)";$/gm)) imports.set(m[1], m[2]);
  const start = text.search(/^export interface \w+ (extends TypeMeta )?\{$/m);
  let result = null;
  if (start >= 0) {
    const fields = {};
    // TypeMeta (kubernetes-models/base) is apiVersion and kind.
    if (/^export interface \w+ extends TypeMeta \{$/m.test(text)) fields.apiVersion = fields.kind = {};
    let depth = 0;
    let i = text.indexOf("{", start);
    let line = "";
    for (; i < text.length; i++) {
      const c = text[i];
      if (c === "{") depth++;
      if (c === "}") {
        depth--;
        if (depth === 0) break;
      }
      line += c;
      if (c === ";" && depth === 1) {
        const m = line.replace(/\/\*\*[\s\S]*?\*\//g, "").match(/"([^"]+)"\??:\s*([\s\S]*);$/);
        if (m) {
          const type = m[2].trim();
          const ref = type.match(/^(Array<)?(IIoK8s\w+)>?$/);
          fields[m[1]] = ref ? { array: Boolean(ref[1]), ref: resolveImport(file, imports.get(ref[2])) } : { free: /^\{|^Array<\{/.test(type) };
        }
        line = "";
      }
    }
    result = { fields };
  }
  declarationCache.set(file, result);
  return result;
}

function resolveImport(fromFile, spec) {
  if (!spec) return null;
  if (spec.startsWith(".")) return path.resolve(path.dirname(fromFile), spec.replace(/\.js$/, ".d.ts"));
  return path.join(NODE_MODULES, `${spec}.d.ts`);
}

// Fields the API does not know, as JSON pointers (empty: none). `free` maps (labels, data, ...)
// and inline object types are not looked into.
function unknownFields(value, declarationFile, where = "") {
  const decl = declarationFile ? readDeclaration(declarationFile) : null;
  if (!decl || value === null || typeof value !== "object" || Array.isArray(value)) return [];
  const out = [];
  for (const [key, v] of Object.entries(value)) {
    const f = decl.fields[key];
    if (!f) {
      out.push(`${where}/${key}`);
      continue;
    }
    if (!f.ref) continue;
    if (f.array && Array.isArray(v)) v.forEach((item, i) => out.push(...unknownFields(item, f.ref, `${where}/${key}/${i}`)));
    else if (!f.array) out.push(...unknownFields(v, f.ref, `${where}/${key}`));
  }
  return out;
}

function declarationFor(apiVersion, kind) {
  const dir = apiVersion.includes("/") ? apiVersion : "v1";
  const file = path.join(MODELS_DIR, dir, `${kind}.d.ts`);
  return fs.existsSync(file) ? file : null;
}

const POD_TEMPLATE = declarationFor("v1", "PodTemplateSpec");
const OBJECT_META = path.join(NODE_MODULES, "@kubernetes-models", "apimachinery", "apis", "meta", "v1", "ObjectMeta.d.ts");

// Custom resources: the CRD (its openAPIV3Schema) and the JSON pointers of the PodTemplateSpec
// fields in its objects, which are checked against the core schema.
function loadCrd(file, podTemplates) {
  const [crd] = parseYamlDocuments(fs.readFileSync(file, "utf8"), file);
  return { crd, podTemplates };
}

// Ajv for a structural CRD schema: Kubernetes' vendor keywords are accepted, and
// x-kubernetes-int-or-string is honoured.
const crdValidators = new Map();
function crdValidator(schema) {
  if (crdValidators.has(schema)) return crdValidators.get(schema);
  const Ajv = requirePackage("ajv");
  const ajv = new Ajv({ allErrors: true, strict: false });
  ajv.addFormat("int32", { type: "number", validate: (x) => Number.isInteger(x) && x >= -(2 ** 31) && x < 2 ** 31 });
  ajv.addFormat("int64", { type: "number", validate: (x) => Number.isInteger(x) });
  ajv.addKeyword({
    keyword: "x-kubernetes-int-or-string",
    validate: (on, data) => !on || Number.isInteger(data) || typeof data === "string",
    errors: false,
  });
  for (const k of ["x-kubernetes-preserve-unknown-fields", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
                   "x-kubernetes-map-type", "x-kubernetes-embedded-resource"]) {
    ajv.addKeyword({ keyword: k });
  }
  const validate = ajv.compile(schema);
  crdValidators.set(schema, validate);
  return validate;
}

// Structural schemas drop unknown fields unless preserved; the API server (strict validation)
// reports them. Walks the object and the schema together.
function unknownCrdFields(value, schema, where = "") {
  if (!schema || value === null || typeof value !== "object") return [];
  if (schema["x-kubernetes-preserve-unknown-fields"]) return [];
  const out = [];
  if (Array.isArray(value)) {
    value.forEach((v, i) => out.push(...unknownCrdFields(v, schema.items, `${where}/${i}`)));
    return out;
  }
  for (const [k, v] of Object.entries(value)) {
    if (schema.properties && schema.properties[k]) out.push(...unknownCrdFields(v, schema.properties[k], `${where}/${k}`));
    else if (schema.additionalProperties) out.push(...unknownCrdFields(v, schema.additionalProperties, `${where}/${k}`));
    else out.push(`${where}/${k}`);
  }
  return out;
}

function getPointer(obj, pointer) {
  let v = obj;
  for (const t of pointerTokens(pointer)) v = v?.[t];
  return v;
}

// Every problem found with one object, as strings (empty: valid). `crds`: kind -> loadCrd().
async function validateObject(obj, crds = {}) {
  const id = `${obj.kind}/${obj.metadata?.name}`;
  if (!obj.apiVersion || !obj.kind || !obj.metadata?.name) return [`${id}: apiVersion, kind and metadata.name are required`];
  const problems = [];
  const crd = crds[obj.kind];
  if (crd) {
    const version = crd.crd.spec.versions.find((v) => `${crd.crd.spec.group}/${v.name}` === obj.apiVersion);
    if (!version) return [`${id}: ${obj.apiVersion} is not served by the ${obj.kind} CRD`];
    const schema = version.schema.openAPIV3Schema;
    const validate = crdValidator(schema);
    if (!validate(obj)) {
      for (const e of validate.errors) problems.push(`${id}${e.instancePath}: ${e.message} ${JSON.stringify(e.params)}`);
    }
    // The API server checks every object's metadata as ObjectMeta, whatever the CRD says.
    const { metadata, ...rest } = obj;
    for (const f of [...unknownFields(metadata, OBJECT_META, "/metadata"), ...unknownCrdFields(rest, schema)]) {
      problems.push(`${id}${f}: unknown field`);
    }
    const { PodTemplateSpec } = await import(pathToFileURL(path.join(MODELS_DIR, "v1", "PodTemplateSpec.js")).href);
    for (const pointer of crd.podTemplates) {
      const template = getPointer(obj, pointer);
      if (template === undefined) continue;
      problems.push(...(await validateWith(PodTemplateSpec, template, `${id}${pointer}`)));
      for (const f of unknownFields(template, POD_TEMPLATE)) problems.push(`${id}${pointer}${f}: unknown field`);
    }
    return problems;
  }
  const Model = await modelClass(obj.apiVersion, obj.kind);
  if (!Model) return [`${id}: no schema for ${obj.apiVersion} ${obj.kind}`];
  problems.push(...(await validateWith(Model, obj, id)));
  for (const f of unknownFields(obj, declarationFor(obj.apiVersion, obj.kind))) problems.push(`${id}${f}: unknown field`);
  return problems;
}

async function validateWith(Model, data, id) {
  try {
    new Model(data).validate();
    return [];
  } catch (e) {
    return [`${id}: ${e.message}`];
  }
}

// ---- What a container runs --------------------------------------------------------------------

// The container's environment as the kubelet builds it: envFrom ConfigMaps, then env entries
// (plain values, ConfigMap/Secret keys, and `fieldRefs` given by the caller for the downward API).
function containerEnv(container, objects, { fieldRefs = {}, secrets = {} } = {}) {
  const env = {};
  const configMap = (name) => objects.find((o) => o.kind === "ConfigMap" && o.metadata.name === name);
  for (const from of container.envFrom || []) {
    if (from.configMapRef) {
      const cm = configMap(from.configMapRef.name);
      if (!cm && !from.configMapRef.optional) throw new Error(`ConfigMap ${from.configMapRef.name} is not rendered`);
      Object.assign(env, cm?.data || {});
    } else {
      throw new Error(`envFrom ${JSON.stringify(from)} is not supported here`);
    }
  }
  for (const e of container.env || []) {
    if ("value" in e) env[e.name] = expand(e.value, env);
    else if (e.valueFrom?.fieldRef) {
      const v = fieldRefs[e.valueFrom.fieldRef.fieldPath];
      if (v === undefined) throw new Error(`no value given for fieldRef ${e.valueFrom.fieldRef.fieldPath}`);
      env[e.name] = v;
    } else if (e.valueFrom?.configMapKeyRef) {
      const ref = e.valueFrom.configMapKeyRef;
      const v = configMap(ref.name)?.data?.[ref.key];
      if (v === undefined && !ref.optional) throw new Error(`ConfigMap key ${ref.name}/${ref.key} is missing`);
      if (v !== undefined) env[e.name] = v;
    } else if (e.valueFrom?.secretKeyRef) {
      const ref = e.valueFrom.secretKeyRef;
      const v = secrets[ref.name]?.[ref.key];
      if (v === undefined && !ref.optional) throw new Error(`Secret key ${ref.name}/${ref.key} is missing`);
      if (v !== undefined) env[e.name] = v;
    } else {
      throw new Error(`env ${e.name}: source not supported here`);
    }
  }
  return env;
}

// Kubernetes' $(VAR) expansion in command and args: $(VAR) of a defined variable is replaced,
// $$ is a literal $, anything else stays as written.
function expand(text, env) {
  return text.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, name) => {
    if (m === "$$") return "$";
    return name in env ? env[name] : m;
  });
}

// The variables $(VAR) in a container's command and args that its environment does not define.
function undefinedReferences(container, env) {
  const missing = [];
  for (const word of [...(container.command || []), ...(container.args || [])]) {
    for (const m of word.matchAll(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g)) if (!(m[1] in env)) missing.push(m[1]);
  }
  return missing;
}

module.exports = {
  YAML,
  requirePackage,
  parseYamlDocuments,
  applyJsonPatch,
  renderKustomization,
  validateObject,
  loadCrd,
  containerEnv,
  expand,
  undefinedReferences,
  getPointer,
};
