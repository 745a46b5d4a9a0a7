// The REST API and the TypeScript client against a real worker, Redis,
// PostgreSQL and S3: every endpoint, its refusals (401, 403, 404, 413, 429,
// bad bodies), and the client's enqueue, status, follow and RLS reads.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { BackupQueue, BackupStore, ProgressHub, ProtocolError, keys } from '@backup-worker/client';
import { BackupService, BackupError } from '@backup-worker/client/browser';
import { signJwt } from '../../tools/web/dist/jwt.js';
import { ROOT, OUT, SECRET, startStack, makeTenant, makeStaff, token, keyToken, until } from './lib.mjs';
import { newKey } from './jwks.mjs';

let S; // the stack
let A, B, staff; // two owners with data, a staff member
let k;

before(async () => {
  S = await startStack({ jobsPerMinute: 5 });
  k = keys(S.prefix);
  [A, B] = await Promise.all([makeTenant(30), makeTenant(10)]);
  staff = await makeStaff(S.pool);
});

after(async () => {
  await Promise.all(subs.map((c) => c.quit()));
  await S?.close();
});

const xlen = () => S.redis.xlen(k.jobs);
const subs = [];
/** A subscriber connection, closed after the tests. */
const sub = () => {
  const c = S.redis.duplicate();
  subs.push(c);
  return c;
};

/** One request; `csrf` fetches a token and its cookie first. */
async function api(method, path, { tok, body, csrf = method !== 'GET', raw, headers = {} } = {}) {
  const h = { ...headers };
  if (tok) h.authorization = `Bearer ${tok}`;
  if (csrf) {
    const r = await fetch(`${S.url}/api/csrf`, { headers: tok ? { authorization: `Bearer ${tok}` } : {} });
    const cookie = r.headers.getSetCookie().map((c) => c.split(';')[0]).find((c) => c.startsWith('bw_csrf='));
    h['x-csrf-token'] = (await r.json()).token;
    h.cookie = cookie;
  }
  if (body !== undefined || raw !== undefined) h['content-type'] = 'application/json';
  const res = await fetch(S.url + path, { method, headers: h, body: raw ?? (body === undefined ? undefined : JSON.stringify(body)) });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, body: json, headers: res.headers };
}

const service = (sub) => new BackupService({ baseUrl: S.url, getToken: () => (sub ? token(sub) : null) });

test('401: no token, a forged, expired, unsigned or subject-less one', async () => {
  const now = Math.floor(Date.now() / 1000);
  const none = (c) => `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${Buffer.from(JSON.stringify(c)).toString('base64url')}.`;
  const cases = {
    'no token': undefined,
    'wrong secret': signJwt({ sub: A, exp: now + 60 }, 'another-secret-another-secret-another'),
    expired: token(A, { exp: now - 3600 }),
    'alg none': none({ sub: A, exp: now + 60 }),
    'no sub': signJwt({ exp: now + 60, role: 'authenticated' }, SECRET),
    'sub not a uuid': token('admin'),
    'anon role': token(A, { role: 'anon' }),
    'no exp': signJwt({ sub: A }, SECRET),
    'expired 30 s ago (leeway at most 5 s)': token(A, { exp: now - 30 }),
    'another issuer': token(A, { iss: 'https://other.supabase.co/auth/v1' }),
    'another audience': token(A, { aud: 'service_role' }),
    'ES256 by a key the project never published': await keyToken(A, {}, await newKey('ES256', 'es-1')),
    'ES256, expired 30 s ago': await keyToken(A, { exp: now - 30 }),
  };
  for (const [name, tok] of Object.entries(cases)) {
    for (const [m, p] of [['GET', '/api/backup/list'], ['GET', '/api/backup/status'], ['POST', '/api/backup/create']]) {
      const r = await api(m, p, { tok, body: m === 'POST' ? { type: 'full' } : undefined });
      assert.equal(r.status, 401, `${name}: ${m} ${p}`);
      assert.deepEqual(r.body, { error: 'No authenticated user' });
    }
  }
  await assert.rejects(service(null).listBackups(), (e) => e instanceof BackupError && e.message === 'No authenticated user');
});

