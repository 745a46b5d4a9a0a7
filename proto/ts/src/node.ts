// The Node backend's side of the protocol: enqueue jobs (validated before XADD),
// read a job's status, follow a user's progress, and read a user's backups and
// statistics from PostgreSQL under row-level security.

import type { Redis } from 'ioredis';
import type { Pool, PoolClient } from 'pg';
import {
  type BackupInfo,
  type ExportInfo,
  JOB_RETENTION_MS,
  type BackupStatistics,
  type Job,
  type JobStatus,
  type ProgressEvent,
  type TimelineEntry,
  jobFields,
  keys,
  parseJobStatus,
  isUuid,
  ProtocolError,
} from './protocol.js';

export interface QueueOptions {
  /** Commands (XADD, EVAL, HGETALL). */
  redis: Redis;
  /** REDIS_PREFIX of the workers (default `backup`). */
  prefix?: string;
  /** How long a job's status hash is kept, ms: the workers' JOB_RETENTION (default the protocol's,
   * JOB_RETENTION_MS; parseDuration reads the setting's text). */
  jobRetentionMs?: number;
}

// proto/lua/enqueue.lua without its comments (backupctl runs that file; tests/test_names.sh
// checks the two agree)
const ENQUEUE_LUA = `
local e = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 5))
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('HSET', KEYS[2], 'status', 'queued', 'entry', e, 'type', ARGV[1], 'user_id', ARGV[2],
             'created_at', ARGV[3], 'stage', 'queued')
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return e`;

export class BackupQueue {
  private readonly redis: Redis;
  private readonly k: ReturnType<typeof keys>;
  private readonly retention: number;

  constructor(opts: QueueOptions) {
    this.redis = opts.redis;
    this.retention = opts.jobRetentionMs ?? JOB_RETENTION_MS;
    this.k = keys(opts.prefix ?? 'backup');
  }

  /** Validates the job as the worker would, adds it to the stream, returns its job id. */
  async enqueue(job: Job): Promise<string> {
    const fields = jobFields(job);
    const args: string[] = [];
    for (const [k, v] of Object.entries(fields)) args.push(k, v);
    if (!fields.job_id) {
      const entry = await this.redis.xadd(this.k.jobs, '*', ...args);
      return entry as string;
    }
    // The entry and, unless the id is known already, the job's status `queued` in one script:
    // a caller reading the job right after this (GET /api/backup/jobs/:id) finds it before a
    // worker claims it, instead of a 404. The worker's start takes the hash over (the same
    // entry: not a duplicate) and sets its own retention.
    await this.redis.eval(ENQUEUE_LUA, 2, this.k.jobs, this.k.job(fields.job_id),
      fields.type, fields.user_id ?? '', String(Date.now()), String(this.retention), ...args);
    return fields.job_id;
  }

  backup(userId: string, mode: 'full' | 'incremental' | 'differential' = 'full', extra: Partial<Job> = {}) {
    return this.enqueue({ ...extra, type: 'backup', userId, mode } as Job);
  }

  restore(userId: string, backupId: string, opts: { tables?: string[]; dryRun?: boolean; jobId?: string; requestedBy?: string } = {}) {
    return this.enqueue({ type: 'restore', userId, backupId, ...opts });
  }

  /** The user's rows as they were at `at` (an RFC 3339 time with its offset, or an LSN). */
  restoreAt(userId: string, at: string, opts: { tables?: string[]; dryRun?: boolean; jobId?: string; requestedBy?: string } = {}) {
    return this.enqueue({ type: 'restore', userId, at, ...opts });
  }

  cleanup(userId: string, opts: { retentionDays?: number; requestedBy?: string; jobId?: string } = {}) {
    return this.enqueue({ type: 'cleanup', userId, ...opts });
  }

