-- 013: what a restore changed (README, "Restore"). A restore writes only the rows that are new
-- or differ from the backup; per table it records the rows inserted, updated, deleted and left
-- unchanged: {"orders":{"inserted":0,"updated":3,"deleted":1,"unchanged":996},...}.
-- dry_run: a preview (type=restore dry_run=true) that counted the same and wrote nothing.
ALTER TABLE restore_history ADD COLUMN IF NOT EXISTS changes jsonb;
ALTER TABLE restore_history ADD COLUMN IF NOT EXISTS dry_run boolean NOT NULL DEFAULT false;
