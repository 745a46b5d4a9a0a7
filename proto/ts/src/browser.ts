// The browser's BackupService (the seed's frontend client) over the REST API of
// tools/web. Uses fetch only, so it runs in a browser and in Node 20 alike.

import {
  type BackupInfo,
  type BackupStatistics,
  type ExportInfo,
  type JobStatus,
  type ProgressEvent,
  type TimelineEntry,
  Errors,
} from './protocol.js';

export type { BackupInfo, BackupStatistics, ExportInfo, JobStatus, ProgressEvent, TimelineEntry };

/** An export and, once it is written, a link to download it (15 minutes). */
export type ExportLink = Omit<ExportInfo, 'key'> & { url: string | null; urlExpiresAt?: string };
export { Errors };

export interface BackupServiceOptions {
  /** Where the API lives ('' : this page's origin). */
  baseUrl?: string;
  /** The signed-in user's access token (a Supabase JWT), or null when signed out. */
  getToken: () => string | null | undefined | Promise<string | null | undefined>;
  fetch?: typeof fetch;
}

/** A refused request: `status` is the HTTP status (0: before any request). */
export class BackupError extends Error {
  constructor(message: string, readonly status: number) {
    super(message);
    this.name = 'BackupError';
  }
}

export interface WatchOptions {
  onProgress?: (s: JobStatus) => void;
  signal?: AbortSignal;
}

export class BackupService {
  private readonly base: string;
  private readonly fetchFn: typeof fetch;
  private csrf: string | null = null;
  private csrfFor = '';
  private cookie: string | null = null; // outside a browser, where fetch keeps no cookies

  constructor(private readonly opts: BackupServiceOptions) {
    this.base = opts.baseUrl ?? '';
    this.fetchFn = opts.fetch ?? globalThis.fetch.bind(globalThis);
  }

  createBackup(req: { type: 'full' | 'incremental' }): Promise<{ jobId: string }> {
    return this.call('POST', '/api/backup/create', req);
  }

  listBackups(): Promise<BackupInfo[]> {
    return this.call('GET', '/api/backup/list');
  }

  /** The user's captured transactions (restore points), oldest first. */
  timeline(since?: string): Promise<TimelineEntry[]> {
    return this.call('GET', `/api/backup/timeline${since ? `?since=${encodeURIComponent(since)}` : ''}`);
  }

  /** A backup by id, or `at`: the rows as they were then (dryRun: the counts, nothing written). */
  restoreBackup(req: { backupId?: string; at?: string; tables?: string[]; dryRun?: boolean }): Promise<{ jobId: string }> {
    return this.call('POST', '/api/backup/restore', req);
  }

  /** "Download my data": the worker writes the backup as plain JSON (gzip); follow jobId, then getExport. */
  exportBackup(backupId: string): Promise<{ jobId: string; exportId: string }> {
    return this.call('POST', '/api/backup/export', { backupId });
  }

  /** An export of the caller's, with a fresh download link once it is written. */
  getExport(exportId: string): Promise<ExportLink> {
    return this.call('GET', `/api/backup/exports/${encodeURIComponent(exportId)}`);
  }

  getStatus(): Promise<BackupStatistics> {
    return this.call('GET', '/api/backup/status');
  }

  cleanup(): Promise<{ jobId: string }> {
    return this.call('DELETE', '/api/backup/cleanup');
  }

  /** Who the token says the caller is, and whether they own the account (cleanup is theirs only). */
  me(): Promise<{ userId: string; email: string | null; owner: boolean }> {
    return this.call('GET', '/api/me');
  }

  job(jobId: string): Promise<JobStatus> {
    return this.call('GET', `/api/backup/jobs/${encodeURIComponent(jobId)}`);
  }