test('signing keys: ES256 and RS256 tokens from the project\'s JWKS sign in, as the legacy HS256 one does', async () => {
  for (const [name, tok] of [['ES256', await keyToken(A)], ['RS256', await keyToken(A, {}, (await import('./lib.mjs')).jwks().keys[1])],
    ['HS256 (legacy secret)', token(A)]]) {
    const r = await api('GET', '/api/backup/list', { tok });
    assert.equal(r.status, 200, name);
    assert.ok(Array.isArray(r.body), name);
  }
});

test('403: a state change without a matching CSRF token enqueues nothing', async () => {
  const before = await xlen();
  const tok = token(A);
  // a token fetched by another user, with its cookie: bound to that user, refused for A
  const otherRes = await fetch(`${S.url}/api/csrf`, { headers: { authorization: `Bearer ${token(B)}` } });
  const other = await otherRes.json();
  const otherCookie = otherRes.headers.getSetCookie().map((c) => c.split(';')[0]).find((c) => c.startsWith('bw_csrf='));
  assert.equal((await fetch(`${S.url}/api/csrf`)).status, 401, 'a CSRF token needs a signed-in user');
  const r1 = await api('POST', '/api/backup/create', { tok, body: { type: 'full' }, csrf: false });
  const r2 = await api('POST', '/api/backup/create', { tok, body: { type: 'full' }, csrf: false, headers: { 'x-csrf-token': other.token } });
  const r3 = await api('POST', '/api/backup/create', { tok, body: { type: 'full' }, csrf: false,
    headers: { 'x-csrf-token': 'abc.def', cookie: 'bw_csrf=abc.def' } });
  const r4 = await api('DELETE', '/api/backup/cleanup', { tok, csrf: false, headers: { cookie: `bw_csrf=${other.token}` } });
  const r5 = await api('POST', '/api/backup/create', { tok, body: { type: 'full' }, csrf: false,
    headers: { 'x-csrf-token': other.token, cookie: otherCookie } });
  for (const r of [r1, r2, r3, r4, r5]) {
    assert.equal(r.status, 403);
    assert.deepEqual(r.body, { error: 'CSRF token missing or invalid' });
  }
  assert.equal(await xlen(), before);
});

test('400 and 413: bad bodies are refused with a JSON error and enqueue nothing', async () => {
  const before = await xlen();
  const tok = token(A);
  const bad = [
    ['/api/backup/create', { type: 'weekly' }],
    ['/api/backup/create', {}],
    ['/api/backup/create', { type: 'full', user_id: B }],
    ['/api/backup/restore', { backupId: '../../etc/passwd' }],
    ['/api/backup/restore', {}],
    ['/api/backup/restore', { backupId: `backup-${A}-1`, tables: ['orders; DROP TABLE x'] }],
    ['/api/backup/restore', { backupId: `backup-${A}-1`, tables: 'orders' }],
    ['/api/backup/restore', { at: 'yesterday' }],
    ['/api/backup/restore', { at: '2026-12-07T09:14:00' }], // no offset: which 09:14?
    ['/api/backup/restore', { at: '2026-12-07T09:14:00Z', backupId: `backup-${A}-1` }],
  ];
  for (const [p, body] of bad) {
    const r = await api('POST', p, { tok, body });
    assert.equal(r.status, 400, `${p} ${JSON.stringify(body)}: ${JSON.stringify(r.body)}`);
    assert.equal(typeof r.body.error, 'string');
  }
  const notJson = await api('POST', '/api/backup/create', { tok, raw: '{"type":' });
  assert.equal(notJson.status, 400);
  assert.equal(typeof notJson.body.error, 'string');
  const big = await api('POST', '/api/backup/create', { tok, raw: JSON.stringify({ type: 'full', pad: 'x'.repeat(20000) }) });
  assert.equal(big.status, 413);
  assert.equal(typeof big.body.error, 'string');
  assert.equal(await xlen(), before);
});

let backupId;

