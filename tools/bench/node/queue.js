// Queue benchmark: backup-worker's `ping` jobs next to a BullMQ worker doing
// the equivalent no-op job, on the same Redis, in the same run.
//
//   node tools/bench/node/queue.js BACKUP_WORKER [--jobs N] [--latency M] [--concurrency C] [--ours]
//
// --ours: backup-worker alone (tools/bench/redis.sh runs it on plain and TLS Redis side by side).
// REDIS_URL may be rediss:// (REDIS_CA_FILE: the CA, for the worker and ioredis alike).
//
// Throughput: N jobs are enqueued first, then one worker process drains them;
// jobs/s = N / (last finish - first start). Pickup latency: M jobs enqueued one
// at a time into an idle worker; enqueue -> job start, p50/p99. For
// backup-worker the start is seen through its `started` event on pub/sub (one
// extra hop back to this process); for BullMQ inside the processor (no hop),
// which favours BullMQ slightly.
'use strict';
const { spawn } = require('child_process');
const { performance } = require('perf_hooks');
const IORedis = require('ioredis');
const { Queue, Worker } = require('bullmq');

const args = process.argv.slice(2);
const WORKER = args[0];
const opt = (name, def) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : def;
};
const N = opt('--jobs', 20000);
const M = opt('--latency', 2000);
const C = opt('--concurrency', 8);
const ONLY_OURS = args.includes('--ours');
const URL = process.env.REDIS_URL;
const TLS = URL && URL.startsWith('rediss://')
  ? { tls: { ca: process.env.REDIS_CA_FILE ? require('fs').readFileSync(process.env.REDIS_CA_FILE) : undefined } }
  : {};
if (!WORKER || !URL) {
  console.error('usage: REDIS_URL=... node queue.js BACKUP_WORKER [--jobs N] [--latency M] [--concurrency C]');
  process.exit(2);
}
const USER = '0b7d7c1e-4a2b-4c3d-8e9f-0123456789ab';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.now();
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

async function ours() {
  const P = `benchq${process.pid}`;
  const r = new IORedis(URL, TLS);
  for (let i = 0; i < N; i += 1000) {
    const pipe = r.pipeline();
    for (let j = i; j < Math.min(N, i + 1000); j++) pipe.xadd(`${P}:jobs`, '*', 'type', 'ping', 'job_id', `t${j}`);
    await pipe.exec();
  }
  const env = {
    ...process.env,
    REDIS_PREFIX: P,
    WORKER_CONCURRENCY: String(C),
    WORKER_HTTP_PORT: '0',
    EVENTS_MAXLEN: String(4 * N + 10 * M),
    LOG_LEVEL: 'warn',
  };
  const child = spawn(WORKER, [], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  // drained: every entry read and acknowledged (a cheap check, so polling does not load Redis)
  const drained = async () => {
    const groups = await r.xinfo('GROUPS', `${P}:jobs`).catch(() => []);
    for (const g of groups) {
      const f = {};
      for (let i = 0; i < g.length; i += 2) f[g[i]] = g[i + 1];
      if (f.name === 'backup-workers') return f.lag === 0 && f.pending === 0;
    }
    return false;
  };
  const deadline = Date.now() + 300000;
  while (!(await drained())) {
    if (Date.now() > deadline) throw new Error('backup-worker did not drain the queue in 300 s');
    await sleep(50);
  }
  const span = await r.eval(
    `local lo, hi = math.huge, 0 for i = 0, tonumber(ARGV[2]) - 1 do
       local k = ARGV[1] .. ':job:t' .. i
       lo = math.min(lo, tonumber(redis.call('HGET', k, 'started_at')))
       hi = math.max(hi, tonumber(redis.call('HGET', k, 'finished_at'))) end
     return hi - lo`, 0, P, N);
  const throughput = N / (Math.max(span, 1) / 1000);

  // latency: one job at a time into the idle worker
  const sub = new IORedis(URL, TLS);
  const waiting = new Map();
  await sub.subscribe(`${P}:progress:${USER}`);
  sub.on('message', (_ch, msg) => {
    const ev = JSON.parse(msg);
    if (ev.event === 'started' && waiting.has(ev.job_id)) waiting.get(ev.job_id)(now());
  });
  const lat = [];
  for (let i = 0; i < M; i++) {
    const id = `l${i}`;
    const started = new Promise((res) => waiting.set(id, res));
    const t0 = now();
    await r.xadd(`${P}:jobs`, '*', 'type', 'ping', 'user_id', USER, 'job_id', id);
    lat.push((await started) - t0);
    waiting.delete(id);
    await sleep(1);
  }
  child.kill('SIGTERM');
  await new Promise((res) => child.on('exit', res));
  const keys = await r.keys(`${P}*`);
  for (let i = 0; i < keys.length; i += 1000) await r.del(...keys.slice(i, i + 1000));
  sub.disconnect();
  r.disconnect();
  return { throughput, span, p50: pct(lat, 50), p99: pct(lat, 99) };
}

async function bullmq() {
  const name = `benchbull${process.pid}`;
  const connection = new IORedis(URL, { maxRetriesPerRequest: null });
  const queue = new Queue(name, { connection });
  for (let i = 0; i < N; i += 1000) {
    const batch = [];
    for (let j = i; j < Math.min(N, i + 1000); j++) batch.push({ name: 'ping', data: { j }, opts: { removeOnComplete: true } });
    await queue.addBulk(batch);
  }
  let done = 0;
  let first = 0;
  let last = 0;
  let onLatency = null;
  const worker = new Worker(
    name,
    async (job) => {
      const t = now();
      if (!first) first = t;
      if (job.data.t0 !== undefined && onLatency) onLatency(t - job.data.t0);
    },
    { connection: new IORedis(URL, { maxRetriesPerRequest: null }), concurrency: C },
  );
  const drained = new Promise((res) => {
    worker.on('completed', () => {
      last = now();
      if (++done === N) res();
    });
  });
  await drained;
  const span = last - first;
  const throughput = N / (span / 1000);

  const lat = [];
  for (let i = 0; i < M; i++) {
    const got = new Promise((res) => (onLatency = res));
    await queue.add('ping', { t0: now() }, { removeOnComplete: true });
    lat.push(await got);
    await sleep(1);
  }
  await worker.close();
  await queue.obliterate({ force: true });
  await queue.close();
  connection.disconnect();
  return { throughput, span, p50: pct(lat, 50), p99: pct(lat, 99) };
}

(async () => {
  console.log(`queue benchmark: ${N} jobs for throughput, ${M} for latency, concurrency ${C}, one worker process each`);
  const a = await ours();
  const row = (n, x) =>
    console.log(`${n.padEnd(16)} ${x.throughput.toFixed(0).padStart(8)} jobs/s   pickup p50 ${x.p50.toFixed(2)} ms   p99 ${x.p99.toFixed(2)} ms`);
  if (ONLY_OURS) {
    row('backup-worker', a);
    process.exit(0);
  }
  const b = await bullmq();
  row('backup-worker', a);
  row(`bullmq ${require('bullmq/package.json').version}`, b);
  console.log(`backup-worker / bullmq throughput: ${(a.throughput / b.throughput).toFixed(2)}x`);
  process.exit(0);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