  /**
   * Follows a job to its end: resolves with its final status once completed,
   * rejects with its error once dead (a failed checksum reads as the seed's
   * `Backup checksum verification failed`).
   */
  async watch(jobId: string, opts: WatchOptions = {}): Promise<JobStatus> {
    const ac = new AbortController();
    opts.signal?.addEventListener('abort', () => ac.abort(), { once: true });
    const done = (s: JobStatus): JobStatus | null => {
      if (s.status === 'completed') return s;
      if (s.status === 'dead') {
        const msg = s.error ?? 'the job failed';
        throw new BackupError(/checksum/i.test(msg) ? `${Errors.checksum}: ${msg}` : msg, 200);
      }
      return null;
    };
    try {
      const events = this.events(ac.signal);
      await events.next(); // connected: nothing the job does from now on is missed
      let s = await this.job(jobId);
      opts.onProgress?.(s);
      if (done(s)) return s;
      for (;;) {
        const r = await events.next();
        if (r.done) throw new BackupError('the event stream ended', 0);
        const e = r.value;
        if (!e || e.job_id !== jobId) continue;
        if (e.event === 'progress' || e.event === 'started') {
          s = {
            ...s,
            status: 'running',
            progress: Number(e.progress ?? s.progress),
            stage: e.stage ?? s.stage,
            rows: Number(e.rows ?? s.rows),
            rowsTotal: Number(e.rows_total ?? s.rowsTotal),
            bytes: Number(e.bytes ?? s.bytes),
          };
          opts.onProgress?.(s);
        } else {
          s = await this.job(jobId); // the hash holds the whole result
          opts.onProgress?.(s);
          const d = done(s);
          if (d) return d;
        }
      }
    } finally {
      ac.abort();
    }
  }

  /** The caller's progress events (Server-Sent Events read through fetch, so the token travels in a header). */
  async *events(signal?: AbortSignal): AsyncGenerator<ProgressEvent | null> {
    const res = await this.send('GET', '/api/backup/events', undefined, signal);
    if (!res.body) throw new BackupError('no event stream', res.status);
    yield null; // the stream is open
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buf += value;
        let cut: number;
        while ((cut = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
          if (data) yield JSON.parse(data) as ProgressEvent;
        }
      }
    } catch (e) {
      if (signal?.aborted) return;
      throw e;
    } finally {
      reader.releaseLock();
    }
  }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.send(method, path, body);
    return (await res.json()) as T;
  }

  private async send(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<Response> {
    const token = await this.opts.getToken();
    if (!token) throw new BackupError(Errors.noUser, 0);
    const headers: Record<string, string> = { authorization: `Bearer ${token}` };
    if (method !== 'GET') headers['x-csrf-token'] = await this.csrfToken(headers.authorization);
    if (this.cookie) headers.cookie = this.cookie;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res = await this.fetchFn(this.base + path, {
      method, headers, signal, credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (res.status === 403 && method !== 'GET' && this.csrf) {
      // the token may have expired with its cookie: fetch a new one once
      this.csrf = null;
      headers['x-csrf-token'] = await this.csrfToken(headers.authorization);
      if (this.cookie) headers.cookie = this.cookie;
      res = await this.fetchFn(this.base + path, {
        method, headers, signal, credentials: 'same-origin',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    }
    if (!res.ok) {
      let msg = `HTTP ${res.status}`;
      try {
        msg = ((await res.json()) as { error?: string }).error ?? msg;
      } catch {
        /* not JSON */
      }
      throw new BackupError(msg, res.status);
    }
    return res;
  }

  /** A CSRF token bound to the signed-in user (the server signs the user's id into it). */
  private async csrfToken(authorization: string): Promise<string> {
    if (this.csrf && this.csrfFor === authorization) return this.csrf;
    const res = await this.fetchFn(this.base + '/api/csrf', { credentials: 'same-origin', headers: { authorization } });
    if (!res.ok) throw new BackupError(`cannot get a CSRF token: HTTP ${res.status}`, res.status);
    const set = typeof res.headers.getSetCookie === 'function' ? res.headers.getSetCookie() : [];
    const c = set.map((v) => v.split(';')[0]).find((v) => v.startsWith('bw_csrf='));
    if (c) this.cookie = c;
    this.csrf = ((await res.json()) as { token: string }).token;
    this.csrfFor = authorization;
    return this.csrf;
  }
}