test('create, follow, list, status: a full backup through the API and the browser client', async () => {
  const svc = service(A);
  const { jobId } = await svc.createBackup({ type: 'full' });
  assert.match(jobId, /^web-backup-/);
  const seen = [];
  const done = await svc.watch(jobId, { onProgress: (s) => seen.push(s.progress) });
  assert.equal(done.status, 'completed');
  assert.equal(done.progress, 100);
  assert.ok(done.rows > 30, `rows ${done.rows}`);
  backupId = done.backupId;
  assert.match(backupId, new RegExp(`^backup-${A}-`));
  assert.ok(seen.length >= 1);

  const list = await svc.listBackups();
  const mine = list.find((b) => b.id === backupId);
  assert.ok(mine, 'the backup is listed');
  assert.equal(mine.status, 'completed');
  assert.equal(mine.type, 'full');
  assert.ok(mine.size > 0 && mine.rows === done.rows, JSON.stringify(mine));
  assert.ok(list.every((b) => b.id.includes(A)), 'only the caller\'s backups');

  const st = await svc.getStatus();
  assert.ok(st.total_backups >= 1 && st.successful_backups >= 1, JSON.stringify(st));
  assert.ok(st.last_backup_at !== null);

  // the job is the caller's: another user gets 404, as for an unknown job
  assert.equal((await api('GET', `/api/backup/jobs/${jobId}`, { tok: token(A) })).status, 200);
  assert.deepEqual((await api('GET', `/api/backup/jobs/${jobId}`, { tok: token(B) })).body, { error: 'Job not found' });
  assert.equal((await api('GET', '/api/backup/jobs/nope', { tok: token(A) })).status, 404);
  // B's list does not hold A's backup
  assert.ok(!(await service(B).listBackups()).some((b) => b.id === backupId));
});

test('restore: another user\'s backup is 404 and enqueues nothing; the caller\'s own restores', async () => {
  assert.ok(backupId);
  const before = await xlen();
  const r = await api('POST', '/api/backup/restore', { tok: token(B), body: { backupId } });
  assert.equal(r.status, 404);
  assert.deepEqual(r.body, { error: 'Backup not found' });
  const missing = await api('POST', '/api/backup/restore', { tok: token(A), body: { backupId: `backup-${A}-0` } });
  assert.equal(missing.status, 404);
  assert.equal(await xlen(), before);

  const svc = service(A);
  await S.pool.query('DELETE FROM orders WHERE id IN (SELECT id FROM orders WHERE user_id = $1 LIMIT 5)', [A]);
  const { jobId } = await svc.restoreBackup({ backupId });
  const done = await svc.watch(jobId);
  assert.equal(done.status, 'completed');
  assert.equal(done.result.inserted >= 5, true, JSON.stringify(done.result));
  const { rows } = await S.pool.query('SELECT count(*)::int AS n FROM orders WHERE user_id = $1', [A]);
  assert.equal(rows[0].n, 30);
});

