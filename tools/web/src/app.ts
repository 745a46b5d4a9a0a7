// The seed's REST API on @backup-worker/client: the routes, authentication
// (Supabase JWT), CSRF, per-user limits. main.ts wires it to the environment.

import { randomUUID } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import cookie from '@fastify/cookie';
import csrf from '@fastify/csrf-protection';
import rateLimit from '@fastify/rate-limit';
import helmet from '@fastify/helmet';
import fastifyStatic from '@fastify/static';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import type { Pool } from 'pg';
import { BackupQueue, BackupStore, Errors, ProgressHub, ProtocolError, isBackupId, isJobId, isRestorePoint, isUuid } from '@backup-worker/client';
import { type Claims, type Verifier } from './jwt.js';
import type { Presigner } from './s3link.js';

export interface WebConfig {
  /** Checks the bearer tokens (jwt.ts: JWKS and/or the legacy HS256 secret). */
  verifier: Verifier;
  /** Key of the CSRF tokens' MACs binding them to the user (WEB_CSRF_SECRET, else
   * SUPABASE_JWT_SECRET, else random). */
  csrfSecret: string;
  prefix: string;
  jobsPerMinute: number;
  secureCookies: boolean;
  logLevel: string;
  /** Links to exports (s3link.ts); null: the store is not S3, exports cannot be downloaded. */
  presigner: Presigner | null;
  /** How long a job's status hash is kept (the workers' JOB_RETENTION), ms. */
  jobRetentionMs?: number;
}

/** A download link is good this long (and never past the export's own expiry). */
export const EXPORT_LINK_SECONDS = 15 * 60;

export interface WebDeps {
  redis: Redis;
  subscriber: Redis;
  pool: Pool;
}

declare module 'fastify' {
  interface FastifyRequest {
    claims?: Claims;
  }
}

const CSRF_COOKIE = 'bw_csrf';
/** Open event streams a user may hold on one server (tabs, devices); past it, 429. */
export const EVENT_STREAMS_PER_USER = 8;
const here = dirname(fileURLToPath(import.meta.url));

class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly headers: Record<string, string> = {}) {
    super(message);
  }
}

