// @backup-worker/react: the seed's frontend side. Wrap the app in a QueryClientProvider and a
// <BackupProvider service={new BackupService(...)}>, then use useBackup() or <BackupSection/>.
export { BackupProvider, useBackup, useBackupService } from './useBackup.js';
export type { JobKind, JobView, RestoreRequest, TableCounts, UseBackup } from './useBackup.js';
export { BackupSection, outcome } from './BackupSection.js';
export type { Message } from './BackupSection.js';
export { RestoreDialog } from './RestoreDialog.js';
export { PointInTime, justBefore } from './PointInTime.js';
export { S as strings, stageLabel, tableName, fmtBytes, fmtDate } from './strings.js';