test('export: the owner downloads a backup as plain JSON through a presigned link of 15 minutes; nobody else', async () => {
  const q = new BackupQueue({ redis: S.redis, prefix: S.prefix });
  const st = await q.runJob({ type: 'backup', userId: B, mode: 'full', jobId: `webt-${Date.now()}-xb` },
    new ProgressHub(sub(), S.prefix), 60000);
  assert.equal(st.status, 'completed');
  const before = await xlen();
  const r = await api('POST', '/api/backup/export', { tok: token(A), body: { backupId: st.backupId } });
  assert.equal(r.status, 404, 'another user\'s backup');
  assert.equal(await xlen(), before, 'nothing enqueued');
  const bad = await api('POST', '/api/backup/export', { tok: token(B), body: { backupId: st.backupId, userId: A } });
  assert.equal(bad.status, 400);

  const svc = service(B);
  const { jobId, exportId } = await svc.exportBackup(st.backupId);
  const done = await svc.watch(jobId);
  assert.equal(done.result.export_id, exportId);
  const link = await svc.getExport(exportId);
  assert.equal(link.status, 'completed');
  assert.equal(link.rows, done.result.rows);
  assert.equal('key' in link, false, 'the object key is not shown');
  const u = new URL(link.url);
  assert.equal(u.searchParams.get('X-Amz-Algorithm'), 'AWS4-HMAC-SHA256', 'SigV4 query signing');
  assert.equal(u.searchParams.get('X-Amz-Expires'), '900', '15 minutes');
  assert.match(u.pathname, new RegExp(`/exports/${B}/${exportId}\\.json\\.gz$`));
  const res = await fetch(link.url);
  assert.equal(res.status, 200, 'the store accepts the signature');
  assert.match(res.headers.get('content-disposition') ?? '', /attachment; filename="mis-datos-\d{4}-\d\d-\d\d\.json\.gz"/);
  const doc = JSON.parse(gunzipSync(Buffer.from(await res.arrayBuffer())).toString('utf8'));
  assert.equal(doc.format, 'pedidolist-export');
  assert.equal(doc.user_id, B);
  assert.equal(doc.backup_id, st.backupId);
  assert.equal(doc.tables.orders.length, 10);
  assert.ok(doc.tables.orders.every((o) => o.user_id === B));

  // the signature covers the key: the same link on another object is refused by the store
  const forged = link.url.replace(`/exports/${B}/`, `/exports/${A}/`);
  assert.equal((await fetch(forged)).status, 403);
  const other = await api('GET', `/api/backup/exports/${exportId}`, { tok: token(A) });
  assert.equal(other.status, 404, 'another user\'s export is not there');
  assert.deepEqual(other.body, { error: 'Export not found' });
  assert.equal((await api('GET', '/api/backup/exports/not-a-uuid', { tok: token(B) })).status, 404);
  // a link never outlives its export; a past export is gone
  await S.pool.query("UPDATE backup_exports SET expires_at = now() + interval '60 seconds' WHERE id = $1", [exportId]);
  const short = new URL((await svc.getExport(exportId)).url);
  assert.ok(Number(short.searchParams.get('X-Amz-Expires')) <= 60, short.searchParams.get('X-Amz-Expires'));
  await S.pool.query("UPDATE backup_exports SET expires_at = now() - interval '1 second' WHERE id = $1", [exportId]);
  const gone = await api('GET', `/api/backup/exports/${exportId}`, { tok: token(B) });
  assert.equal(gone.status, 410);
});

test('restore of a damaged backup fails with the seed\'s message', async () => {
  // B's own backup, its object overwritten in S3
  const q = new BackupQueue({ redis: S.redis, prefix: S.prefix });
  const hub = new ProgressHub(sub(), S.prefix);
  const st = await q.runJob({ type: 'backup', userId: B, mode: 'full', jobId: `webt-${Date.now()}-b` }, hub, 60000);
  assert.equal(st.status, 'completed');
  const id = st.backupId;
  const { rows } = await S.pool.query('SELECT s3_key FROM backup_metadata WHERE id = $1', [id]);
  const junk = join(OUT, 'junk.gz');
  writeFileSync(junk, Buffer.alloc(4096, 7));
  const put = spawnSync(join(ROOT, 'build/backupctl'), ['s3', 'put', junk, rows[0].s3_key], { encoding: 'utf8' });
  assert.equal(put.status, 0, put.stderr);
  const svc = service(B);
  const { jobId } = await svc.restoreBackup({ backupId: id });
  await assert.rejects(svc.watch(jobId), (e) => e instanceof BackupError && e.message.startsWith('Backup checksum verification failed'));
});

test('cleanup: owners only (403 for staff), the owner\'s runs', async () => {
  const before = await xlen();
  const r = await api('DELETE', '/api/backup/cleanup', { tok: token(staff) });
  assert.equal(r.status, 403);
  assert.deepEqual(r.body, { error: 'Only the account owner can clean up backups' });
  assert.equal(await xlen(), before);
  assert.equal((await service(staff).me()).owner, false);
  assert.equal((await service(A).me()).owner, true);
  const svc = service(A);
  const { jobId } = await svc.cleanup();
  const done = await svc.watch(jobId);
  assert.equal(done.status, 'completed');
});

