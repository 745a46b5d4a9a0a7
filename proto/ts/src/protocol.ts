// The Redis stream protocol of proto/README.md, as types and as the same
// validation the worker applies (worker/jobs/jobspec.c): a job refused here would be
// dead-lettered by the worker with the same reason. No Node or browser
// dependency: both sides import it.

export type JobType = 'backup' | 'restore' | 'verify' | 'cleanup' | 'replicate' | 'export' | 'ping';
export type BackupMode = 'full' | 'incremental' | 'differential';
export type Trigger = 'manual' | 'scheduled' | 'api';
export type Source = 'primary' | 'replica';

interface Common {
  /** 1-128 of A-Za-z0-9_.:-; default: the stream entry id. The same id enqueued twice runs once. */
  jobId?: string;
  /** The user asking (a cleanup checks that they own the account). */
  requestedBy?: string;
  trigger?: Trigger;
}

export interface BackupJob extends Common {
  type: 'backup';
  userId: string;
  mode?: BackupMode;
}

export interface RestoreJob extends Common {
  type: 'restore';
  userId: string;
  /** The backup to restore; or, instead, `at`. */
  backupId?: string;
  /**
   * A point in time: an RFC 3339 time with its offset (`2026-12-07T09:14:00+01:00`, `...Z`) or
   * an LSN (`16/B374D848`). The user's rows as they were after the last of their transactions
   * committed by then: the newest backup before it plus the changes captured from the WAL.
   */
  at?: string;
  tables?: string[];
  from?: Source;
  dryRun?: boolean;
}

export interface VerifyJob extends Common {
  type: 'verify';
  userId?: string;
  backupId?: string;
  from?: Source;
}

export interface CleanupJob extends Common {
  type: 'cleanup';
  userId?: string;
  retentionDays?: number;
  scope?: 'user' | 'all';
}

export interface ReplicateJob extends Common {
  type: 'replicate';
  userId?: string;
  backupId: string;
}

/** "Download my data": one of the user's backups as a plain JSON document (gzip), kept a day. */
export interface ExportJob extends Common {
  type: 'export';
  userId: string;
  backupId: string;
  /** The export's id (a UUID; default: derived from the job id): the row of backup_exports. */
  exportId?: string;
}

export interface PingJob extends Common {
  type: 'ping';
  userId?: string;
}

export type Job = BackupJob | RestoreJob | VerifyJob | CleanupJob | ReplicateJob | ExportJob | PingJob;

/** Status of a job: the `{prefix}:job:{job_id}` hash. */
export type JobState = 'queued' | 'running' | 'retrying' | 'completed' | 'dead';

export interface JobStatus {
  jobId: string;
  status: JobState;
  type: string;
  userId?: string;
  progress: number;
  stage?: string;
  rows: number;
  rowsTotal: number;
  bytes: number;
  note?: string;
  result?: unknown;
  backupId?: string;
  error?: string;
  attempts: number;
  retryAt?: number;
  worker?: string;
  createdAt?: number;
  startedAt?: number;
  finishedAt?: number;
}

export type EventKind =
  | 'started'
  | 'progress'
  | 'retrying'
  | 'completed'
  | 'dead'
  | 'waiting'
  | 'duplicate'
  | 'handed_back';

/** One message of `{prefix}:progress:{user_id}` (string fields, as the worker sends them). */
export interface ProgressEvent {
  event: EventKind;
  job_id: string;
  type: string;
  user_id?: string;
  status?: string;
  attempt?: string;
  worker?: string;
  ts?: string;
  progress?: string;
  stage?: string;
  rows?: string;
  rows_total?: string;
  bytes?: string;
  backup_id?: string;
  error?: string;
  retry_at?: string;
  note?: string;
  result?: string;
}

/** A backup as the web tier lists it (a `backup_metadata` row). */
export interface BackupInfo {
  id: string;
  type: 'full' | 'incremental' | 'differential';
  status: 'pending' | 'running' | 'completed' | 'failed' | 'expired' | 'deleted';
  size: number | null;
  rows: number | null;
  created_at: string;
  completed_at: string | null;
  verified: boolean;
}