export async function buildApp(cfg: WebConfig, deps: WebDeps): Promise<FastifyInstance> {
  const app = Fastify({
    logger: { level: cfg.logLevel },
    bodyLimit: 16 * 1024,
    forceCloseConnections: true,
    // refuse what the schema does not allow (Fastify's default strips unknown fields and coerces types)
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false } },
    // the router's own refusals, said without echoing the request (Fastify's default 414 put the
    // whole URL in its message: a reflected value in an error page)
    frameworkErrors: (err, _req, reply) => {
      const status = err.code === 'FST_ERR_MAX_PARAM_LENGTH' ? 414 : 400;
      (reply as FastifyReply).code(status).send({ error: status === 414 ? 'URI too long' : 'Bad request' });
    },
  });
  // cookies parsed and written by @fastify/cookie; security headers on every answer by
  // @fastify/helmet: the page loads only its own scripts, styles and streams, in no frame
  await app.register(cookie);
  await app.register(helmet, {
    contentSecurityPolicy: {
      useDefaults: false,
      directives: {
        defaultSrc: ["'self'"],
        scriptSrc: ["'self'"],
        styleSrc: ["'self'"],
        imgSrc: ["'self'", 'data:'],
        connectSrc: ["'self'"],
        objectSrc: ["'none'"],
        baseUri: ["'self'"],
        formAction: ["'self'"],
        frameAncestors: ["'none'"],
        ...(cfg.secureCookies ? { upgradeInsecureRequests: [] } : {}),
      },
    },
    hsts: cfg.secureCookies ? { maxAge: 15552000 } : false, // HTTPS only where the cookies are Secure
  });
  const queue = new BackupQueue({ redis: deps.redis, prefix: cfg.prefix, jobRetentionMs: cfg.jobRetentionMs });
  const store = new BackupStore(deps.pool);
  const hub = new ProgressHub(deps.subscriber, cfg.prefix);
  const streams = new Set<import('node:http').ServerResponse>(); // open event streams, ended at close
  app.addHook('onClose', async () => {
    for (const r of streams) r.end();
  });

  // ---- errors: always JSON {"error": ...} ----
  app.setErrorHandler((err: Error & { statusCode?: number; validation?: unknown }, req, reply) => {
    if (err instanceof HttpError) return reply.code(err.status).headers(err.headers).send({ error: err.message });
    if ((err as { code?: string }).code?.startsWith('FST_CSRF_')) return reply.code(403).send({ error: Errors.csrf });
    if (err instanceof ProtocolError) return reply.code(400).send({ error: err.message });
    if (err.validation) return reply.code(400).send({ error: `invalid request: ${err.message}` });
    const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    if (status === 500) req.log.error({ err }, 'request failed');
    return reply.code(status).send({ error: status === 500 ? 'internal error' : err.message });
  });
  app.setNotFoundHandler((_req, reply) => reply.code(404).send({ error: 'Not found' }));

  // ---- authentication, for every /api route ----
  app.addHook('onRequest', async (req: FastifyRequest) => {
    if (!req.url.startsWith('/api/')) return;
    const m = /^Bearer ([A-Za-z0-9._-]+)$/.exec(req.headers.authorization ?? '');
    const claims = m ? await cfg.verifier.verify(m[1]) : null;
    if (!claims || !isUuid(claims.sub) || (claims.role !== undefined && claims.role !== 'authenticated'))
      throw new HttpError(401, Errors.noUser);
    claims.sub = claims.sub.toLowerCase();
    req.claims = claims;
  });

  // ---- CSRF by @fastify/csrf-protection: double submit, bound to the signed-in user ----
  // The cookie holds a random secret (HttpOnly, SameSite=Strict); every POST and DELETE sends
  // X-CSRF-Token, a token made from that secret and MACed with the user's id (csrfOpts.userInfo),
  // so a token fetched by (or for) another user, or without its cookie, is refused.
  await app.register(csrf, {
    sessionPlugin: '@fastify/cookie',
    cookieKey: CSRF_COOKIE,
    cookieOpts: { path: '/', httpOnly: true, sameSite: 'strict', maxAge: 43200, secure: cfg.secureCookies, signed: false },
    getToken: (req) => {
      const h = req.headers['x-csrf-token'];
      return typeof h === 'string' ? h : '';
    },
    getUserInfo: (req) => req.claims?.sub ?? '',
    csrfOpts: { hmacKey: cfg.csrfSecret },
    logLevel: 'debug',
  });
  app.addHook('onRequest', (req, reply, done) => {
    if (!req.url.startsWith('/api/') || req.method === 'GET' || req.method === 'HEAD') return done();
    app.csrfProtection(req, reply, done);
  });

  // ---- jobs per user and minute by @fastify/rate-limit, counted in Redis so every replica of
  // the server shares them; checked in the handlers, once a request is valid and the user's ----
  await app.register(rateLimit, {
    global: false,
    redis: deps.redis,
    nameSpace: `${cfg.prefix}:web:rate:`,
    max: cfg.jobsPerMinute,
    timeWindow: 60000,
    keyGenerator: (req) => req.claims?.sub ?? '',
  });
  const checkRate = app.createRateLimit();

  const user = (req: FastifyRequest): Claims => {
    if (!req.claims) throw new HttpError(401, Errors.noUser);
    return req.claims;
  };

  const limit = async (req: FastifyRequest) => {
    const r = await checkRate(req);
    if (!r.isAllowed && r.isExceeded)
      throw new HttpError(429, Errors.tooMany, { 'retry-after': String(Math.max(1, r.ttlInSeconds)) });
  };
  const newJobId = (type: string) => `web-${type}-${randomUUID()}`;

  app.get('/api/csrf', async (req, reply) => {
    const token = reply.generateCsrf({ userInfo: user(req).sub });
    reply.header('cache-control', 'no-store');
    return { token };
  });

  app.post('/api/backup/create', {
    schema: {
      body: {
        type: 'object',
        additionalProperties: false,
        required: ['type'],
        properties: { type: { type: 'string', enum: ['full', 'incremental'] } },
      },
    },
  }, async (req, reply) => {
    const u = user(req);
    const { type } = req.body as { type: 'full' | 'incremental' };
    await limit(req);
    const jobId = await queue.enqueue({
      type: 'backup', userId: u.sub, mode: type, jobId: newJobId('backup'), requestedBy: u.sub, trigger: 'api',
    });
    return reply.code(202).send({ jobId });
  });

  app.get('/api/me', async (req) => {
    const u = user(req);
    return { userId: u.sub, email: u.email ?? null, owner: await store.isOwner(u.sub) };
  });

  app.get('/api/backup/list', async (req) => store.listBackups(user(req)));

  // the user's transactions captured from the WAL: the restore points (proto/README.md)
  app.get('/api/backup/timeline', {
    schema: {
      querystring: {
        type: 'object',
        additionalProperties: false,
        properties: { since: { type: 'string', maxLength: 64 } },
      },
    },
  }, async (req) => {
    const u = user(req);
    const { since } = req.query as { since?: string };
    if (since !== undefined && Number.isNaN(Date.parse(since))) throw new HttpError(400, 'since: not a time (ISO 8601)');
    return store.timeline(u, since);
  });

  app.post('/api/backup/restore', {
    schema: {
      body: {
        type: 'object',
        additionalProperties: false,
        properties: {
          backupId: { type: 'string', maxLength: 128 },
          // a point in time instead: the rows as they were then (proto/README.md)
          at: { type: 'string', maxLength: 39 },
          dryRun: { type: 'boolean' },
          tables: {
            type: 'array', minItems: 1, maxItems: 64, uniqueItems: true,
            items: { type: 'string', pattern: '^[a-z_][a-z0-9_]{0,62}$' },
          },
        },
      },
    },
  }, async (req, reply) => {
    const u = user(req);
    const { backupId, at, tables, dryRun } = req.body as { backupId?: string; at?: string; tables?: string[]; dryRun?: boolean };
    if ((backupId === undefined) === (at === undefined))
      throw new HttpError(400, "give 'backupId' (a backup) or 'at' (a point in time), one of them");
    if (at !== undefined) {
      if (!isRestorePoint(at))
        throw new HttpError(400, "'at' is not a time with its offset (2026-12-07T09:14:00+01:00) or an LSN");
      await limit(req);
      const jobId = await queue.enqueue({
        type: 'restore', userId: u.sub, at, tables, dryRun, jobId: newJobId('restore'), requestedBy: u.sub, trigger: 'api',
      });
      return reply.code(202).send({ jobId });
    }
    if (!isBackupId(backupId)) throw new HttpError(400, `'${backupId}' is not a backup id`);
    const b = await store.getBackup(u, backupId); // RLS: another user's backup is not there
    if (!b) throw new HttpError(404, Errors.notFound);
    if (b.status !== 'completed')
      throw new HttpError(409, `backup ${backupId} is ${b.status}: only a completed backup can be restored`);
    await limit(req);
    const jobId = await queue.enqueue({
      type: 'restore', userId: u.sub, backupId, tables, dryRun, jobId: newJobId('restore'), requestedBy: u.sub, trigger: 'api',
    });
    return reply.code(202).send({ jobId });
  });

  app.get('/api/backup/status', async (req) => store.statistics(user(req)));

  // "download my data": the worker writes the backup as plain JSON under exports/ (the export
  // job); the owner then gets a presigned link to it, 15 minutes at most
  app.post('/api/backup/export', {
    schema: {
      body: {
        type: 'object',
        additionalProperties: false,
        required: ['backupId'],
        properties: { backupId: { type: 'string', maxLength: 128 } },
      },
    },
  }, async (req, reply) => {
    const u = user(req);
    const { backupId } = req.body as { backupId: string };
    if (!isBackupId(backupId)) throw new HttpError(400, `'${backupId}' is not a backup id`);
    if (!cfg.presigner) throw new HttpError(501, 'exports need an S3 store (BACKUP_STORE=s3)');
    const b = await store.getBackup(u, backupId); // RLS: another user's backup is not there
    if (!b) throw new HttpError(404, Errors.notFound);
    if (b.status !== 'completed')
      throw new HttpError(409, `backup ${backupId} is ${b.status}: only a completed backup can be exported`);
    await limit(req);
    const exportId = randomUUID();
    const jobId = await queue.enqueue({
      type: 'export', userId: u.sub, backupId, exportId, jobId: newJobId('export'), requestedBy: u.sub, trigger: 'api',
    });
    return reply.code(202).send({ jobId, exportId });
  });

  app.get('/api/backup/exports/:exportId', async (req) => {
    const u = user(req);
    const { exportId } = req.params as { exportId: string };
    const x = isUuid(exportId) ? await store.getExport(u, exportId.toLowerCase()) : null;
    if (!x) throw new HttpError(404, Errors.exportNotFound);
    const { key, ...shown } = x;
    if (x.status !== 'completed' || !key) return { ...shown, url: null };
    const left = Math.floor((Date.parse(x.expires_at) - Date.now()) / 1000);
    if (left <= 0) throw new HttpError(410, 'the export has expired: export the backup again');
    if (!cfg.presigner) throw new HttpError(501, 'exports need an S3 store (BACKUP_STORE=s3)');
    const seconds = Math.min(EXPORT_LINK_SECONDS, left);
    const day = x.created_at.slice(0, 10);
    const url = await cfg.presigner.presign(key, seconds, `mis-datos-${day}.json.gz`);
    return { ...shown, url, urlExpiresAt: new Date(Date.now() + seconds * 1000).toISOString() };
  });

  app.delete('/api/backup/cleanup', async (req, reply) => {
    const u = user(req);
    if (!(await store.isOwner(u.sub))) throw new HttpError(403, Errors.notOwner);
    await limit(req);
    const jobId = await queue.enqueue({
      type: 'cleanup', userId: u.sub, jobId: newJobId('cleanup'), requestedBy: u.sub, trigger: 'api',
    });
    return reply.code(202).send({ jobId });
  });

  app.get('/api/backup/jobs/:jobId', async (req) => {
    const u = user(req);
    const { jobId } = req.params as { jobId: string };
    if (!isJobId(jobId)) throw new HttpError(404, Errors.jobNotFound);
    const s = await queue.status(jobId);
    // another user's job is as absent as an unknown one
    if (!s || s.userId !== u.sub) throw new HttpError(404, Errors.jobNotFound);
    return s;
  });

  const openStreams = new Map<string, number>(); // per user, on this server
  app.get('/api/backup/events', async (req: FastifyRequest, reply: FastifyReply) => {
    const u = user(req);
    const held = openStreams.get(u.sub) ?? 0;
    if (held >= EVENT_STREAMS_PER_USER)
      throw new HttpError(429, `at most ${EVENT_STREAMS_PER_USER} event streams per user: close one first`);
    openStreams.set(u.sub, held + 1);
    const raw = reply.raw;
    const stop = await hub.listen(u.sub, (e) => {
      raw.write(`event: ${e.event}\ndata: ${JSON.stringify(e)}\n\n`);
    });
    reply.hijack();
    raw.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      'x-accel-buffering': 'no',
      connection: 'keep-alive',
    });
    raw.write(': connected\n\n');
    streams.add(raw);
    const beat = setInterval(() => raw.write(': keep-alive\n\n'), 15000);
    req.raw.on('close', () => {
      const n = (openStreams.get(u.sub) ?? 1) - 1;
      if (n > 0) openStreams.set(u.sub, n);
      else openStreams.delete(u.sub);
      streams.delete(raw);
      clearInterval(beat);
      stop().catch((err) => req.log.warn({ err }, 'unsubscribe failed'));
    });
  });

  app.get('/healthz', async (_req, reply) => {
    try {
      await Promise.all([deps.redis.ping(), deps.pool.query('SELECT 1')]);
      return { ok: true };
    } catch (err) {
      return reply.code(503).send({ ok: false, error: (err as Error).message });
    }
  });

  app.get('/favicon.ico', async (_req, reply) => reply.code(204).header('cache-control', 'max-age=86400').send());

  // the page's files by @fastify/static: ours (public/), and the page's script as esbuild bundled
  // it (page/bundle.mjs: React, TanStack Query, @backup-worker/react and the browser client)
  const noCache = {
    cacheControl: false,
    setHeaders: (reply: FastifyReply) => {
      reply.header('cache-control', 'no-cache');
    },
  };
  await app.register(fastifyStatic, { root: join(here, '../public'), prefix: '/assets/', index: false, ...noCache });
  await app.register(fastifyStatic, {
    root: join(here, 'page'), prefix: '/assets/page/', decorateReply: false, index: false, ...noCache,
    allowedPath: (path: string) => path === '/app.js' || path === '/app.js.map',
  });
  app.get('/', async (_req, reply) => reply.sendFile('index.html'));

  return app;
}