test('429: a user enqueues at most WEB_JOBS_PER_MINUTE jobs a minute', async () => {
  const u = await makeTenant(1);
  const tok = token(u);
  // all in one minute: the window is the clock's minute
  if (Date.now() % 60000 > 55000) await new Promise((r) => setTimeout(r, 60000 - (Date.now() % 60000) + 50));
  const codes = [];
  let last;
  for (let i = 0; i < 6; i++) {
    last = await api('POST', '/api/backup/create', { tok, body: { type: 'incremental' } });
    codes.push(last.status);
  }
  assert.deepEqual(codes, [202, 202, 202, 202, 202, 429]);
  assert.deepEqual(last.body, { error: 'Too many jobs: try again in a minute' });
  assert.match(last.headers.get('retry-after'), /^\d+$/);
  // another user is not limited by this one
  assert.equal((await api('POST', '/api/backup/create', { tok: token(B), body: { type: 'incremental' } })).status, 202);
});

test('events: Server-Sent Events carry the caller\'s progress only', async () => {
  const ac = new AbortController();
  const svcA = service(A);
  const gotA = [];
  const it = svcA.events(ac.signal);
  await it.next(); // connected
  const reading = (async () => {
    for await (const e of { [Symbol.asyncIterator]: () => it }) {
      gotA.push(e);
      if (e.event === 'completed') break;
    }
  })();
  const q = new BackupQueue({ redis: S.redis, prefix: S.prefix });
  await q.backup(B, 'incremental', { jobId: `webt-${Date.now()}-ev-b` });
  const ja = await q.backup(A, 'incremental', { jobId: `webt-${Date.now()}-ev-a` });
  let timer;
  await Promise.race([reading, new Promise((_, rej) => (timer = setTimeout(() => rej(new Error('no completed event')), 60000)))]);
  clearTimeout(timer);
  ac.abort();
  assert.ok(gotA.length >= 2, `${gotA.length} events`);
  assert.ok(gotA.every((e) => e.user_id === A), 'only A\'s events');
  assert.ok(gotA.some((e) => e.job_id === ja && e.event === 'completed'));
});

test('414 and 431 say what is wrong without echoing the request', async () => {
  const tok = token(A);
  const mark = 'zq<script>' + 'x'.repeat(300);
  const r414 = await api('GET', `/api/backup/jobs/${encodeURIComponent(mark)}`, { tok });
  assert.equal(r414.status, 414);
  assert.deepEqual(r414.body, { error: 'URI too long' });
  const r431 = await fetch(`${S.url}/healthz`, { headers: { 'x-big': 'zq' + 'y'.repeat(20000) } });
  assert.equal(r431.status, 431);
  assert.ok(!(await r431.text()).includes('zq'), 'the 431 body does not echo the request');
});

test('a job id naming another queue key (a delayed job\'s payload) is 404, not 500', async () => {
  const tok = token(A);
  const id = `webt-${Date.now()}-pl`;
  await S.redis.set(`${k.job(id)}:payload`, 'x', 'EX', 60);
  const r = await api('GET', `/api/backup/jobs/${id}:payload`, { tok });
  assert.equal(r.status, 404);
  assert.deepEqual(r.body, (await api('GET', `/api/backup/jobs/${id}-unknown`, { tok })).body);
});

test('events: a user holds at most 8 event streams at once (429 past it)', async () => {
  const acs = [];
  const open = async () => {
    const ac = new AbortController();
    acs.push(ac);
    return fetch(`${S.url}/api/backup/events`, { headers: { authorization: `Bearer ${token(B)}` }, signal: ac.signal });
  };
  const rs = [];
  for (let i = 0; i < 8; i++) rs.push(await open());
  assert.deepEqual(rs.map((r) => r.status), Array(8).fill(200));
  const ninth = await open();
  assert.equal(ninth.status, 429);
  const other = await fetch(`${S.url}/api/backup/events`, { headers: { authorization: `Bearer ${token(A)}` }, signal: (acs[acs.length] = new AbortController()).signal });
  assert.equal(other.status, 200, 'another user is not limited by it');
  for (const ac of acs) ac.abort();
  await until('a closed stream to free its place', async () => {
    const ac = new AbortController();
    const r = await fetch(`${S.url}/api/backup/events`, { headers: { authorization: `Bearer ${token(B)}` }, signal: ac.signal });
    ac.abort();
    return r.status === 200;
  }, 10000);
});

