// Pure logic of the web tier, no services: the protocol's validation (the
// worker's rules, worker/jobs/jobspec.c), the JWT check, the job status parser.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { jobFields, parseJobStatus, ProtocolError } from '@backup-worker/client/protocol';
import { signJwt, verifyJwt } from '../../tools/web/dist/jwt.js';

const U = '6f1c2a4e-8d3b-4f5a-9c7e-2b1d0e9f8a76';
const SECRET = 'unit-secret-unit-secret-unit-secret!';

test('jobFields: the flat fields of proto/README.md', () => {
  assert.deepEqual(jobFields({ type: 'backup', userId: U.toUpperCase() }), { type: 'backup', user_id: U });
  assert.deepEqual(
    jobFields({ type: 'restore', userId: U, backupId: `backup-${U}-1732790000000`, tables: ['orders', 'order_items'], dryRun: true, jobId: 'r-1' }),
    { type: 'restore', user_id: U, backup_id: `backup-${U}-1732790000000`, tables: 'orders,order_items', dry_run: 'true', job_id: 'r-1' });
  assert.deepEqual(jobFields({ type: 'cleanup', scope: 'all', retentionDays: 30, trigger: 'scheduled' }),
    { type: 'cleanup', scope: 'all', retention_days: '30', trigger: 'scheduled' });
  assert.deepEqual(jobFields({ type: 'ping' }), { type: 'ping' });
});

test('jobFields: refusals name the field as the worker does', () => {
  const cases = [
    [{ type: 'backup', userId: 'x' }, "field 'user_id': 'x' is not a UUID"],
    [{ type: 'backup', userId: U, mode: 'hourly' }, "field 'mode': 'hourly' is not full, incremental or differential"],
    [{ type: 'restore', userId: U, backupId: 'backup-../../x' }, "field 'backup_id': 'backup-../../x' is not a backup id"],
    [{ type: 'restore', userId: U, backupId: `backup-${U}-1`, tables: ['Orders'] }, "field 'tables'"],
    [{ type: 'cleanup', userId: U, retentionDays: 36501 }, 'is not a number of days from 1 to 36500'],
    [{ type: 'cleanup', userId: U, scope: 'all' }, "a cleanup with scope=all covers every user: drop the field 'user_id'"],
    [{ type: 'verify' }, "a verify job needs 'backup_id' or 'user_id'"],
    [{ type: 'replicate' }, "missing field 'backup_id' (the backup to copy to the replica)"],
    [{ type: 'ping', jobId: 'x'.repeat(129) }, "field 'job_id'"],
    [{ type: 'ping', trigger: 'cron' }, 'is not manual, scheduled or api'],
    [{ type: 'backup', userId: U, dryRun: true }, "field 'dry_run' is not part of a backup job"],
    [{ type: 'restore', userId: U, backupId: `backup-${U}-1`, dryRun: 'yes' }, 'is not true or false'],
  ];
  for (const [job, msg] of cases)
    assert.throws(() => jobFields(job), (e) => e instanceof ProtocolError && e.message.includes(msg), `${JSON.stringify(job)} -> ${msg}`);
});

test('verifyJwt: HS256 only, signature, expiry, not-before', () => {
  const now = 1_800_000_000;
  const good = signJwt({ sub: U, exp: now + 60 }, SECRET);
  assert.equal(verifyJwt(good, SECRET, now).sub, U);
  assert.equal(verifyJwt(good, SECRET + 'x', now), null, 'another secret');
  assert.equal(verifyJwt(good, SECRET, now + 120), null, 'expired (past the 30 s leeway)');
  assert.equal(verifyJwt(signJwt({ sub: U, exp: now + 60, nbf: now + 100 }, SECRET), SECRET, now), null, 'not yet valid');
  assert.equal(verifyJwt(signJwt({ sub: U }, SECRET), SECRET, now), null, 'no exp');
  const [h, p] = good.split('.');
  const hs384 = Buffer.from(JSON.stringify({ alg: 'HS384', typ: 'JWT' })).toString('base64url');
  const sig384 = createHmac('sha384', SECRET).update(`${hs384}.${p}`).digest('base64url');
  assert.equal(verifyJwt(`${hs384}.${p}.${sig384}`, SECRET, now), null, 'another algorithm');
  const none = Buffer.from(JSON.stringify({ alg: 'none' })).toString('base64url');
  assert.equal(verifyJwt(`${none}.${p}.`, SECRET, now), null, 'alg none');
  const other = Buffer.from(JSON.stringify({ sub: '00000000-0000-4000-8000-000000000000', exp: now + 60 })).toString('base64url');
  assert.equal(verifyJwt(`${h}.${other}.${good.split('.')[2]}`, SECRET, now), null, 'claims swapped under the signature');
  assert.equal(verifyJwt('a.b', SECRET, now), null);
  assert.equal(verifyJwt(`${h}.${p}.${'A'.repeat(43)}`, SECRET, now), null);
});

test('parseJobStatus: numbers, the JSON result, an empty hash', () => {
  assert.equal(parseJobStatus('j', {}), null);
  const s = parseJobStatus('j', { status: 'completed', type: 'restore', user_id: U, progress: '100', rows: '12', rows_total: '12',
    bytes: '3400', attempts: '1', result: '{"inserted":2}', finished_at: '1800000000000' });
  assert.equal(s.progress, 100);
  assert.equal(s.rows, 12);
  assert.deepEqual(s.result, { inserted: 2 });
  assert.equal(s.finishedAt, 1800000000000);
  assert.equal(s.retryAt, undefined);
});

test('the client reads every field of the job hash that proto/README.md lists', async () => {
  const { readFileSync } = await import('node:fs');
  const root = new URL('../../', import.meta.url);
  const readme = readFileSync(new URL('proto/README.md', root), 'utf8');
  const section = readme.slice(readme.indexOf('### Following a job'), readme.indexOf('`backup:events` entries'));
  const fields = [...section.matchAll(/^\| (`[^|]+)\|/gm)].flatMap((m) => [...m[1].matchAll(/`([a-z_]+)`/g)].map((f) => f[1]));
  assert.ok(fields.length >= 18, fields.join(','));
  const src = readFileSync(new URL('proto/ts/src/protocol.ts', root), 'utf8');
  const parser = src.slice(src.indexOf('export function parseJobStatus'), src.indexOf('/** Key names under a prefix'));
  const missing = fields.filter((f) => f !== 'entry' && !parser.includes(`h.${f}`));
  assert.deepEqual(missing, [], 'fields the README lists and parseJobStatus ignores');
});