/** A user's export ("download my data"): a row of `backup_exports` (proto/sql/024). */
export interface ExportInfo {
  id: string;
  backup_id: string;
  status: 'running' | 'completed' | 'failed' | 'expired';
  /** The object's key (exports/{user_id}/{id}.json.gz), once completed. */
  key: string | null;
  size: number | null;
  rows: number | null;
  error: string | null;
  created_at: string;
  expires_at: string;
}

/** A user's line of the `backup_statistics` view. */
export interface BackupStatistics {
  total_backups: number;
  total_size_bytes: number;
  successful_backups: number;
  failed_backups: number;
  success_rate: number | null;
  last_backup_at: string | null;
}

/** A table's changes in one transaction: inserted, updated, deleted rows; t: truncated. */
export interface TableCounts {
  i: number;
  u: number;
  d: number;
  t: number;
}

/**
 * One of the user's transactions captured from the WAL (`BACKUP_TRACKING=wal`,
 * `change_segments.txns`): a restore point. A segment recorded before per-transaction
 * summaries (021) is one entry for all its transactions (`xid` null).
 */
export interface TimelineEntry {
  time: string; // commit time, RFC 3339 UTC with microseconds
  lsn: string; // commit LSN, as PostgreSQL writes it
  xid: number | null;
  transactions: number;
  counts: Record<string, TableCounts>;
}

/** A job the protocol refuses; the message names the field, as the worker's dead letters do. */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const JOB_ID = /^[A-Za-z0-9_.:-]{1,128}$/;
const BACKUP_ID = /^(backup|incremental|differential)-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}-[0-9A-Za-z]+$/;
const TABLE = /^[a-z_][a-z0-9_]{0,62}$/;
const TABLES_MAX = 64;
const ID_MAX = 128;

export const isUuid = (s: unknown): s is string => typeof s === 'string' && UUID.test(s);
export const isBackupId = (s: unknown): s is string =>
  typeof s === 'string' && s.length <= ID_MAX && BACKUP_ID.test(s);
export const isJobId = (s: unknown): s is string => typeof s === 'string' && JOB_ID.test(s);
// a restore's `at` as worker/jobs/jobspec.c reads it: a time with its offset, or an LSN
const AT_TIME = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-](\d{2}):(\d{2}))$/;
const AT_LSN = /^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/;
export const isRestorePoint = (s: unknown): s is string => {
  if (typeof s !== 'string' || s.length >= 40) return false;
  if (AT_LSN.test(s)) return true;
  const m = AT_TIME.exec(s);
  if (!m) return false;
  const [mo, d, h, mi, sec] = [m[2], m[3], m[4], m[5], m[6]].map(Number);
  return mo >= 1 && mo <= 12 && d >= 1 && d <= 31 && h <= 23 && mi <= 59 && sec <= 60 &&
    (m[9] === undefined || (Number(m[9]) <= 23 && Number(m[10]) <= 59));
};

function excerpt(v: unknown): string {
  const s = typeof v === 'string' ? v : JSON.stringify(v) ?? String(v);
  return s.length > 199 ? s.slice(0, 196) + '...' : s;
}

function bad(field: string, value: unknown, why: string): never {
  throw new ProtocolError(`field '${field}': '${excerpt(value)}' ${why}`);
}

function oneOf<T extends string>(field: string, v: unknown, allowed: readonly T[], why: string): T {
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) bad(field, v, why);
  return v as T;
}

function uuid(field: string, v: unknown): string {
  if (!isUuid(v)) bad(field, v, 'is not a UUID');
  return v.toLowerCase();
}