  /** Enqueues the job and waits for its end (`hub` follows the user's events); its final status. */
  async runJob(job: Job & { userId: string }, hub: ProgressHub, timeoutMs = 120_000): Promise<JobStatus> {
    let id = '';
    await hub.run(job.userId, async () => (id = await this.enqueue(job)), timeoutMs);
    const s = await this.status(id);
    if (!s) throw new Error(`job ${id}: its status is gone`);
    return s;
  }

  /** The job's status hash, or null when unknown (never enqueued, or past JOB_RETENTION). */
  async status(jobId: string): Promise<JobStatus | null> {
    // an id naming another key of the queue (`<id>:payload`, a delayed job's) is no job, and says
    // nothing of what that key is (HGETALL would answer WRONGTYPE)
    let h: Record<string, string>;
    try {
      h = await this.redis.hgetall(this.k.job(jobId));
    } catch (err) {
      if (/WRONGTYPE/.test((err as Error).message)) return null;
      throw err;
    }
    return parseJobStatus(jobId, h);
  }
}

/**
 * Progress events of users, from `{prefix}:progress:{user_id}`, over one
 * subscriber connection shared by every follower (a web server follows many
 * users at once and must not open a Redis connection per browser tab).
 */
export class ProgressHub {
  private readonly sub: Redis;
  private readonly k: ReturnType<typeof keys>;
  private readonly followers = new Map<string, Set<(e: ProgressEvent) => void>>();

  /** `subscriber` is a connection of its own: pub/sub takes it over. */
  constructor(subscriber: Redis, prefix = 'backup') {
    this.sub = subscriber;
    this.k = keys(prefix);
    this.sub.on('message', (channel: string, message: string) => {
      const set = this.followers.get(channel);
      if (!set) return;
      let e: ProgressEvent;
      try {
        e = JSON.parse(message) as ProgressEvent;
      } catch {
        return; // not ours: the channel carries JSON only
      }
      for (const f of set) f(e);
    });
  }

  /** Calls `fn` for every event of the user until the returned function is called. */
  async listen(userId: string, fn: (e: ProgressEvent) => void): Promise<() => Promise<void>> {
    if (!isUuid(userId)) throw new ProtocolError(`field 'user_id': '${userId}' is not a UUID`);
    const channel = this.k.progress(userId.toLowerCase());
    let set = this.followers.get(channel);
    if (!set) {
      set = new Set();
      this.followers.set(channel, set);
      await this.sub.subscribe(channel);
    }
    set.add(fn);
    return async () => {
      const s = this.followers.get(channel);
      if (!s || !s.delete(fn) || s.size > 0) return;
      this.followers.delete(channel);
      await this.sub.unsubscribe(channel);
    };
  }

  /** The user's events as an async iterator; ends when `signal` aborts. */
  async *follow(userId: string, signal?: AbortSignal): AsyncGenerator<ProgressEvent> {
    const queue: ProgressEvent[] = [];
    let wake: (() => void) | null = null;
    const stop = await this.listen(userId, (e) => {
      queue.push(e);
      wake?.();
    });
    const aborted = new Promise<void>((resolve) => {
      if (signal?.aborted) resolve();
      signal?.addEventListener('abort', () => resolve(), { once: true });
    });
    try {
      while (!signal?.aborted) {
        if (queue.length === 0)
          await Promise.race([new Promise<void>((r) => (wake = r)), aborted]);
        wake = null;
        while (queue.length > 0) yield queue.shift()!;
      }
    } finally {
      await stop();
    }
  }

