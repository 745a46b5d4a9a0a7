// <BackupSection>: the profile's "Backup de datos" (the seed's section), on useBackup(): the
// figures, backups made and followed live, each backup's restore (previewed per table, restored
// table by table once confirmed) and download, the cleanup for owners, and "Volver a un momento".

import { useState, type ReactNode } from 'react';
import type { BackupInfo, ExportLink } from '@backup-worker/client/browser';
import { useBackup, type JobKind, type TableCounts, type UseBackup } from './useBackup.js';
import { PointInTime } from './PointInTime.js';
import { RestoreDialog } from './RestoreDialog.js';
import { S, STATUSES, TYPES, fmtBytes, fmtDate, stageLabel } from './strings.js';

export interface Message {
  text: string;
  error?: boolean;
}

/** Runs a job's mutation and says how it ended, in `say`; the result, or null when it failed. */
export function outcome(say: (m: Message | null) => void) {
  return async <T,>(kind: JobKind, p: Promise<T>, extra?: (r: T) => string): Promise<T | null> => {
    say(null);
    try {
      const r = await p;
      const more = extra?.(r);
      say({ text: S.completed(S.jobs[kind]) + (more ? ` (${more})` : '') });
      return r;
    } catch (e) {
      say({ text: e instanceof Error ? e.message : String(e), error: true });
      return null;
    }
  };
}

function JobBar({ b }: { b: UseBackup }) {
  const j = b.job;
  if (!j) return null;
  return (
    <div id="job" className="job" data-state={j.state} data-job-id={j.jobId}>
      <div className="row">
        <strong id="job-title">{S.jobs[j.kind]}</strong>
        <span id="job-state">{S.state[j.state]}</span>
      </div>
      <progress id="job-progress" max={100} value={j.progress} />
      <div className="row small">
        <span id="job-stage">{j.stage && j.state !== 'completed' ? S.stage(stageLabel(j.stage)) : ''}</span>
        <span id="job-rows">{j.rows ? S.rows(j.rows, j.rowsTotal) : ''}</span>
        <span id="job-bytes">{j.bytes ? fmtBytes(j.bytes) : ''}</span>
      </div>
    </div>
  );
}

function Stats({ b }: { b: UseBackup }) {
  const s = b.stats.data;
  const cell = (id: string, label: string, v: ReactNode) => (
    <div>
      <dt>{label}</dt>
      <dd id={id}>{v}</dd>
    </div>
  );
  return (
    <dl id="stats" className="stats">
      {cell('stat-total', S.stats.total, s ? String(s.total_backups) : '–')}
      {cell('stat-size', S.stats.size, s ? fmtBytes(s.total_size_bytes) : '–')}
      {cell('stat-rate', S.stats.rate, s && s.success_rate !== null ? `${s.success_rate} %` : '–')}
      {cell('stat-last', S.stats.last, fmtDate(s?.last_backup_at))}
    </dl>
  );
}

export function BackupSection({ onSignOut }: { onSignOut?: () => void }) {
  const b = useBackup();
  const [message, say] = useState<Message | null>(null);
  const [restoring, setRestoring] = useState<BackupInfo | null>(null);
  const [link, setLink] = useState<ExportLink | null>(null);
  const run = outcome(say);
  const me = b.me.data;
  const list = b.backups.data ?? [];
  const loaded = b.backups.isSuccess && b.stats.isSuccess;

  const restoreTables = async (backup: BackupInfo, tables: string[] | undefined) => {
    setRestoring(null);
    await run('restore', b.restore.mutateAsync({ backupId: backup.id, tables }), (done) => {
      const r = done.result as { inserted?: number; updated?: number; deleted?: number } | undefined;
      return r ? S.changes(r, true) : '';
    });
  };
  const download = async (backup: BackupInfo) => {
    setLink(null);
    const l = await run('export', b.download.mutateAsync(backup.id));
    if (l) setLink(l);
  };

  return (
    <section id="backup" className="card" data-loaded={loaded ? String(b.backups.dataUpdatedAt) : undefined}>
      <header className="row">
        <h2>{S.title}</h2>
        <span id="who">{me ? (me.email ?? me.userId) : ''}</span>
        {onSignOut && <button type="button" id="signout" className="link" onClick={onSignOut}>{S.signOut}</button>}
      </header>
      <Stats b={b} />
      <div className="row">
        <button type="button" id="backup-full" disabled={b.busy}
          onClick={() => run('full', b.create.mutateAsync('full'))}>{S.createFull}</button>
        <button type="button" id="backup-incremental" disabled={b.busy}
          onClick={() => run('incremental', b.create.mutateAsync('incremental'))}>{S.createIncremental}</button>
        {me?.owner && (
          <button type="button" id="cleanup" className="danger" disabled={b.busy}
            onClick={() => window.confirm(S.cleanupConfirm) && run('cleanup', b.cleanup.mutateAsync())}>{S.cleanup}</button>
        )}
      </div>
      <JobBar b={b} />
      <p id="message" role="status" className={message?.error ? 'error' : ''}>{message?.text ?? ''}</p>
      {link?.url && (
        <p id="download" className="download">
          {S.downloadReady} <a id="download-link" href={link.url} download>{S.downloadLink}</a>{' '}
          <span className="small">{link.urlExpiresAt ? S.downloadValid(new Date(link.urlExpiresAt).toLocaleTimeString('es')) : ''}</span>
        </p>
      )}
      <PointInTime b={b} run={run} />
      <table id="backups">
        <thead><tr>{S.columns.map((c, i) => <th key={i}>{c}</th>)}</tr></thead>
        <tbody>
          {list.map((x) => (
            <tr key={x.id} data-backup-id={x.id} data-status={x.status}>
              <td>{fmtDate(x.created_at)}</td>
              <td>{TYPES[x.type] ?? x.type}</td>
              <td>{STATUSES[x.status] ?? x.status}</td>
              <td>{fmtBytes(x.size)}</td>
              <td>{x.rows ?? '–'}</td>
              <td>{x.verified ? S.yes : S.no}</td>
              <td className="actions">
                {x.status === 'completed' && (
                  <>
                    <button type="button" className="restore" disabled={b.busy} onClick={() => setRestoring(x)}>{S.restore}</button>{' '}
                    <button type="button" className="download link" disabled={b.busy} onClick={() => download(x)}>{S.download}</button>
                  </>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {loaded && list.length === 0 && <p id="empty">{S.empty}</p>}
      {restoring && (
        <RestoreDialog
          backup={restoring}
          preview={(): Promise<TableCounts | null> => run('preview', b.preview.mutateAsync({ backupId: restoring.id }))}
          onConfirm={(tables) => restoreTables(restoring, tables)}
          onCancel={() => setRestoring(null)}
        />
      )}
    </section>
  );
}
