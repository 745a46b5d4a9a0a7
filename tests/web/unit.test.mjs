// Pure logic of the web tier, no services: the protocol's validation (the
// worker's rules, worker/jobs/jobspec.c), the JWT check, the job status parser.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { jobFields, parseJobStatus, ProtocolError } from '@backup-worker/client/protocol';
import { createVerifier, signJwt } from '../../tools/web/dist/jwt.js';
import { newKey, signWith, startJwks } from './jwks.mjs';

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

const ISS = 'https://project.supabase.co/auth/v1';

test('legacy HS256 (SUPABASE_JWT_SECRET): signature, expiry with 5 s leeway, not-before, issuer, audience', async () => {
  const v = createVerifier({ hsSecret: SECRET, issuer: ISS, audience: 'authenticated' });
  const now = Math.floor(Date.now() / 1000);
  const c = (extra = {}) => ({ sub: U, aud: 'authenticated', iss: ISS, exp: now + 60, ...extra });
  const good = signJwt(c(), SECRET);
  assert.equal((await v.verify(good)).sub, U);
  assert.equal((await v.verify(signJwt(c({ exp: now - 3 }), SECRET))).sub, U, 'expired 3 s ago: inside the leeway');
  const refused = {
    'another secret': signJwt(c(), SECRET + 'x'),
    'expired 30 s ago': signJwt(c({ exp: now - 30 }), SECRET),
    'not yet valid': signJwt(c({ nbf: now + 100 }), SECRET),
    'no exp': signJwt({ sub: U, aud: 'authenticated', iss: ISS }, SECRET),
    'no sub': signJwt({ aud: 'authenticated', iss: ISS, exp: now + 60 }, SECRET),
    'another audience': signJwt(c({ aud: 'anon' }), SECRET),
    'no audience': signJwt({ sub: U, iss: ISS, exp: now + 60 }, SECRET),
    'another issuer': signJwt(c({ iss: 'https://evil.example/auth/v1' }), SECRET),
  };
  const [h, p] = good.split('.');
  const hs384 = Buffer.from(JSON.stringify({ alg: 'HS384', typ: 'JWT' })).toString('base64url');
  refused['another algorithm (HS384)'] = `${hs384}.${p}.${createHmac('sha384', SECRET).update(`${hs384}.${p}`).digest('base64url')}`;
  refused['alg none'] = `${Buffer.from(JSON.stringify({ alg: 'none' })).toString('base64url')}.${p}.`;
  const other = Buffer.from(JSON.stringify(c({ sub: '00000000-0000-4000-8000-000000000000' }))).toString('base64url');
  refused['claims swapped under the signature'] = `${h}.${other}.${good.split('.')[2]}`;
  refused['two parts'] = 'a.b';
  refused['a signature of zeros'] = `${h}.${p}.${'A'.repeat(43)}`;
  for (const [name, tok] of Object.entries(refused)) assert.equal(await v.verify(tok), null, name);
  // without the secret (a project on signing keys only), HS256 is refused whatever it says
  assert.equal(await createVerifier({ audience: 'authenticated' }).verify(good), null, 'HS256 without a secret');
});

test('signing keys (JWKS): ES256 and RS256, rotation, and each forgery', async () => {
  const jwks = await startJwks();
  try {
    const v = createVerifier({ jwksUrl: jwks.jwksUrl, issuer: jwks.issuer, audience: 'authenticated', jwksCooldownMs: 50 });
    const now = Math.floor(Date.now() / 1000);
    const c = (extra = {}) => ({ sub: U, aud: 'authenticated', iss: jwks.issuer, exp: now + 60, role: 'authenticated', ...extra });
    const [es, rs] = jwks.keys;
    assert.equal((await v.verify(await signWith(es, c()))).sub, U, 'ES256');
    assert.equal((await v.verify(await signWith(rs, c()))).sub, U, 'RS256');
    const fetched = jwks.fetches;
    assert.equal((await v.verify(await signWith(es, c()))).sub, U);
    assert.equal(jwks.fetches, fetched, 'the keys are cached');
    // rotation: a key published after the first fetch is found when a token names it
    const es2 = await newKey('ES256', 'es-2');
    jwks.keys.push(es2);
    await new Promise((r) => setTimeout(r, 80));
    assert.equal((await v.verify(await signWith(es2, c()))).sub, U, 'a rotated-in key');
    assert.ok(jwks.fetches > fetched, 'fetched again for the unknown kid');
    // forgeries
    const stranger = await newKey('ES256', 'es-1'); // a known kid, another private key
    const rsAsEs = { ...stranger, kid: 'rs-1' };
    const pem = Buffer.from(JSON.stringify(rs.jwk));
    const hsWithPublic = signJwt(c(), pem.toString()); // alg confusion: HMAC keyed with the public key
    const hsHeader = JSON.parse(Buffer.from(hsWithPublic.split('.')[0], 'base64url'));
    assert.equal(hsHeader.alg, 'HS256');
    const forged = {
      'a known kid, another key': await signWith(stranger, c()),
      'an unknown kid': await signWith(await newKey('ES256', 'es-9'), c()),
      'an ES256 signature under the RSA key\'s kid': await signWith(rsAsEs, c()),
      'HS256 keyed with the public key': hsWithPublic,
      'expired 30 s ago': await signWith(es, c({ exp: now - 30 })),
      'not yet valid': await signWith(es, c({ nbf: now + 100 })),
      'another issuer': await signWith(es, c({ iss: 'https://evil.example/auth/v1' })),
      'another audience': await signWith(es, c({ aud: 'service_role' })),
      'no sub': await signWith(es, { aud: 'authenticated', iss: jwks.issuer, exp: now + 60 }),
      'alg none with a real kid': `${Buffer.from(JSON.stringify({ alg: 'none', kid: 'es-1' })).toString('base64url')}.${Buffer.from(JSON.stringify(c())).toString('base64url')}.`,
    };
    const t = await signWith(es, c());
    const [h, , s] = t.split('.');
    forged['claims swapped under the signature'] = `${h}.${Buffer.from(JSON.stringify(c({ sub: '00000000-0000-4000-8000-000000000000' }))).toString('base64url')}.${s}`;
    for (const [name, tok] of Object.entries(forged)) assert.equal(await v.verify(tok), null, name);
    // the JWKS unreachable: refused, not a crash; back, accepted again
    jwks.down = true;
    const cold = createVerifier({ jwksUrl: jwks.jwksUrl, issuer: jwks.issuer, audience: 'authenticated' });
    assert.equal(await cold.verify(await signWith(es, c())), null, 'JWKS down');
    jwks.down = false;
    assert.equal((await createVerifier({ jwksUrl: jwks.jwksUrl, issuer: jwks.issuer, audience: 'authenticated' })
      .verify(await signWith(es, c()))).sub, U, 'JWKS back');
  } finally {
    await jwks.close();
  }
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