  /**
   * Subscribes to the user's events, then calls `start` (which enqueues and
   * returns the job id), then resolves with the job's last event: `completed`,
   * `dead`, or `duplicate` (that job id ran already: read its status). Nothing
   * is missed however fast the job runs.
   */
  async run(userId: string, start: () => Promise<string>, timeoutMs = 120_000): Promise<ProgressEvent> {
    const seen: ProgressEvent[] = [];
    let jobId: string | null = null;
    let settle!: (e: ProgressEvent) => void;
    let fail!: (e: Error) => void;
    const ended = new Promise<ProgressEvent>((res, rej) => ((settle = res), (fail = rej)));
    const check = (e: ProgressEvent) => {
      if (jobId !== null && e.job_id === jobId && ['completed', 'dead', 'duplicate'].includes(e.event)) settle(e);
    };
    const stop = await this.listen(userId, (e) => {
      seen.push(e);
      check(e);
    });
    const timer = setTimeout(() => fail(new Error(`job ${jobId}: no end within ${timeoutMs} ms`)), timeoutMs);
    try {
      jobId = await start();
      seen.forEach(check);
      return await ended;
    } finally {
      clearTimeout(timer);
      await stop();
    }
  }
}

/**
 * A user's backups and statistics. Every read runs as the role `authenticated`
 * with the user's JWT claims set (`request.jwt.claims`), so the tables'
 * row-level security decides what the user sees, as on Supabase. The pool's
 * role must be a member of `authenticated` (proto/sql/015).
 */
export class BackupStore {
  constructor(private readonly pool: Pool) {}

