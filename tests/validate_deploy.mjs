// validate_deploy: deploy/ checked without a cluster or a Docker daemon.
//   node tests/validate_deploy.mjs DEPLOY_DIR CONFIG_VARS_FILE RUNTIME_PACKAGES_FILE
// - k8s/: every resource kustomization.yaml names parses and validates against the
//   Kubernetes 1.27 schemas (kubernetes-models) or KEDA's (@kubernetes-models/keda);
//   then what a schema cannot see: selectors match the pod labels, references exist,
//   the grace period exceeds the worker's shutdown grace, probes hit /healthz and /readyz,
//   every environment key is a setting the worker knows, the Secret holds placeholders.
// - docker-compose.yml parses; services, dependencies and settings are coherent.
// - Dockerfile: the runtime stage installs every package in RUNTIME_PACKAGES_FILE (the
//   packages owning the libraries the built binaries link, from dpkg -S), runs as a
//   non-root user, stops on SIGTERM, checks /healthz.
// Exit 0 when all hold; 1 with one line per problem.
import { readFileSync, existsSync, readdirSync } from "node:fs";
import { join, dirname, resolve } from "node:path";
import { parseAllDocuments, parse } from "yaml";

const [dir, varsFile, pkgsFile] = process.argv.slice(2);
const problems = [];
const bad = (m) => problems.push(m);
const known = new Set(readFileSync(varsFile, "utf8").split(/\s+/).filter(Boolean));

// ---- Kubernetes ----
const modules = {
  "v1": "kubernetes-models/v1",
  "apps/v1": "kubernetes-models/apps/v1",
  "batch/v1": "kubernetes-models/batch/v1",
  "policy/v1": "kubernetes-models/policy/v1",
  "keda.sh/v1alpha1": "@kubernetes-models/keda/keda.sh/v1alpha1",
};
const k8s = join(dir, "k8s");
const kust = parse(readFileSync(join(k8s, "kustomization.yaml"), "utf8"));
if (kust?.kind !== "Kustomization") bad("k8s/kustomization.yaml: not a Kustomization");
const objs = [];
for (const f of kust?.resources ?? []) {
  const path = join(k8s, f);
  if (!existsSync(path)) { bad(`k8s/${f}: listed in kustomization.yaml, missing`); continue; }
  for (const doc of parseAllDocuments(readFileSync(path, "utf8"))) {
    if (doc.errors.length) { bad(`k8s/${f}: ${doc.errors[0].message}`); continue; }
    const o = doc.toJS();
    if (o == null) continue;
    const mod = modules[o.apiVersion];
    if (!mod) { bad(`k8s/${f}: apiVersion ${o.apiVersion} has no validator here`); continue; }
    const models = await import(mod);
    const Model = models[o.kind];
    if (!Model) { bad(`k8s/${f}: ${o.apiVersion} has no kind ${o.kind}`); continue; }
    try {
      new Model(o).validate();
    } catch (e) {
      bad(`k8s/${f}: ${o.kind} ${o.metadata?.name}: ${e.message}`);
      continue;
    }
    objs.push({ file: f, o });
  }
}
// k8s/variants/: alternatives to a base file (a TLS Redis's ScaledObject), each checked against
// its schema too
const variants = join(k8s, "variants");
for (const f of existsSync(variants) ? readdirSync(variants).filter((x) => x.endsWith(".yaml")) : []) {
  for (const doc of parseAllDocuments(readFileSync(join(variants, f), "utf8"))) {
    if (doc.errors.length) { bad(`k8s/variants/${f}: ${doc.errors[0].message}`); continue; }
    const o = doc.toJS();
    if (o == null) continue;
    const mod = modules[o.apiVersion];
    const Model = mod ? (await import(mod))[o.kind] : null;
    if (!Model) { bad(`k8s/variants/${f}: no validator for ${o.apiVersion} ${o.kind}`); continue; }
    try {
      new Model(o).validate();
    } catch (e) {
      bad(`k8s/variants/${f}: ${o.kind} ${o.metadata?.name}: ${e.message}`);
    }
  }
}
const find = (kind, name) => objs.find((x) => x.o.kind === kind && (!name || x.o.metadata.name === name))?.o;
const matches = (sel, labels) => Object.entries(sel ?? {}).every(([k, v]) => labels?.[k] === v);
const duration = (s) => { const m = /^(\d+)(ms|s|m|h)?$/.exec(String(s)); return m ? Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2] ?? "s"] : NaN; };