const ALLOWED: Record<JobType, readonly string[]> = {
  ping: ['userId'],
  backup: ['userId', 'mode'],
  restore: ['userId', 'backupId', 'at', 'tables', 'from', 'dryRun'],
  verify: ['userId', 'backupId', 'from'],
  cleanup: ['userId', 'retentionDays', 'scope'],
  replicate: ['userId', 'backupId'],
  export: ['userId', 'backupId', 'exportId'],
};
const COMMON = ['type', 'jobId', 'requestedBy', 'trigger'];
const WIRE: Record<string, string> = {
  jobId: 'job_id',
  userId: 'user_id',
  requestedBy: 'requested_by',
  backupId: 'backup_id',
  dryRun: 'dry_run',
  retentionDays: 'retention_days',
  exportId: 'export_id',
};

/**
 * The stream entry's flat fields for a job, checked as the worker checks them.
 * Throws ProtocolError naming the field.
 */
export function jobFields(job: Job): Record<string, string> {
  const j = job as unknown as Record<string, unknown>;
  const type = oneOf('type', j.type, Object.keys(ALLOWED) as JobType[],
    'is not a job type (ping, backup, restore, verify, cleanup, replicate or export)');
  const out: Record<string, string> = { type };
  for (const [k, v] of Object.entries(j)) {
    if (v === undefined || k === 'type') continue;
    const wire = WIRE[k] ?? k;
    if (!COMMON.includes(k) && !ALLOWED[type].includes(k))
      throw new ProtocolError(`field '${wire}' is not part of a ${type} job`);
    switch (k) {
      case 'jobId':
        if (!isJobId(v)) bad(wire, v, 'must be 1-128 letters, digits or _.:-');
        out[wire] = v;
        break;
      case 'userId':
      case 'requestedBy':
      case 'exportId':
        out[wire] = uuid(wire, v);
        break;
      case 'trigger':
        out[wire] = oneOf(wire, v, ['manual', 'scheduled', 'api'], 'is not manual, scheduled or api');
        break;
      case 'mode':
        out[wire] = oneOf(wire, v, ['full', 'incremental', 'differential'],
          'is not full, incremental or differential');
        break;
      case 'backupId':
        if (!isBackupId(v)) bad(wire, v, 'is not a backup id ((backup|incremental|differential)-<uuid>-<id>)');
        out[wire] = v;
        break;
      case 'from':
        out[wire] = oneOf(wire, v, ['primary', 'replica'], 'is not primary or replica');
        break;
      case 'at':
        if (!isRestorePoint(v))
          bad(wire, v, 'is not a time with its offset (2026-12-07T09:14:00+01:00) or an LSN (16/B374D848)');
        out[wire] = v;
        break;
      case 'dryRun':
        if (typeof v !== 'boolean') bad(wire, v, 'is not true or false');
        out[wire] = v ? 'true' : 'false';
        break;
      case 'tables': {
        if (!Array.isArray(v) || v.length === 0 || v.length > TABLES_MAX ||
            !v.every((t) => typeof t === 'string' && TABLE.test(t)))
          bad(wire, v, 'must be table names separated by commas (a-z, 0-9, _)');
        if (new Set(v).size !== v.length) bad(wire, v.join(','), 'names a table twice');
        out[wire] = v.join(',');
        break;
      }
      case 'retentionDays':
        if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 36500)
          bad(wire, v, 'is not a number of days from 1 to 36500');
        out[wire] = String(v);
        break;
      case 'scope':
        out[wire] = oneOf(wire, v, ['user', 'all'], 'is not all or user');
        break;
    }
  }
  const scopeAll = out.scope === 'all';
  if ((type === 'backup' || type === 'restore' || type === 'export' || (type === 'cleanup' && !scopeAll)) &&
      !out.user_id)
    throw new ProtocolError(
      `missing field 'user_id' (the UUID of the user whose data this ${type} job concerns)`);
  if (type === 'cleanup' && scopeAll && out.user_id)
    throw new ProtocolError("a cleanup with scope=all covers every user: drop the field 'user_id'");
  if (type === 'restore' && out.backup_id && out.at)
    throw new ProtocolError("both 'backup_id' and 'at': a restore is to a backup, or to a point in time " +
      '(its base backup is chosen)');
  if (type === 'restore' && !out.backup_id && !out.at)
    throw new ProtocolError("missing field 'backup_id' (the backup to restore) or 'at' (the point in time to restore to)");
  if (type === 'replicate' && !out.backup_id)
    throw new ProtocolError("missing field 'backup_id' (the backup to copy to the replica)");
  if (type === 'export' && !out.backup_id)
    throw new ProtocolError("missing field 'backup_id' (the backup to export)");
  if (type === 'verify' && !out.backup_id && !out.user_id)
    throw new ProtocolError("a verify job needs 'backup_id' or 'user_id'");
  // a restore of one user's backup under another user's id would be refused by the worker
  if (out.backup_id && out.user_id && type !== 'replicate') {
    const owner = out.backup_id.slice(out.backup_id.indexOf('-') + 1, out.backup_id.indexOf('-') + 37);
    if (owner.toLowerCase() !== out.user_id)
      bad('backup_id', out.backup_id, `is not a backup of user ${out.user_id}`);
  }
  return out;
}