test('client: enqueue validates before XADD, status and follow', async () => {
  const q = new BackupQueue({ redis: S.redis, prefix: S.prefix });
  const before = await xlen();
  const refused = [
    [{ type: 'backup', userId: 'abc' }, "field 'user_id': 'abc' is not a UUID"],
    [{ type: 'backup' }, "missing field 'user_id'"],
    [{ type: 'restore', userId: A }, "missing field 'backup_id' (the backup to restore) or 'at'"],
    [{ type: 'restore', userId: A, at: '2026-12-07T09:14:00' }, "field 'at': '2026-12-07T09:14:00' is not a time with its offset"],
    [{ type: 'restore', userId: A, at: 'G/0' }, 'is not a time with its offset'],
    [{ type: 'restore', userId: A, at: '16/B374D848', backupId: `backup-${A}-1` }, "both 'backup_id' and 'at'"],
    [{ type: 'restore', userId: A, backupId: `backup-${B}-1` }, `is not a backup of user ${A}`],
    [{ type: 'backup', userId: A, mode: 'weekly' }, 'is not full, incremental or differential'],
    [{ type: 'cleanup', userId: A, retentionDays: 0 }, 'is not a number of days from 1 to 36500'],
    [{ type: 'backup', userId: A, tables: ['orders'] }, "field 'tables' is not part of a backup job"],
    [{ type: 'restore', userId: A, backupId: `backup-${A}-1`, tables: ['orders', 'orders'] }, 'names a table twice'],
    [{ type: 'nuke', userId: A }, 'is not a job type'],
    [{ type: 'ping', jobId: 'a b' }, 'must be 1-128 letters'],
  ];
  for (const [job, msg] of refused)
    await assert.rejects(q.enqueue(job), (e) => e instanceof ProtocolError && e.message.includes(msg), JSON.stringify(job));
  assert.equal(await xlen(), before, 'nothing reached the stream');

  const hub = new ProgressHub(sub(), S.prefix);
  const jobId = `webt-${Date.now()}-ping`;
  const last = await hub.run(A, async () => {
    assert.equal(await q.enqueue({ type: 'ping', userId: A.toUpperCase(), jobId }), jobId);
    return jobId;
  }, 30000);
  assert.equal(last.event, 'completed');
  const s = await q.status(jobId);
  assert.equal(s.status, 'completed');
  assert.equal(s.userId, A, 'stored lowercase');
  assert.equal(await q.status('never-enqueued'), null);
});

test('client: an enqueued job is `queued` at once, before a worker claims it; its id is not overwritten', async () => {
  // a prefix no worker reads: the job stays where the enqueue left it
  const idle = new BackupQueue({ redis: S.redis, prefix: `${S.prefix}-idle` });
  const ik = keys(`${S.prefix}-idle`);
  const jobId = `webt-${Date.now()}-queued`;
  assert.equal(await idle.enqueue({ type: 'backup', userId: A, mode: 'full', jobId }), jobId);
  const s = await idle.status(jobId);
  assert.ok(s, 'the status exists right after the enqueue (it was a 404 until a worker claimed the job)');
  assert.equal(s.status, 'queued');
  assert.equal(s.type, 'backup');
  assert.equal(s.userId, A);
  const [[entry]] = await S.redis.xrange(ik.jobs, '-', '+');
  assert.equal(await S.redis.hget(ik.job(jobId), 'entry'), entry, 'the entry a worker will claim as its own');
  assert.ok((await S.redis.pttl(ik.job(jobId))) > 0, 'kept for a while, not forever');
  assert.ok((await S.redis.pttl(ik.job(jobId))) > 6 * 86400000, 'the protocol\'s default retention: 7 days');
  // kept as long as the workers keep it (JOB_RETENTION), not a fixed week
  const short = new BackupQueue({ redis: S.redis, prefix: `${S.prefix}-idle`, jobRetentionMs: 120000 });
  await short.enqueue({ type: 'backup', userId: A, mode: 'full', jobId: `${jobId}-r` });
  const ttl = await S.redis.pttl(ik.job(`${jobId}-r`));
  assert.ok(ttl > 0 && ttl <= 120000, String(ttl));
  await S.redis.del(ik.job(`${jobId}-r`));
  await S.redis.xtrim(ik.jobs, 'MAXLEN', 1);
  // the same id again: a second entry (the worker runs it once), the status untouched
  await S.redis.hset(ik.job(jobId), 'status', 'completed');
  await idle.enqueue({ type: 'backup', userId: A, mode: 'full', jobId });
  assert.equal(await S.redis.xlen(ik.jobs), 2);
  assert.equal((await idle.status(jobId)).status, 'completed');
  assert.equal(await S.redis.hget(ik.job(jobId), 'entry'), entry);
  await S.redis.del(ik.jobs, ik.job(jobId));
});

