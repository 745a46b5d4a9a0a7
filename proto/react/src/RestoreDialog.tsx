// The restore's preview: a dry run counts per table what would be inserted, updated and deleted;
// the user picks the tables (those with changes, checked to begin with) and confirms. Nothing is
// written before the confirmation.

import { useEffect, useRef, useState } from 'react';
import type { BackupInfo } from '@backup-worker/client/browser';
import type { TableCounts } from './useBackup.js';
import { S, fmtDate, tableName } from './strings.js';

export interface RestoreDialogProps {
  backup: BackupInfo;
  /** The dry run (null when it failed: the section says why). */
  preview: () => Promise<TableCounts | null>;
  /** The tables chosen; undefined: all of them. */
  onConfirm: (tables: string[] | undefined) => void;
  onCancel: () => void;
}

export function RestoreDialog({ backup, preview, onConfirm, onCancel }: RestoreDialogProps) {
  const ref = useRef<HTMLDialogElement>(null);
  const [counts, setCounts] = useState<TableCounts | null>(null);
  const [chosen, setChosen] = useState<Set<string>>(new Set());
  const started = useRef(false);

  useEffect(() => {
    const d = ref.current;
    if (d && !d.open) d.showModal();
    if (started.current) return;
    started.current = true;
    preview().then((c) => {
      if (!c) return onCancel();
      setCounts(c);
      setChosen(new Set(Object.entries(c).filter(([, v]) => v.inserted + v.updated + v.deleted > 0).map(([t]) => t)));
    });
  }, [preview, onCancel]);

  const tables = counts ? Object.keys(counts) : [];
  const toggle = (t: string) => setChosen((s) => {
    const n = new Set(s);
    if (n.has(t)) n.delete(t);
    else n.add(t);
    return n;
  });
  const confirm = () => onConfirm(chosen.size === tables.length ? undefined : tables.filter((t) => chosen.has(t)));

  return (
    <dialog id="restore-dialog" ref={ref} data-ready={counts ? 'true' : undefined} onCancel={onCancel}>
      <h3>{S.dialog.title(fmtDate(backup.created_at))}</h3>
      {!counts && <p>{S.dialog.loading}</p>}
      {counts && (
        <>
          <p className="small">{S.dialog.intro}</p>
          <table id="restore-preview">
            <thead><tr>{S.dialog.columns.map((c, i) => <th key={i}>{c}</th>)}</tr></thead>
            <tbody>
              {tables.map((t) => (
                <tr key={t} data-table={t}>
                  <td><input type="checkbox" name={t} checked={chosen.has(t)} onChange={() => toggle(t)} aria-label={tableName(t)} /></td>
                  <td>{tableName(t)}</td>
                  <td className="changes">{S.changes(counts[t]) || S.dialog.nothing}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {chosen.size === 0 && <p className="small">{S.dialog.noneChosen}</p>}
        </>
      )}
      <div className="row">
        <button type="button" id="restore-confirm" className="danger" disabled={!counts || chosen.size === 0} onClick={confirm}>
          {S.dialog.confirm}
        </button>
        <button type="button" id="restore-cancel" className="link" onClick={onCancel}>{S.dialog.cancel}</button>
      </div>
    </dialog>
  );
}
