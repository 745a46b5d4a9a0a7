-- 020: incrementals built from the change segments (BACKUP_TRACKING=wal; worker/README.md,
-- "Incrementals from the change segments").
--
-- With wal, an incremental of a user names the rows its segments say changed since the base
-- (every change of a transaction the base's snapshot does not see), and reads those rows, by
-- key, in its own snapshot: no scan of the user's tables, no trigger. It waits until the
-- capture has recorded everything up to its snapshot's WAL position. capture_reset now notes
-- which transaction made the slot: a base older than the slot cannot build on the segments.

-- the transaction that made the current slot (capture_reset): the segments hold every change
-- committed after it, so an incremental builds from them only on a base whose snapshot sees it
ALTER TABLE capture_state ADD COLUMN IF NOT EXISTS reset_xid xid8;

-- A new slot (the first, or after a gap): run in the slot's exported snapshot, so that the
-- owners loaded are exactly those at the slot's start. Records the gap when there is one.
CREATE OR REPLACE FUNCTION capture_reset(p_epoch bigint, p_lsn pg_lsn, p_system text,
                                         p_timeline integer, p_gap text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t record;
    p record;
BEGIN
    PERFORM 1 FROM capture_state WHERE epoch = p_epoch FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'capture epoch % is stale', p_epoch USING ERRCODE = 'P0001';
    END IF;
    IF p_gap IS NOT NULL THEN
        INSERT INTO capture_gaps (reason, last_lsn)
        SELECT p_gap, confirmed_lsn FROM capture_state;
    END IF;
    DELETE FROM capture_owners;
    FOR t IN SELECT * FROM backup_scope s WHERE EXISTS (
                 SELECT 1 FROM backup_scope c WHERE c.parent_table = s.table_name)
             ORDER BY restore_order LOOP
        IF t.user_column IS NOT NULL THEN
            EXECUTE format('INSERT INTO capture_owners (table_name, row_key, user_id) '
                           'SELECT %L, %I::text, %I FROM %I WHERE %I IS NOT NULL',
                           t.table_name, t.key_column, t.user_column, t.table_name, t.user_column);
        ELSE
            EXECUTE format('INSERT INTO capture_owners (table_name, row_key, user_id) '
                           'SELECT %L, x.%I::text, o.user_id FROM %I x JOIN capture_owners o '
                           'ON o.table_name = %L AND o.row_key = x.%I::text',
                           t.table_name, t.key_column, t.table_name, t.parent_table,
                           t.parent_column);
        END IF;
    END LOOP;
    UPDATE capture_state SET confirmed_lsn = p_lsn, system_identifier = p_system,
           timeline = p_timeline, reset_xid = pg_current_xact_id(), updated_at = now();
END
$$;

-- A segment's 32-bit xid as the xid8 nearest to ref's xmax (a snapshot taken while the
-- transaction was recent: wraparound keeps live xids within 2^31 of each other).
CREATE OR REPLACE FUNCTION capture_xid8(p_xid bigint, p_ref pg_snapshot) RETURNS xid8
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT (x + ((p_xid - x % 4294967296 + 6442450944) % 4294967296 - 2147483648))::text::xid8
    FROM (SELECT pg_snapshot_xmax(p_ref)::text::bigint AS x) r
$$;

-- Whether an incremental of p_user on the base backup p_base can be built from the change
-- segments (BACKUP_TRACKING=wal): NULL when it can, else why not. The slot must be older than the
-- base (every later change is in a segment), the capture alive, every table of the scope in the
-- base (a table that joined the scope since has rows no segment names) and in the publication
-- (else its changes are not captured), and no segment since the base may hold a TRUNCATE or the
-- children of an order that moved away (a delete of rows the base holds, whose keys no segment
-- names: a full backup instead).
CREATE OR REPLACE FUNCTION capture_incremental_ok(p_user uuid, p_base text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    st capture_state;
    b backup_metadata;
    snap pg_snapshot;
    missing text;
BEGIN
    SELECT * INTO b FROM backup_metadata WHERE id = p_base AND user_id = p_user;
    IF NOT FOUND OR b.snapshot IS NULL THEN
        RETURN 'the base has no snapshot';
    END IF;
    snap := b.snapshot::pg_snapshot;
    SELECT * INTO st FROM capture_state;
    IF NOT FOUND OR st.reset_xid IS NULL OR NOT pg_visible_in_snapshot(st.reset_xid, snap) THEN
        RETURN 'the change capture started after the base';
    END IF;
    IF st.updated_at < now() - interval '2 minutes' THEN
        RETURN 'the change capture has recorded nothing since '
               || to_char(st.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"');
    END IF;
    SELECT string_agg(s.table_name, ', ' ORDER BY s.restore_order) INTO missing FROM backup_scope s
    WHERE NOT coalesce(b.row_counts ? s.table_name, false);
    IF missing IS NOT NULL THEN
        RETURN 'the base does not hold ' || missing || ' (joined the backup scope since)';
    END IF;
    SELECT string_agg(s.table_name, ', ' ORDER BY s.restore_order) INTO missing FROM backup_scope s
    WHERE NOT EXISTS (SELECT 1 FROM pg_publication_tables p WHERE p.pubname = 'backup_capture'
                      AND p.schemaname = 'public' AND p.tablename = s.table_name);
    IF missing IS NOT NULL THEN
        RETURN 'the publication backup_capture lacks ' || missing
               || ' (its changes are not captured: backupctl tracking wal sets it up)';
    END IF;
    IF EXISTS (SELECT 1 FROM change_segments s
               WHERE s.user_id = p_user
                 AND EXISTS (SELECT 1 FROM jsonb_each(s.counts) c
                             WHERE (c.value->>'t')::int > 0
                                OR coalesce((c.value->>'w')::int, 0) > 0)
                 AND EXISTS (SELECT 1 FROM unnest(s.xids) x
                             WHERE NOT pg_visible_in_snapshot(capture_xid8(x, snap), snap))) THEN
        RETURN 'a TRUNCATE, or an order moved to another user, since the base';
    END IF;
    RETURN NULL;
END
$$;

-- The capture's identity index on (owner, key) serves every query an index on the owner column
-- alone serves (it leads with it): with both, every insert maintains one index more, the most of
-- what change capture costs the application (tools/bench/tracking.sh WAL=all). This drops the
-- scope tables' plain indexes on exactly the owner column (not unique, not partial, no
-- expression, backing no constraint), once the identity index is there. Opt-in
-- (backupctl tracking wal --replace-owner-indexes): it changes the application's schema. The
-- identity index stays when tracking goes back to triggers. Returns the indexes dropped.
CREATE OR REPLACE FUNCTION backup_capture_replace_owner_indexes() RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    t record;
    i record;
    owner_col text;
    dropped text[] := '{}';
BEGIN
    FOR t IN SELECT * FROM backup_scope ORDER BY restore_order LOOP
        owner_col := coalesce(t.user_column, t.parent_column);
        CONTINUE WHEN owner_col IS NULL OR owner_col = t.key_column;
        CONTINUE WHEN NOT EXISTS (
            SELECT 1 FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
            WHERE x.indrelid = t.table_name::regclass AND x.indisreplident
              AND c.relname = left(t.table_name || '_backup_identity', 63));
        FOR i IN SELECT c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
                 WHERE x.indrelid = t.table_name::regclass AND NOT x.indisunique
                   AND x.indisvalid AND x.indpred IS NULL AND x.indexprs IS NULL
                   AND x.indnatts = 1
                   AND x.indkey[0] = (SELECT attnum FROM pg_attribute
                                      WHERE attrelid = t.table_name::regclass
                                        AND attname = owner_col)
                   AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid)
        LOOP
            EXECUTE format('DROP INDEX %I', i.relname);
            dropped := dropped || i.relname::text;
        END LOOP;
    END LOOP;
    RETURN dropped;
END
$$;
