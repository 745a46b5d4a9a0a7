-- 006_restores: the history of restores, and what verify records.
--
-- restore_history: one row per restore job (job_id unique: a retried job
-- updates its row). Written outside the restore's own transaction, so a
-- failed restore is recorded even though everything it did was rolled back.
-- Readable by its user through row-level security, like backup_metadata.
-- Idempotent.

CREATE TABLE IF NOT EXISTS restore_history (
    id            bigserial PRIMARY KEY,
    job_id        text NOT NULL UNIQUE,
    user_id       uuid NOT NULL,
    backup_id     text NOT NULL,
    requested_by  uuid,
    tables        text[],                  -- NULL: every table in scope
    chain         text[],                  -- the backups applied, full first
    status        text NOT NULL DEFAULT 'running'
                  CHECK (status IN ('running', 'completed', 'failed')),
    row_counts    jsonb,                   -- rows restored per table
    error         text,
    attempts      integer NOT NULL DEFAULT 1,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    duration_ms   bigint
);
CREATE INDEX IF NOT EXISTS restore_history_user_idx ON restore_history (user_id, started_at DESC);

ALTER TABLE restore_history ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS restore_history_owner_select ON restore_history;
CREATE POLICY restore_history_owner_select ON restore_history
    FOR SELECT TO authenticated
    USING (user_id = auth.uid());
GRANT SELECT ON restore_history TO authenticated;

-- verify: the last check of each backup's object against its record
ALTER TABLE backup_metadata ADD COLUMN IF NOT EXISTS verified_at timestamptz;
ALTER TABLE backup_metadata ADD COLUMN IF NOT EXISTS verify_status text
    CHECK (verify_status IS NULL OR verify_status IN ('ok', 'failed'));
ALTER TABLE backup_metadata ADD COLUMN IF NOT EXISTS verify_error text;

-- A restore puts rows back as they were, updated_at included: the stamp of
-- updated_at stands aside while the restore's transaction says
-- backup.restoring = on (set with set_config(..., true): that transaction only).
-- A trigger an operator adds to a table in backup_scope should do the same.
-- (backup_stamp still runs: restored rows are changes for the next incremental.)
CREATE OR REPLACE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('backup.restoring', true) = 'on' THEN
        RETURN NEW;
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

-- Foreign keys that a delete follows (ON DELETE SET NULL) need an index on the
-- referencing side, or deleting a user's products scans every order item (of
-- every user) once per product: a restore, and the web tier's own deletes,
-- would crawl.
CREATE INDEX IF NOT EXISTS order_items_product_id_idx ON order_items (product_id);
CREATE INDEX IF NOT EXISTS orders_client_id_idx ON orders (client_id);
CREATE INDEX IF NOT EXISTS products_business_id_idx ON products (business_id);