test('client: reads run as `authenticated` under row-level security', async () => {
  const store = new BackupStore(S.pool);
  const seen = await store.asUser({ sub: A }, async (c) => {
    const all = await c.query('SELECT DISTINCT user_id::text AS u FROM backup_metadata');
    const role = await c.query('SELECT current_user AS r');
    return { users: all.rows.map((r) => r.u), role: role.rows[0].r };
  });
  assert.equal(seen.role, 'authenticated');
  assert.deepEqual(seen.users, [A], 'RLS shows A only their own rows, with no WHERE');
  const none = await store.asUser({ sub: B }, (c) => c.query('SELECT id FROM backup_metadata WHERE id = $1', [backupId]));
  assert.equal(none.rowCount, 0);
  await assert.rejects(store.asUser({ sub: A }, (c) => c.query("UPDATE backup_metadata SET status = 'deleted' WHERE id = $1", [backupId])));
  assert.equal((await store.getBackup({ sub: B }, backupId)), null);
  assert.equal((await store.getBackup({ sub: A }, backupId)).status, 'completed');
});

test('restore to a point in time: {at} enqueues a restore job with that point, for the caller only', async () => {
  const r = await api('POST', '/api/backup/restore', { tok: token(A), body: { at: '2026-12-07T09:14:00+01:00', dryRun: true } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const entries = await S.redis.xrevrange(k.jobs, '+', '-', 'COUNT', 20);
  const mine = entries.map(([, f]) => Object.fromEntries(f.reduce((a, v, i) => (i % 2 ? a : [...a, [v, f[i + 1]]]), [])))
    .find((e) => e.job_id === r.body.jobId);
  assert.ok(mine, 'the job is on the stream');
  assert.equal(mine.type, 'restore');
  assert.equal(mine.user_id, A);
  assert.equal(mine.at, '2026-12-07T09:14:00+01:00');
  assert.equal(mine.dry_run, 'true');
  assert.equal(mine.backup_id, undefined);
});

test('timeline: the caller\'s captured transactions only, oldest first, since a time', async () => {
  const seg = (id, user, last, end, txns) => S.pool.query(
    `INSERT INTO change_segments (id, user_id, s3_key, start_lsn, end_lsn, first_commit, last_commit, xids,
       changes, counts, txns, size, checksum, epoch)
     VALUES ($1, $2::uuid, 'backups/' || $2 || '/changes/' || $1 || '.jsonl.gz', $4::pg_lsn, $4::pg_lsn, $3, $3,
       '{7,8}', 3, '{"orders":{"i":2,"u":1,"d":0,"t":0}}', $5, 1, repeat('a', 64), 1)`,
    [id, user, last, end, txns === null ? null : JSON.stringify(txns)]);
  const t = (s) => new Date(Date.UTC(2026, 11, 7, 9, 14, s)).toISOString();
  await seg('tl-a1', A, t(0), '0/20', null); // recorded before 021: one entry for the segment
  await seg('tl-a2', A, t(20), '0/40', [
    { xid: 9, lsn: '0/30', time: '2026-12-07T09:14:10.000001Z', counts: { orders: { i: 1, u: 0, d: 0, t: 0 } } },
    { xid: 10, lsn: '0/40', time: '2026-12-07T09:14:20.000002Z', counts: { order_items: { i: 0, u: 0, d: 3, t: 0 } } },
  ]);
  await seg('tl-b1', B, t(5), '0/25', [{ xid: 11, lsn: '0/25', time: t(5), counts: {} }]);
  try {
    const all = await api('GET', '/api/backup/timeline', { tok: token(A) });
    assert.equal(all.status, 200);
    assert.deepEqual(all.body.map((e) => [e.lsn, e.xid, e.transactions]), [['0/20', null, 2], ['0/30', 9, 1], ['0/40', 10, 1]],
      'A\'s own, in commit order; B\'s not');
    assert.deepEqual(all.body[2].counts, { order_items: { i: 0, u: 0, d: 3, t: 0 } });
    assert.equal(all.body[1].time, '2026-12-07T09:14:10.000001Z', 'microseconds kept');
    const since = await api('GET', `/api/backup/timeline?since=${encodeURIComponent(t(10))}`, { tok: token(A) });
    assert.deepEqual(since.body.map((e) => e.lsn), ['0/30', '0/40'], 'segments whose last commit is since');
    const bad = await api('GET', '/api/backup/timeline?since=yesterday-ish', { tok: token(A) });
    assert.equal(bad.status, 400);
    assert.equal((await api('GET', '/api/backup/timeline', { tok: token(B) })).body.length, 1);
    assert.equal((await api('GET', '/api/backup/timeline')).status, 401);
  } finally {
    await S.pool.query("DELETE FROM change_segments WHERE id LIKE 'tl-%'");
  }
});

test('healthz, the page and its assets', async () => {
  assert.deepEqual((await api('GET', '/healthz')).body, { ok: true });
  const page = await fetch(`${S.url}/`);
  assert.equal(page.status, 200);
  assert.match(await page.text(), /Backup de datos/);
  // security headers (@fastify/helmet) on the page and on every API answer
  const csp = page.headers.get('content-security-policy') ?? '';
  for (const d of ["default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'"])
    assert.ok(csp.includes(d), `CSP has ${d}: ${csp}`);
  assert.ok(!csp.includes('upgrade-insecure-requests'), 'no upgrade on a plain-HTTP server');
  const list = await fetch(`${S.url}/api/backup/list`, { headers: { authorization: `Bearer ${token(A)}` } });
  assert.equal(list.headers.get('x-content-type-options'), 'nosniff');
  assert.equal(list.headers.get('x-frame-options'), 'SAMEORIGIN');
  // the CSRF cookie as @fastify/cookie writes it
  const csrf = await fetch(`${S.url}/api/csrf`, { headers: { authorization: `Bearer ${token(A)}` } });
  const set = csrf.headers.getSetCookie().find((c) => c.startsWith('bw_csrf=')) ?? '';
  for (const attr of ['HttpOnly', 'SameSite=Strict', 'Path=/', 'Max-Age=43200']) assert.ok(set.includes(attr), `${attr} in ${set}`);
  for (const a of ['/assets/page/app.js', '/assets/style.css']) {
    const r = await fetch(S.url + a);
    assert.equal(r.status, 200, a);
    assert.match(r.headers.get('content-type') ?? '', a.endsWith('.css') ? /^text\/css/ : /javascript/, a);
  }
  // @fastify/static serves those and nothing beside them (the untyped app.js is gone)
  for (const a of ['/assets/app.js', '/assets/client/browser.js', '/assets/page/main.js', '/assets/%2e%2e/package.json',
    '/assets/../src/app.ts', '/assets/page/../../package.json'])
    assert.equal((await fetch(S.url + a)).status, 404, a);
  const nf = await api('GET', '/nope');
  assert.deepEqual([nf.status, nf.body], [404, { error: 'Not found' }]);
  await until('the worker to stay up', async () => S.worker.proc.exitCode === null, 100);
});