const dep = find("Deployment");
const cm = find("ConfigMap");
const secret = find("Secret");
for (const kind of ["Deployment", "ConfigMap", "Secret", "ServiceAccount", "Service", "PodDisruptionBudget", "ScaledObject", "CronJob"])
  if (!find(kind)) bad(`k8s: no ${kind}`);
for (const [k] of Object.entries({ ...cm?.data, ...secret?.stringData }))
  if (!known.has(k) && k !== "REDIS_PASSWORD") bad(`k8s: ${k} is not a setting the worker knows`);
for (const [k, v] of Object.entries(secret?.stringData ?? {}))
  if (!/CHANGE-ME/.test(v)) bad(`k8s: Secret ${k} must hold a CHANGE-ME placeholder, not a value`);
if (dep) {
  const pod = dep.spec.template;
  if (!matches(dep.spec.selector.matchLabels, pod.metadata.labels)) bad("Deployment: selector does not match its pod labels");
  const grace = duration(cm?.data?.WORKER_SHUTDOWN_GRACE ?? "25s");
  if (!(pod.spec.terminationGracePeriodSeconds > grace)) bad(`Deployment: terminationGracePeriodSeconds must exceed WORKER_SHUTDOWN_GRACE (${grace} s)`);
  const c = pod.spec.containers[0];
  if (c.livenessProbe?.httpGet?.path !== "/healthz") bad("Deployment: liveness probe must be /healthz");
  if (c.readinessProbe?.httpGet?.path !== "/readyz") bad("Deployment: readiness probe must be /readyz");
  if (!c.resources?.requests || !c.resources?.limits) bad("Deployment: resources requests and limits");
  if (!pod.spec.affinity?.podAntiAffinity) bad("Deployment: pod anti-affinity");
  if (!find("ServiceAccount", pod.spec.serviceAccountName)) bad(`Deployment: no ServiceAccount ${pod.spec.serviceAccountName}`);
  for (const e of c.envFrom ?? []) {
    if (e.configMapRef && !find("ConfigMap", e.configMapRef.name)) bad(`Deployment: no ConfigMap ${e.configMapRef.name}`);
    if (e.secretRef && !find("Secret", e.secretRef.name)) bad(`Deployment: no Secret ${e.secretRef.name}`);
  }
  const labels = pod.metadata.labels;
  for (const kind of ["Service", "PodDisruptionBudget"]) {
    const o = find(kind);
    const sel = kind === "Service" ? o?.spec.selector : o?.spec.selector.matchLabels;
    if (o && !matches(sel, labels)) bad(`${kind}: selector does not match the worker pods`);
  }
  const so = find("ScaledObject");
  if (so && so.spec.scaleTargetRef.name !== dep.metadata.name) bad("ScaledObject: scaleTargetRef is not the Deployment");
  for (const t of so?.spec.triggers ?? []) {
    if (t.type !== "redis-streams") bad(`ScaledObject: trigger ${t.type}`);
    if (t.metadata.stream !== `${cm?.data?.REDIS_PREFIX ?? "backup"}:jobs`) bad("ScaledObject: stream is not {REDIS_PREFIX}:jobs");
    if (t.metadata.consumerGroup !== "backup-workers") bad("ScaledObject: consumer group is not backup-workers");
  }
  if (!(so?.spec.triggers ?? []).some((t) => t.metadata.pendingEntriesCount)) bad("ScaledObject: no pendingEntriesCount trigger");
  if (!(so?.spec.minReplicaCount >= 1)) bad("ScaledObject: minReplicaCount must be at least 1");
  const sa = find("ServiceAccount");
  if (!sa?.metadata.annotations?.["eks.amazonaws.com/role-arn"]) bad("ServiceAccount: IRSA role annotation");
}
const cmds = objs.filter((x) => x.o.kind === "CronJob").map((x) => x.o.spec.jobTemplate.spec.template.spec.containers[0].command.join(" "));
if (!cmds.some((c) => c === "backupctl schedule")) bad("CronJob: none runs backupctl schedule");
if (!cmds.some((c) => c.startsWith("backupctl cleanup --all"))) bad("CronJob: none runs backupctl cleanup --all");

