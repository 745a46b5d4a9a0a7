// "Volver a un momento" (BACKUP_TRACKING=wal): the user's recorded transactions, newest first,
// each with "Justo antes" (the instant one microsecond before its commit); a time typed in the
// picker; the preview's counts; the restore to the point previewed, once confirmed.

import { useState } from 'react';
import type { TimelineEntry } from '@backup-worker/client/browser';
import type { JobKind, TableCounts, UseBackup } from './useBackup.js';
import { S, tableName } from './strings.js';

type Run = <T>(kind: JobKind, p: Promise<T>, extra?: (r: T) => string) => Promise<T | null>;

/** The instant just before a commit (its time minus one microsecond): "just before the mistake". */
export function justBefore(t: string): string {
  const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?Z$/.exec(t);
  if (!m) return t;
  const us = BigInt(Date.parse(`${m[1]}Z`)) * 1000n + BigInt((m[2] ?? '').padEnd(6, '0')) - 1n;
  const s = new Date(Number(us / 1000n)).toISOString().slice(0, 19);
  return `${s}.${String(us % 1000000n).padStart(6, '0')}Z`;
}

/** datetime-local shows local time to the second. */
const toLocalInput = (iso: string) => {
  const d = new Date(iso);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
};

function summary(counts: TimelineEntry['counts']): string {
  const parts: string[] = [];
  for (const [t, c] of Object.entries(counts ?? {})) {
    if (c.t) {
      parts.push(S.pitr.emptied(tableName(t)));
      continue;
    }
    const n = [c.i ? `+${c.i}` : '', c.u ? `~${c.u}` : '', c.d ? `−${c.d}` : ''].filter(Boolean).join(' ');
    if (n) parts.push(`${tableName(t)} ${n}`);
  }
  return parts.join('; ') || S.pitr.noRows;
}

export function PointInTime({ b, run }: { b: UseBackup; run: Run }) {
  const [at, setAt] = useState<string | null>(null); // the point chosen, exact (RFC 3339 UTC, µs)
  const [chosenTime, setChosenTime] = useState<string | null>(null); // the timeline entry it came from
  const [previewed, setPreviewed] = useState<string | null>(null);
  const [result, setResult] = useState<TableCounts | null>(null);
  const [picker, setPicker] = useState('');
  const entries = [...(b.timeline.data ?? [])].reverse(); // newest first

  const choose = (point: string, from: string | null) => {
    setAt(point);
    setChosenTime(from);
    setPreviewed(null);
    setResult(null);
    setPicker(toLocalInput(point));
  };
  const preview = async () => {
    if (!at) return run('pitrPreview', Promise.reject(new Error(S.pitr.choose)));
    const point = at;
    const counts = await run('pitrPreview', b.preview.mutateAsync({ at: point }));
    if (counts) {
      setResult(counts);
      setPreviewed(point);
    }
    return counts;
  };
  const restore = async () => {
    if (!previewed) return;
    if (!window.confirm(S.pitr.confirm(new Date(previewed).toLocaleString('es')))) return;
    const point = previewed;
    setPreviewed(null);
    await run('pitr', b.restore.mutateAsync({ at: point }));
  };

  return (
    <section id="pitr" className="sub" data-at={at ?? undefined} data-previewed={previewed ?? undefined}
      data-entries={b.timeline.isSuccess ? String(entries.length) : undefined}>
      <h3>{S.pitr.title}</h3>
      <p className="small">{S.pitr.intro}</p>
      <div className="row">
        <label>{S.pitr.moment}{' '}
          <input type="datetime-local" id="pitr-at" step="1" value={picker}
            onChange={(e) => {
              setPicker(e.target.value);
              if (e.target.value) choose(new Date(e.target.value).toISOString(), null);
            }} />
        </label>
        <button type="button" id="pitr-preview" disabled={b.busy} onClick={preview}>{S.pitr.preview}</button>
        <button type="button" id="pitr-restore" className="danger" disabled={b.busy || !previewed} onClick={restore}>
          {S.pitr.restore}
        </button>
      </div>
      {result && (
        <table id="pitr-result">
          <thead><tr>{S.pitr.columns.map((c) => <th key={c}>{c}</th>)}</tr></thead>
          <tbody>
            {Object.entries(result).map(([t, c]) => (
              <tr key={t} data-table={t}>
                <td>{tableName(t)}</td><td>{c.inserted}</td><td>{c.updated}</td><td>{c.deleted}</td><td>{c.unchanged}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <div className="row">
        <h4>{S.pitr.activity}</h4>
        <button type="button" id="timeline-refresh" className="link" onClick={() => b.timeline.refetch()}>{S.pitr.refresh}</button>
      </div>
      <ol id="timeline" reversed>
        {entries.map((e) => (
          <li key={`${e.time}-${e.lsn}`} data-time={e.time} className={e.time === chosenTime ? 'chosen' : ''}>
            <span className="when">{new Date(e.time).toLocaleString('es')}</span>
            <span>{summary(e.counts) + (e.transactions > 1 ? S.pitr.transactions(e.transactions) : '')}</span>{' '}
            <button type="button" className="link before" title={S.pitr.justBeforeTitle}
              onClick={() => choose(justBefore(e.time), e.time)}>{S.pitr.justBefore}</button>
          </li>
        ))}
      </ol>
      {b.timeline.isSuccess && entries.length === 0 && <p id="timeline-empty" className="small">{S.pitr.none}</p>}
    </section>
  );
}
