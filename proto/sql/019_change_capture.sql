-- 019: change capture from the WAL (BACKUP_TRACKING=wal; deploy/README.md, "Change capture").
--
-- One logical replication slot reads every committed change of the scope tables (pgoutput, the
-- publication backup_capture). The capture leader routes each change to its tenant and writes
-- each tenant's changes, every few seconds, as a change segment under
-- backups/{user_id}/changes/. A segment counts once its row is here: the slot's position is
-- confirmed to PostgreSQL only up to the last commit whose segments are recorded, so a crash
-- replays what was not, and the replayed segments are the same objects (same name, same bytes).
--
-- Routing needs every delete to name its tenant: with the default replica identity (the primary
-- key) a delete carries only the key. backup_capture_setup() gives each scope table a replica
-- identity that carries its user column (or, for a child such as order_items, its parent
-- column): a unique index on (owner, key) used as REPLICA IDENTITY, or FULL when the owner column
-- may be NULL. It runs when an installation switches to wal (backupctl tracking wal), not here:
-- an installation that keeps triggers pays for no extra index.
--
-- Fencing: a leader holds a lease in Redis with an epoch that only grows; it writes its epoch
-- into capture_state when it takes over, and every recording checks it there, in the same
-- transaction, so a stale leader's segments never count. Idempotent.

CREATE TABLE IF NOT EXISTS change_segments (
    id            text PRIMARY KEY,  -- {user_id}-{first commit LSN}-{last commit LSN}, hex
    user_id       uuid NOT NULL,
    s3_key        text NOT NULL,
    start_lsn     pg_lsn NOT NULL,   -- the commit LSN of its first transaction
    end_lsn       pg_lsn NOT NULL,   -- the commit LSN of its last transaction
    first_commit  timestamptz NOT NULL,
    last_commit   timestamptz NOT NULL,
    xids          bigint[] NOT NULL, -- the transactions, in commit order
    changes       integer NOT NULL,
    counts        jsonb NOT NULL,    -- per table: {"i": inserted, "u": updated, "d": deleted, "t": truncated}
    size          bigint NOT NULL,
    checksum      text NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),
    codecs        text[] NOT NULL DEFAULT '{}',
    epoch         bigint NOT NULL,   -- the leader's fencing epoch
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (start_lsn <= end_lsn)
);
CREATE INDEX IF NOT EXISTS change_segments_user_lsn_idx ON change_segments (user_id, end_lsn);

ALTER TABLE change_segments ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS change_segments_owner_select ON change_segments;
CREATE POLICY change_segments_owner_select ON change_segments
    FOR SELECT TO authenticated
    USING (user_id = auth.uid());
GRANT SELECT ON change_segments TO authenticated;