// ---- Compose ----
const composeText = readFileSync(join(dir, "docker-compose.yml"), "utf8");
const cdoc = parseAllDocuments(composeText);
if (cdoc.length !== 1 || cdoc[0].errors.length) bad(`docker-compose.yml: ${cdoc[0]?.errors[0]?.message ?? "not one document"}`);
const compose = cdoc[0]?.toJS() ?? {};
const svc = compose.services ?? {};
for (const s of ["redis", "postgres", "s3", "worker", "schedule"]) if (!svc[s]) bad(`compose: no service ${s}`);
for (const [name, s] of Object.entries(svc)) {
  for (const d of Object.keys(Array.isArray(s.depends_on) ? Object.fromEntries(s.depends_on.map((x) => [x, 1])) : s.depends_on ?? {}))
    if (!svc[d]) bad(`compose: ${name} depends on unknown service ${d}`);
  if (s.build && !existsSync(resolve(dir, s.build.context, s.build.dockerfile))) bad(`compose: ${name}: no ${s.build.dockerfile} in ${s.build.context}`);
  for (const v of s.volumes ?? []) {
    const src = typeof v === "string" ? v.split(":")[0] : v.source;
    if (src.startsWith(".") && !existsSync(resolve(dir, src))) bad(`compose: ${name}: no ${src}`);
  }
}
if (!JSON.stringify(svc.redis?.command ?? "").includes("appendonly")) bad("compose: Redis without AOF");
if (svc.worker?.deploy?.replicas !== 2) bad("compose: two workers");
if (!JSON.stringify(svc.schedule?.command ?? "").includes("schedule")) bad("compose: the one-shot runs backupctl schedule");
for (const k of Object.keys(svc.worker?.environment ?? {})) if (!known.has(k)) bad(`compose: ${k} is not a setting the worker knows`);

// ---- Dockerfile ----
const df = readFileSync(join(dir, "Dockerfile"), "utf8").replace(/\\\n/g, " ");
const stages = df.split(/^FROM /m);
const runtime = stages[stages.length - 1];
if (stages.length < 3) bad("Dockerfile: not multi-stage");
if (!/^debian:12/.test(stages[1]) || !/^debian:12-slim/.test(runtime)) bad("Dockerfile: Debian 12 build stage, Debian 12 slim runtime");
const installed = new Set((runtime.match(/apt-get install[^&\n]*/g) ?? []).join(" ").split(/\s+/).filter((w) => w && !w.startsWith("-") && !["apt-get", "install"].includes(w)));
for (const p of readFileSync(pkgsFile, "utf8").split(/\s+/).filter(Boolean))
  if (p !== "libc6" && !installed.has(p)) bad(`Dockerfile: the runtime stage lacks ${p} (the binaries link a library of it)`);
for (const p of installed) if (/-dev$/.test(p)) bad(`Dockerfile: ${p} in the runtime stage`);
if (!/^USER (?!root|0\b)\S+/m.test(runtime)) bad("Dockerfile: runtime must run as a non-root USER");
if (!/^STOPSIGNAL SIGTERM/m.test(runtime)) bad("Dockerfile: STOPSIGNAL SIGTERM");
if (!/^HEALTHCHECK .*\/healthz/m.test(runtime)) bad("Dockerfile: HEALTHCHECK on /healthz");
for (const b of ["backup-worker", "backupctl"]) if (!df.includes(b)) bad(`Dockerfile: ${b} not in the image`);
for (const m of df.matchAll(/^COPY (?!--from)(.+)$/gm)) {
  const parts = m[1].trim().split(/\s+/).slice(0, -1);
  for (const p of parts) if (!existsSync(resolve(dir, "..", p))) bad(`Dockerfile: COPY ${p}: no such path in the repository`);
}

for (const p of problems) console.log(p);
console.log(`validate_deploy: ${objs.length} Kubernetes objects, ${Object.keys(svc).length} Compose services, ${installed.size} runtime packages; ${problems.length} problem(s)`);
process.exit(problems.length ? 1 : 0);