  /** Runs `fn` in a read-only transaction as `authenticated` with the claims set. */
  async asUser<T>(claims: { sub: string; [k: string]: unknown }, fn: (c: PoolClient) => Promise<T>): Promise<T> {
    if (!isUuid(claims.sub)) throw new ProtocolError(`claim 'sub': '${claims.sub}' is not a UUID`);
    const c = await this.pool.connect();
    try {
      await c.query('BEGIN READ ONLY');
      await c.query("SELECT set_config('request.jwt.claims', $1, true), set_config('role', 'authenticated', true)",
        [JSON.stringify(claims)]);
      const out = await fn(c);
      await c.query('COMMIT');
      return out;
    } catch (e) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw e;
    } finally {
      c.release();
    }
  }

  /** The user's backups, newest first (deleted ones left out). */
  listBackups(claims: { sub: string }, limit = 100): Promise<BackupInfo[]> {
    return this.asUser(claims, async (c) => {
      const r = await c.query(
        `SELECT id, type, status, size, (SELECT sum(value::bigint) FROM jsonb_each_text(row_counts)) AS rows,
                created_at, completed_at, coalesce(verify_status = 'ok', false) AS verified
           FROM backup_metadata WHERE status <> 'deleted' AND user_id = $2::uuid
          ORDER BY created_at DESC, id DESC LIMIT $1`, [limit, claims.sub]);
      return r.rows.map((row) => ({
        id: row.id,
        type: row.type,
        status: row.status,
        size: row.size === null ? null : Number(row.size),
        rows: row.rows === null ? null : Number(row.rows),
        created_at: new Date(row.created_at).toISOString(),
        completed_at: row.completed_at ? new Date(row.completed_at).toISOString() : null,
        verified: row.verified,
      }));
    });
  }

  // Each read also names the user: row-level security is the guarantee, the
  // WHERE clause keeps the plans on the user's index.

  /** One backup of the user's, or null when it is not theirs or does not exist. */
  getBackup(claims: { sub: string }, backupId: string): Promise<BackupInfo | null> {
    return this.asUser(claims, async (c) => {
      const r = await c.query(
        `SELECT id, type, status, size, NULL AS rows, created_at, completed_at,
                coalesce(verify_status = 'ok', false) AS verified
           FROM backup_metadata WHERE id = $1 AND user_id = $2::uuid`, [backupId, claims.sub]);
      if (r.rowCount === 0) return null;
      const row = r.rows[0];
      return {
        id: row.id, type: row.type, status: row.status,
        size: row.size === null ? null : Number(row.size), rows: null,
        created_at: new Date(row.created_at).toISOString(),
        completed_at: row.completed_at ? new Date(row.completed_at).toISOString() : null,
        verified: row.verified,
      };
    });
  }

  /** One export of the user's, or null when it is not theirs or does not exist. */
  getExport(claims: { sub: string }, exportId: string): Promise<ExportInfo | null> {
    if (!isUuid(exportId)) return Promise.resolve(null);
    return this.asUser(claims, async (c) => {
      const r = await c.query(
        `SELECT id, backup_id, status, s3_key, size, row_count, error, created_at, expires_at
           FROM backup_exports WHERE id = $1::uuid AND user_id = $2::uuid`, [exportId, claims.sub]);
      if (r.rowCount === 0) return null;
      const row = r.rows[0];
      return {
        id: row.id, backup_id: row.backup_id, status: row.status, key: row.s3_key,
        size: row.size === null ? null : Number(row.size),
        rows: row.row_count === null ? null : Number(row.row_count),
        error: row.error,
        created_at: new Date(row.created_at).toISOString(),
        expires_at: new Date(row.expires_at).toISOString(),
      };
    });
  }

  /**
   * The user's captured transactions since `since` (an ISO time; all when absent), oldest
   * first, at most `limit` (the newest ones when there are more): the restore points.
   */
  timeline(claims: { sub: string }, since?: string, limit = 500): Promise<TimelineEntry[]> {
    if (since !== undefined && Number.isNaN(Date.parse(since)))
      throw new ProtocolError('since: not a time (ISO 8601)');
    return this.asUser(claims, async (c) => {
      const r = await c.query(
        `SELECT * FROM (
           SELECT coalesce(t->>'time', to_char(s.last_commit AT TIME ZONE 'UTC',
                    'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')) AS time,
                  coalesce(t->>'lsn', s.end_lsn::text) AS lsn, (t->>'xid')::bigint AS xid,
                  CASE WHEN t IS NULL THEN cardinality(s.xids) ELSE 1 END AS transactions,
                  coalesce(t->'counts', s.counts) AS counts
             FROM change_segments s LEFT JOIN LATERAL jsonb_array_elements(s.txns) t ON true
            WHERE s.user_id = $1::uuid AND s.last_commit >= coalesce($2::timestamptz, '-infinity')
            ORDER BY coalesce(t->>'lsn', s.end_lsn::text)::pg_lsn DESC LIMIT $3) x
          ORDER BY lsn::pg_lsn`, [claims.sub, since ?? null, limit]);
      return r.rows.map((row) => ({
        time: row.time,
        lsn: row.lsn,
        xid: row.xid === null ? null : Number(row.xid),
        transactions: Number(row.transactions),
        counts: row.counts,
      }));
    });
  }

  /** The user's line of `backup_statistics` (zeros before the first backup). */
  statistics(claims: { sub: string }): Promise<BackupStatistics> {
    return this.asUser(claims, async (c) => {
      const r = await c.query(
        `SELECT total_backups, total_size_bytes, successful_backups, failed_backups, success_rate,
                last_backup_at FROM backup_statistics WHERE user_id = $1::uuid`, [claims.sub]);
      const s = r.rows[0];
      return {
        total_backups: s ? Number(s.total_backups) : 0,
        total_size_bytes: s ? Number(s.total_size_bytes) : 0,
        successful_backups: s ? Number(s.successful_backups) : 0,
        failed_backups: s ? Number(s.failed_backups) : 0,
        success_rate: s && s.success_rate !== null ? Number(s.success_rate) : null,
        last_backup_at: s && s.last_backup_at ? new Date(s.last_backup_at).toISOString() : null,
      };
    });
  }

  /**
   * Whether the user owns their account (`profiles.role = 'owner'`, or the
   * owner of a business): the rule the worker's cleanup applies to
   * `requested_by`. Read as the pool's own role: profiles carry no policy.
   */
  async isOwner(userId: string): Promise<boolean> {
    if (!isUuid(userId)) return false;
    const r = await this.pool.query(
      `SELECT EXISTS (SELECT 1 FROM profiles p WHERE p.id = $1::uuid AND (p.role = 'owner'
              OR EXISTS (SELECT 1 FROM businesses b WHERE b.owner_id = p.id))) AS owner`, [userId]);
    return r.rows[0].owner === true;
  }
}
