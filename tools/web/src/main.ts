// `npm run web`: the reference REST server, configured from the environment
// the worker uses (REDIS_URL, DATABASE_URL, REDIS_PREFIX) plus its own.

import { Redis } from 'ioredis';
import pg from 'pg';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { buildApp } from './app.js';
import { createVerifier } from './jwt.js';
import { createPresigner, s3LinkConfigFromEnv } from './s3link.js';
import { JOB_RETENTION_MS, parseDuration } from '@backup-worker/client';

function fail(msg: string): never {
  process.stderr.write(`backup-web: ${msg}\n`);
  process.exit(2);
}

function intEnv(name: string, def: number, min: number, max: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return def;
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) fail(`${name}: '${v}' is not a number from ${min} to ${max}`);
  return Number(v);
}

// Authentication as Supabase does it: the project's JWKS (SUPABASE_URL, or SUPABASE_JWKS_URL),
// and for legacy projects the HS256 secret; at least one of them.
const supabaseUrl = (process.env.SUPABASE_URL ?? '').replace(/\/+$/, '');
const jwksUrl = process.env.SUPABASE_JWKS_URL || (supabaseUrl ? `${supabaseUrl}/auth/v1/.well-known/jwks.json` : '');
const secret = process.env.SUPABASE_JWT_SECRET ?? '';
if (secret && secret.length < 32) fail('SUPABASE_JWT_SECRET: the HS256 secret of the project\'s JWTs is at least 32 characters');
if (!jwksUrl && !secret)
  fail('SUPABASE_URL (or SUPABASE_JWKS_URL) is required: the project whose signing keys sign the users\' tokens ' +
    '(or, for a legacy project, SUPABASE_JWT_SECRET)');
for (const [name, v] of [['SUPABASE_URL', supabaseUrl], ['SUPABASE_JWKS_URL', jwksUrl]]) {
  if (!v) continue;
  try {
    const u = new URL(v);
    if (u.protocol !== 'https:' && u.hostname !== '127.0.0.1' && u.hostname !== 'localhost') throw new Error('not https');
  } catch {
    fail(`${name}: '${v}' is not an https URL (http only on this host)`);
  }
}
const issuer = process.env.SUPABASE_JWT_ISSUER || (supabaseUrl ? `${supabaseUrl}/auth/v1` : undefined);
const csrfSecret = process.env.WEB_CSRF_SECRET || secret || randomBytes(32).toString('base64url');
if (!process.env.WEB_CSRF_SECRET && !secret)
  process.stderr.write('backup-web: no WEB_CSRF_SECRET: CSRF tokens are good for this process only (set it when ' +
    'several servers share the users)\n');
const redisUrl = process.env.REDIS_URL || fail('REDIS_URL is required (the workers\' Redis)');
const databaseUrl = process.env.WEB_DATABASE_URL || process.env.DATABASE_URL ||
  fail('DATABASE_URL (or WEB_DATABASE_URL) is required');
const prefix = process.env.REDIS_PREFIX || 'backup';
if (!/^[A-Za-z0-9_.:{}-]{1,64}$/.test(prefix)) fail(`REDIS_PREFIX: '${prefix}' must be 1-64 letters, digits or _.:-{}`);
// rediss://: TLS as the workers speak it (the server's certificate and name always verified,
// REDIS_CA_FILE or the system's store, a client certificate for mutual TLS)
const tlsFiles = { ca: 'REDIS_CA_FILE', cert: 'REDIS_TLS_CERT_FILE', key: 'REDIS_TLS_KEY_FILE' } as const;
const readPem = (name: string): Buffer | undefined => {
  const path = process.env[name];
  if (!path) return undefined;
  try {
    return readFileSync(path);
  } catch (e) {
    return fail(`${name}: cannot read '${path}': ${(e as Error).message}`);
  }
};
let redisTls: { ca?: Buffer; cert?: Buffer; key?: Buffer; minVersion: 'TLSv1.2' } | undefined;
if (redisUrl.startsWith('rediss://')) {
  redisTls = { ca: readPem(tlsFiles.ca), cert: readPem(tlsFiles.cert), key: readPem(tlsFiles.key), minVersion: 'TLSv1.2' };
  if (Boolean(redisTls.cert) !== Boolean(redisTls.key)) fail('REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE go together');
} else {
  for (const name of Object.values(tlsFiles))
    if (process.env[name]) fail(`${name} is set, but REDIS_URL is redis:// (plain text): use rediss://`);
}
const port = intEnv('WEB_PORT', 18090, 0, 65535);
const retentionText = process.env.JOB_RETENTION || '';
const jobRetentionMs = retentionText ? parseDuration(retentionText) : JOB_RETENTION_MS;
if (jobRetentionMs === null || jobRetentionMs < 60000)
  fail(`JOB_RETENTION: '${retentionText}' is not a duration of at least a minute (7d, 12h), as the workers take it`);
const s3link = s3LinkConfigFromEnv(process.env);
const host = process.env.WEB_HOST || '127.0.0.1';

const redis = new Redis(redisUrl, { maxRetriesPerRequest: 3, ...(redisTls ? { tls: redisTls } : {}) });
const subscriber = redis.duplicate();
const pool = new pg.Pool({ connectionString: databaseUrl, max: intEnv('WEB_PG_POOL', 10, 1, 100) });
for (const c of [redis, subscriber]) c.on('error', (e) => process.stderr.write(`backup-web: redis: ${e.message}\n`));
pool.on('error', (e) => process.stderr.write(`backup-web: postgres: ${e.message}\n`));

const app = await buildApp({
  verifier: createVerifier({
    jwksUrl: jwksUrl || undefined,
    hsSecret: secret || undefined,
    issuer,
    audience: process.env.SUPABASE_JWT_AUDIENCE || 'authenticated',
    onRefused: (why) => {
      if (process.env.WEB_LOG_LEVEL === 'debug') process.stderr.write(`backup-web: token refused: ${why}\n`);
    },
  }),
  csrfSecret,
  prefix,
  jobsPerMinute: intEnv('WEB_JOBS_PER_MINUTE', 10, 1, 10000),
  secureCookies: process.env.WEB_SECURE_COOKIES === 'true',
  logLevel: process.env.WEB_LOG_LEVEL || 'info',
  presigner: s3link ? createPresigner(s3link) : null,
  jobRetentionMs,
}, { redis, subscriber, pool });

let closing = false;
const close = async () => {
  if (closing) return;
  closing = true;
  await app.close();
  await Promise.allSettled([pool.end(), redis.quit(), subscriber.quit()]);
  process.exit(0);
};
process.on('SIGTERM', close);
process.on('SIGINT', close);

try {
  const at = await app.listen({ port, host });
  process.stderr.write(`backup-web: listening on ${at} (Redis prefix ${prefix})\n`);
} catch (e) {
  fail(`cannot listen on ${host}:${port}: ${(e as Error).message}`);
}
