// useBackup(): the seed's hook, on TanStack Query. Reads (the user, the backups, the figures,
// the timeline) are queries; what starts a job (backup, restore, preview, cleanup, download) is a
// mutation that follows the job to its end through the event stream, with its live progress in
// `job`. The BackupService comes from <BackupProvider>.

import { createContext, createElement, useCallback, useContext, useState, type ReactNode } from 'react';
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { BackupError, type BackupService, type ExportLink, type JobStatus } from '@backup-worker/client/browser';

const ServiceContext = createContext<BackupService | null>(null);

export function BackupProvider({ service, children }: { service: BackupService; children?: ReactNode }) {
  return createElement(ServiceContext.Provider, { value: service }, children);
}

export function useBackupService(): BackupService {
  const s = useContext(ServiceContext);
  if (!s) throw new Error('useBackup() needs a <BackupProvider service={...}> above it');
  return s;
}

/** The job in flight (or the last one), as the progress bar shows it. */
export interface JobView {
  kind: JobKind;
  jobId?: string;
  state: 'queued' | 'running' | 'completed' | 'failed';
  progress: number;
  stage?: string;
  rows: number;
  rowsTotal: number;
  bytes: number;
  error?: string;
}

export type JobKind = 'full' | 'incremental' | 'restore' | 'preview' | 'pitrPreview' | 'pitr' | 'cleanup' | 'export';

/** Per table, what a restore changed or would change (a dry run's result). */
export type TableCounts = Record<string, { inserted: number; updated: number; deleted: number; unchanged: number }>;

export interface RestoreRequest {
  backupId?: string;
  at?: string;
  tables?: string[];
}

const KEY = ['backup'] as const;

export function useBackup() {
  const svc = useBackupService();
  const qc = useQueryClient();
  const [job, setJob] = useState<JobView | null>(null);

  const me = useQuery({ queryKey: [...KEY, 'me'], queryFn: () => svc.me(), retry: false });
  const enabled = me.isSuccess;
  const backups = useQuery({ queryKey: [...KEY, 'list'], queryFn: () => svc.listBackups(), enabled });
  const stats = useQuery({ queryKey: [...KEY, 'status'], queryFn: () => svc.getStatus(), enabled });
  const timeline = useQuery({ queryKey: [...KEY, 'timeline'], queryFn: () => svc.timeline(), enabled });

  /** Starts a job and follows it to its end; the final status, or throws its error. */
  const follow = useCallback(async (kind: JobKind, start: () => Promise<{ jobId: string }>): Promise<JobStatus> => {
    setJob({ kind, state: 'queued', progress: 0, rows: 0, rowsTotal: 0, bytes: 0 });
    try {
      const { jobId } = await start();
      setJob((j) => j && { ...j, jobId });
      const done = await svc.watch(jobId, {
        onProgress: (s) =>
          setJob((j) => j && {
            ...j, state: s.status === 'running' ? 'running' : 'queued', progress: s.progress, stage: s.stage,
            rows: s.rows, rowsTotal: s.rowsTotal, bytes: s.bytes,
          }),
      });
      setJob((j) => j && { ...j, state: 'completed', progress: 100 });
      return done;
    } catch (e) {
      const error = e instanceof BackupError ? e.message : String(e);
      setJob((j) => j && { ...j, state: 'failed', error });
      throw e;
    } finally {
      await qc.invalidateQueries({ queryKey: KEY });
    }
  }, [svc, qc]);

  const create = useMutation({
    mutationFn: (type: 'full' | 'incremental') => follow(type, () => svc.createBackup({ type })),
  });
  const restore = useMutation({
    mutationFn: (r: RestoreRequest) => follow(r.at ? 'pitr' : 'restore', () => svc.restoreBackup(r)),
  });
  /** A restore's dry run: per table what would change, nothing written. */
  const preview = useMutation({
    mutationFn: async (r: RestoreRequest): Promise<TableCounts> => {
      const done = await follow(r.at ? 'pitrPreview' : 'preview', () => svc.restoreBackup({ ...r, dryRun: true }));
      return ((done.result as { tables?: TableCounts } | undefined)?.tables ?? {});
    },
  });
  const cleanup = useMutation({ mutationFn: () => follow('cleanup', () => svc.cleanup()) });
  /** "Download my data": the export written, then a link valid 15 minutes. */
  const download = useMutation({
    mutationFn: async (backupId: string): Promise<ExportLink> => {
      let exportId = '';
      await follow('export', async () => {
        const r = await svc.exportBackup(backupId);
        exportId = r.exportId;
        return r;
      });
      return svc.getExport(exportId);
    },
  });

  const busy = create.isPending || restore.isPending || preview.isPending || cleanup.isPending || download.isPending;
  return { me, backups, stats, timeline, job, busy, create, restore, preview, cleanup, download };
}

export type UseBackup = ReturnType<typeof useBackup>;
