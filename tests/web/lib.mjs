// What the web tier's tests share: real services from the environment
// (tools/devenv env), a worker and the REST server on a prefix of their own,
// users made in PostgreSQL, tokens signed with the test secret.
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import pg from 'pg';
import { signJwt } from '../../tools/web/dist/jwt.js';
import { signWith, startJwks } from './jwks.mjs';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const WORKER = process.env.BW_WORKER || join(ROOT, 'build/backup-worker');
export const OUT = process.env.BW_TEST_OUTPUT || join(ROOT, 'build/test-output/web');
export const SECRET = 'test-secret-of-the-web-tier-0123456789abcdef';

for (const v of ['REDIS_URL', 'DATABASE_URL', 'S3_ENDPOINT'])
  if (!process.env[v]) throw new Error(`${v} is not set: run under eval "$(tools/devenv env)"`);

export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function until(what, fn, ms = 20000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** Starts a process, resolves once `ready` matches its stderr or stdout; kills it at exit. */
function start(name, cmd, args, env, ready) {
  mkdirSync(OUT, { recursive: true });
  const p = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  const seen = new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`${name} did not start:\n${log}`)), 20000);
    const on = (d) => {
      log += d;
      const m = ready.exec(log);
      if (m) {
        clearTimeout(timer);
        res(m);
      }
    };
    p.stdout.on('data', on);
    p.stderr.on('data', on);
    p.on('exit', (code) => rej(new Error(`${name} exited (${code}):\n${log}`)));
  });
  process.on('exit', () => p.kill('SIGKILL'));
  return { proc: p, seen, log: () => log, stop: () => stopProc(p) };
}

function stopProc(p) {
  if (p.exitCode !== null) return Promise.resolve();
  return new Promise((res) => {
    p.once('exit', res);
    p.kill('SIGTERM');
    setTimeout(() => p.kill('SIGKILL'), 10000).unref();
  });
}

/** A worker and the web server on a prefix of their own. */
/** The test project's signing keys (a JWKS on loopback), shared by every stack of a file. */
let JWKS = null;
export const jwks = () => JWKS;

export async function startStack(opts = {}) {
  JWKS ??= await startJwks();
  const prefix = `web${process.pid}${Math.floor(Math.random() * 1e6)}`;
  const metricsPort = await freePort();
  const worker = start('backup-worker', WORKER, [], {
    REDIS_PREFIX: prefix, WORKER_HTTP_PORT: String(metricsPort), JOB_VISIBILITY_TIMEOUT: '5s',
    WORKER_SHUTDOWN_GRACE: '5s', ...(opts.workerEnv ?? {}),
  }, new RegExp(`consuming ${prefix}:jobs`));
  await worker.seen;
  const web = start('backup-web', process.execPath, [join(ROOT, 'tools/web/dist/main.js')], {
    REDIS_PREFIX: prefix, WEB_PORT: '0', SUPABASE_JWT_SECRET: SECRET, WEB_LOG_LEVEL: 'warn',
    SUPABASE_JWKS_URL: JWKS.jwksUrl, SUPABASE_JWT_ISSUER: JWKS.issuer,
    WEB_JOBS_PER_MINUTE: String(opts.jobsPerMinute ?? 10),
  }, /listening on (http:\/\/[0-9.:]+)/);
  const [, url] = await web.seen;
  const redis = new Redis(process.env.REDIS_URL);
  const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 4 });
  return {
    prefix, url, metricsPort, redis, pool, worker, web,
    async close() {
      const t = Date.now();
      await Promise.all([web.stop(), worker.stop()]);
      if (Date.now() - t > 3000) process.stdout.write(`# stopping took ${Date.now() - t} ms\n`);
      await redis.quit();
      await pool.end();
      if (JWKS) await JWKS.close();
      JWKS = null;
    },
  };
}

/** A tenant of `orders` orders (tools/datagen), an owner with a business; returns its id. */
export async function makeTenant(orders = 30) {
  const id = randomUUID();
  await new Promise((res, rej) => {
    const p = spawn(join(ROOT, 'tools/datagen'), ['--user', id, '--orders', String(orders), '--seed', id],
      { stdio: ['ignore', 'ignore', 'inherit'] });
    p.on('exit', (c) => (c === 0 ? res() : rej(new Error(`datagen exited ${c}`))));
  });
  return id;
}

/** A user who is staff, not the owner: no business, role 'staff'. */
export async function makeStaff(pool) {
  const id = randomUUID();
  await pool.query("INSERT INTO profiles (id, email, role) VALUES ($1, $2, 'staff')", [id, `staff-${id}@example.com`]);
  return id;
}

/** A legacy (HS256, SUPABASE_JWT_SECRET) token of the test project. */
export function token(sub, extra = {}) {
  const now = Math.floor(Date.now() / 1000);
  return signJwt({ sub, role: 'authenticated', aud: 'authenticated', iss: JWKS?.issuer, iat: now, exp: now + 3600, ...extra }, SECRET);
}

/** A token signed with the project's signing key (ES256 by default, as Supabase issues them). */
export async function keyToken(sub, extra = {}, key = JWKS.keys[0]) {
  const now = Math.floor(Date.now() / 1000);
  return signWith(key, { sub, role: 'authenticated', aud: 'authenticated', iss: JWKS.issuer, iat: now, exp: now + 3600, ...extra });
}

/** A page of the web tier, signed in as user (an owner's email) and loaded; what goes wrong in it
 * (page errors, console errors) is collected in problems. */
export async function signedInPage(browser, url, user, height = 900, tok = token(user, { email: 'dueña@example.com' })) {
  const page = await browser.newPage({ viewport: { width: 1000, height } });
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => m.type() === 'error' && problems.push(`console: ${m.text()}`));
  await page.goto(url);
  await page.fill('#token', tok);
  await page.click('#signin-button');
  // the section shows before its figures arrive: wait for the first load
  await page.waitForSelector('#backup:not([hidden])[data-loaded]');
  return { page, problems };
}