-- The capture's one row: which slot, on which database system and timeline, the leader's epoch
-- and the position every recorded segment covers.
CREATE TABLE IF NOT EXISTS capture_state (
    id                 boolean PRIMARY KEY DEFAULT true CHECK (id),
    slot_name          text NOT NULL,
    system_identifier  text,
    timeline           integer,
    epoch              bigint NOT NULL DEFAULT 0,
    confirmed_lsn      pg_lsn NOT NULL DEFAULT '0/0',
    leader             text,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE capture_state ENABLE ROW LEVEL SECURITY;

-- When changes may have been missed (the slot lost or dropped, another system or timeline, the
-- tracking switched): every user's next backup after a gap is full.
CREATE TABLE IF NOT EXISTS capture_gaps (
    id           bigserial PRIMARY KEY,
    detected_at  timestamptz NOT NULL DEFAULT now(),
    reason       text NOT NULL,
    last_lsn     pg_lsn
);
-- the transaction that recorded it: a backup whose snapshot does not see it was taken before the
-- gap, and no incremental builds on it (a backup's created_at may be set back; its snapshot not)
ALTER TABLE capture_gaps ADD COLUMN IF NOT EXISTS xid xid8 NOT NULL DEFAULT pg_current_xact_id();
ALTER TABLE capture_gaps ENABLE ROW LEVEL SECURITY;

-- Who owns each row of a table that other scope tables hang from (orders, for order_items):
-- a change of a child names only its parent's key. Loaded in the slot's own snapshot when the
-- slot is made, then kept by the capture from the stream, in commit order, so that a child's
-- change is routed by its parent's owner at that commit, even when the parent has moved or gone
-- since. Written only by the capture.
CREATE TABLE IF NOT EXISTS capture_owners (
    table_name  text NOT NULL,
    row_key     text NOT NULL,
    user_id     uuid NOT NULL,
    PRIMARY KEY (table_name, row_key)
);
ALTER TABLE capture_owners ENABLE ROW LEVEL SECURITY;

-- Replica identities that name each change's tenant, and the publication of the scope tables.
-- Returns the tables published.
CREATE OR REPLACE FUNCTION backup_capture_setup() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    t record;
    n integer := 0;
    owner_col text;
    idx text;
    nullable boolean;
    tables text := '';
BEGIN
    FOR t IN SELECT * FROM backup_scope ORDER BY restore_order LOOP
        owner_col := coalesce(t.user_column, t.parent_column);
        IF owner_col IS NULL OR owner_col = t.key_column THEN
            -- the key names the owner (profiles.id, user_settings.user_id): the primary key is
            -- enough, as long as it is the key
            EXECUTE format('ALTER TABLE %I REPLICA IDENTITY DEFAULT', t.table_name);
        ELSE
            SELECT bool_or(NOT a.attnotnull) INTO nullable FROM pg_attribute a
            WHERE a.attrelid = t.table_name::regclass AND a.attname IN (owner_col, t.key_column);
            IF nullable THEN
                EXECUTE format('ALTER TABLE %I REPLICA IDENTITY FULL', t.table_name);
            ELSE
                idx := left(t.table_name || '_backup_identity', 63);
                EXECUTE format('CREATE UNIQUE INDEX IF NOT EXISTS %I ON %I (%I, %I)', idx,
                               t.table_name, owner_col, t.key_column);
                EXECUTE format('ALTER TABLE %I REPLICA IDENTITY USING INDEX %I', t.table_name, idx);
            END IF;
        END IF;
        tables := tables || CASE WHEN n > 0 THEN ', ' ELSE '' END || quote_ident(t.table_name);
        n := n + 1;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'backup_capture') THEN
        EXECUTE 'ALTER PUBLICATION backup_capture SET TABLE ' || tables;
    ELSE
        EXECUTE 'CREATE PUBLICATION backup_capture FOR TABLE ' || tables
                || ' WITH (publish = ''insert, update, delete, truncate'')';
    END IF;
    RETURN n;
END
$$;

-- Which tracking the installation runs: 'wal' while the publication exists (backupctl tracking
-- wal made it), else 'triggers'. A backup asked to be incremental is full in 'wal' mode until
-- incrementals are built from the change segments.
CREATE OR REPLACE FUNCTION backup_tracking_mode() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'backup_capture')
                THEN 'wal' ELSE 'triggers' END
$$;

-- Switch an installation's tracking (backupctl tracking wal|triggers), in one transaction. The
-- triggers' stamps are not kept while the WAL is the source, so every base from before a switch
-- either way is unusable for an incremental: a gap marks the switch, and every user's next
-- backup is full. Returns what was done.
CREATE OR REPLACE FUNCTION backup_tracking_switch(p_mode text, p_slot text) RETURNS text
LANGUAGE plpgsql SET client_min_messages = warning AS $$
DECLARE
    t record;
    trg text;
    was text := backup_tracking_mode();
BEGIN
    IF p_mode NOT IN ('wal', 'triggers') THEN
        RAISE EXCEPTION 'tracking mode must be wal or triggers, not %', p_mode;
    END IF;
    IF p_mode = was THEN
        RETURN 'already ' || p_mode;
    END IF;
    IF p_mode = 'wal' THEN
        FOR t IN SELECT * FROM backup_scope LOOP
            FOREACH trg IN ARRAY ARRAY['_backup_stamp', '_backup_tombstone', '_backup_truncate',
                                       '_backup_moved'] LOOP
                EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t.table_name || trg,
                               t.table_name);
            END LOOP;
        END LOOP;
        PERFORM backup_capture_setup();
    ELSE
        PERFORM backup_track_all();
        DROP PUBLICATION IF EXISTS backup_capture;
        -- the slot would keep WAL forever: dropped when no capture holds it
        PERFORM pg_drop_replication_slot(slot_name) FROM pg_replication_slots
        WHERE slot_name = p_slot AND NOT active;
        UPDATE capture_state SET confirmed_lsn = '0/0', system_identifier = NULL,
               timeline = NULL;
    END IF;
    INSERT INTO capture_gaps (reason) VALUES ('tracking switched from ' || was || ' to ' || p_mode);
    RETURN 'switched from ' || was || ' to ' || p_mode;
END
$$;