const num = (v: string | undefined): number => (v === undefined || v === '' ? 0 : Number(v));
const opt = (v: string | undefined): number | undefined => (v === undefined || v === '' ? undefined : Number(v));

/** A job's status from its hash's fields (HGETALL); null when the hash is empty. */
export function parseJobStatus(jobId: string, h: Record<string, string>): JobStatus | null {
  if (!h || !h.status) return null;
  let result: unknown;
  if (h.result) {
    try {
      result = JSON.parse(h.result);
    } catch {
      result = h.result;
    }
  }
  return {
    jobId,
    status: h.status as JobState,
    type: h.type ?? '',
    userId: h.user_id || undefined,
    progress: num(h.progress),
    stage: h.stage || undefined,
    rows: num(h.rows),
    rowsTotal: num(h.rows_total),
    bytes: num(h.bytes),
    note: h.note || undefined,
    result,
    backupId: h.backup_id || undefined,
    error: h.error || undefined,
    attempts: num(h.attempts),
    retryAt: opt(h.retry_at),
    worker: h.worker || undefined,
    createdAt: opt(h.created_at),
    startedAt: opt(h.started_at),
    finishedAt: opt(h.finished_at),
  };
}

/** How long a job's status hash is kept by default: the workers' JOB_RETENTION default (7d). */
export const JOB_RETENTION_MS = 7 * 24 * 3600 * 1000;

/** A duration as the workers' settings write it (`500ms`, `30s`, `10m`, `2h`, `7d`), in ms;
 * null when it is not one. */
export function parseDuration(s: string): number | null {
  const m = /^(\d+)(ms|s|m|h|d)$/.exec(s.trim());
  if (!m) return null;
  const unit = { ms: 1, s: 1000, m: 60000, h: 3600000, d: 86400000 }[m[2] as 'ms' | 's' | 'm' | 'h' | 'd'];
  return Number(m[1]) * unit;
}

/** Key names under a prefix (REDIS_PREFIX, default `backup`). */
export function keys(prefix = 'backup') {
  return {
    jobs: `${prefix}:jobs`,
    job: (jobId: string) => `${prefix}:job:${jobId}`,
    events: `${prefix}:events`,
    progress: (userId: string) => `${prefix}:progress:${userId}`,
    dead: `${prefix}:dead`,
    delayed: `${prefix}:delayed`,
  };
}

/** The seed's error messages, which the REST API and the browser client share. */
export const Errors = {
  noUser: 'No authenticated user',
  checksum: 'Backup checksum verification failed',
  csrf: 'CSRF token missing or invalid',
  notOwner: 'Only the account owner can clean up backups',
  notFound: 'Backup not found',
  jobNotFound: 'Job not found',
  tooMany: 'Too many jobs: try again in a minute',
  exportNotFound: 'Export not found',
} as const;
