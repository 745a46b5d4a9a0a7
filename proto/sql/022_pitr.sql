-- 022: point-in-time restore of one user (restore with `at`; README, "Restore to a point in
-- time"). A restore to `at` is a base backup whose snapshot precedes `at`, plus the changes of
-- the user's transactions that snapshot does not see, from the change segments, in commit
-- order up to the cut: the commit LSN of the user's last transaction committed at or before
-- `at`. The result is a state the user's rows really had.

-- When the backup's snapshot was taken: every transaction it sees committed before
-- snapshot_at (clock_timestamp() read after the snapshot) and below snapshot_lsn (the WAL insert
-- position read after it). Backups made before 022 have neither: completed_at stands for
-- snapshot_at (later than the snapshot: safe), and they are no base for an `at` given as an LSN.
ALTER TABLE backup_metadata ADD COLUMN IF NOT EXISTS snapshot_at timestamptz;
ALTER TABLE backup_metadata ADD COLUMN IF NOT EXISTS snapshot_lsn pg_lsn;

-- A restore's point in time, as asked (an RFC 3339 time or an LSN), and the commit LSN it was
-- cut at (NULL: a restore of a backup by id).
ALTER TABLE restore_history ADD COLUMN IF NOT EXISTS restore_at text;
ALTER TABLE restore_history ADD COLUMN IF NOT EXISTS cut_lsn pg_lsn;

-- verify reads a user's change segments too: the last check of each, as for backups.
ALTER TABLE change_segments ADD COLUMN IF NOT EXISTS verified_at timestamptz;
ALTER TABLE change_segments ADD COLUMN IF NOT EXISTS verify_status text
    CHECK (verify_status IS NULL OR verify_status IN ('ok', 'failed'));
ALTER TABLE change_segments ADD COLUMN IF NOT EXISTS verify_error text;

-- The replica's copy of each segment (copied after the user's next backup's, by its replicate
-- job): a restore reads it when the primary's copy is missing or damaged.
ALTER TABLE change_segments ADD COLUMN IF NOT EXISTS replica_status text
    CHECK (replica_status IS NULL OR replica_status IN ('completed', 'failed'));
ALTER TABLE change_segments ADD COLUMN IF NOT EXISTS replicated_at timestamptz;
ALTER TABLE change_segments ADD COLUMN IF NOT EXISTS replica_error text;

-- The plan of a restore of p_user to p_at (a time) or p_lsn (an LSN; p_at is then NULL), once
-- the capture has recorded everything committed by then (the worker waits for that first):
-- the base backup, its snapshot, the cut (the commit LSN of the last of the user's transactions
-- to apply; '0/0' when none: the base alone), and the commit time of the user's last change at
-- or before the cut (NULL: none since the base). refusal is not NULL when there is no such
-- restore, saying why; the other columns are then NULL.
CREATE OR REPLACE FUNCTION pitr_plan(p_user uuid, p_at timestamptz, p_lsn pg_lsn)
RETURNS TABLE (base_id text, base_snapshot text, cut_lsn pg_lsn, cut_time timestamptz,
               refusal text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    st capture_state;
    b backup_metadata;
    snap pg_snapshot;
    cut pg_lsn;
    g capture_gaps;
    covered timestamptz;
    oldest timestamptz;
BEGIN
    SELECT * INTO st FROM capture_state;
    IF NOT FOUND OR st.reset_xid IS NULL THEN
        RETURN QUERY SELECT NULL::text, NULL::text, NULL::pg_lsn, NULL::timestamptz,
            'point-in-time restore needs the change capture (BACKUP_TRACKING=wal), and it has '
            || 'not started: no change is recorded';
        RETURN;
    END IF;
    -- the cut: by LSN as given, or the commit LSN of the user's last transaction at or before
    -- p_at (a segment recorded before 021 has no per-transaction times: whole, by its last)
    IF p_lsn IS NOT NULL THEN
        cut := p_lsn;
    ELSE
        SELECT max(x.lsn) INTO cut FROM (
            SELECT (t->>'lsn')::pg_lsn AS lsn
            FROM change_segments s, jsonb_array_elements(s.txns) t
            WHERE s.user_id = p_user AND s.txns IS NOT NULL AND s.first_commit <= p_at
              AND (t->>'time')::timestamptz <= p_at
            UNION ALL
            SELECT s.end_lsn FROM change_segments s
            WHERE s.user_id = p_user AND s.txns IS NULL AND s.last_commit <= p_at) x;
        cut := coalesce(cut, '0/0');
    END IF;
    -- the base: the newest completed backup taken before p_at (before p_lsn) that sees none of
    -- the user's transactions after the cut (checked on the segments: a backup whose
    -- snapshot_at is unknown is placed by completed_at, and the check holds it to the cut)
    SELECT m.* INTO b FROM backup_metadata m
    WHERE m.user_id = p_user AND m.status = 'completed' AND m.snapshot IS NOT NULL
      AND CASE WHEN p_lsn IS NOT NULL THEN m.snapshot_lsn <= p_lsn
               ELSE coalesce(m.snapshot_at, m.completed_at) <= p_at END
      AND NOT EXISTS (
          SELECT 1 FROM change_segments s, jsonb_array_elements(s.txns) t
          WHERE s.user_id = p_user AND s.txns IS NOT NULL AND s.end_lsn > cut
            AND (t->>'lsn')::pg_lsn > cut
            AND pg_visible_in_snapshot(capture_xid8((t->>'xid')::bigint, m.snapshot::pg_snapshot),
                                       m.snapshot::pg_snapshot))
    ORDER BY coalesce(m.snapshot_at, m.completed_at) DESC, m.completed_at DESC
    LIMIT 1;
    IF NOT FOUND THEN
        SELECT min(coalesce(m.snapshot_at, m.completed_at)) INTO oldest FROM backup_metadata m
        WHERE m.user_id = p_user AND m.status = 'completed' AND m.snapshot IS NOT NULL;
        RETURN QUERY SELECT NULL::text, NULL::text, NULL::pg_lsn, NULL::timestamptz,
            CASE WHEN oldest IS NULL THEN 'user ' || p_user || ' has no completed backup to '
                                          || 'start from'
                 ELSE 'the point is before the oldest backup of user ' || p_user || ' ('
                      || to_char(oldest AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
                      || '): there is nothing to start from' END;
        RETURN;
    END IF;
    snap := b.snapshot::pg_snapshot;
    -- a gap since the base (the slot lost, another system, the tracking switched): the changes
    -- after its last recorded position may be missing, so the point must come before the last
    -- commit recorded at or before that position
    SELECT * INTO g FROM capture_gaps x WHERE NOT pg_visible_in_snapshot(x.xid, snap)
    ORDER BY x.id LIMIT 1;
    IF FOUND THEN
        SELECT max(s.last_commit) INTO covered FROM change_segments s
        WHERE g.last_lsn IS NOT NULL AND s.end_lsn <= g.last_lsn;
        IF (p_lsn IS NOT NULL AND (g.last_lsn IS NULL OR p_lsn > g.last_lsn))
           OR (p_lsn IS NULL AND (covered IS NULL OR p_at >= covered)) THEN
            RETURN QUERY SELECT NULL::text, NULL::text, NULL::pg_lsn, NULL::timestamptz,
                'the change capture has a gap after backup ' || b.id || ' ('
                || g.reason || ', detected '
                || to_char(g.detected_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                || '): changes after '
                || coalesce(to_char(covered AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                            'the backup')
                || ' may be missing, and the point is inside that window';
            RETURN;
        END IF;
    ELSIF NOT pg_visible_in_snapshot(st.reset_xid, snap) THEN
        -- the capture started after the base: what came between is in no segment
        RETURN QUERY SELECT NULL::text, NULL::text, NULL::pg_lsn, NULL::timestamptz,
            'the change capture started after backup ' || b.id
            || ': changes between it and the point are recorded nowhere (restore that backup by '
            || 'id, or a point after the next backup)';
        RETURN;
    END IF;
    RETURN QUERY SELECT b.id, b.snapshot, cut,
        (SELECT max((t->>'time')::timestamptz) FROM change_segments s, jsonb_array_elements(s.txns) t
         WHERE s.user_id = p_user AND s.txns IS NOT NULL AND s.start_lsn <= cut
           AND (t->>'lsn')::pg_lsn <= cut
           AND NOT pg_visible_in_snapshot(capture_xid8((t->>'xid')::bigint, snap), snap)),
        NULL::text;
END
$$;

-- The change segments of p_user that no kept backup needs (cleanup deletes them): a restore to a
-- point in time starts from a completed backup and replays only what its snapshot does not see,
-- and every later backup sees more, so a segment all of whose transactions the oldest completed
-- backup sees is needed by none. The PITR window is thus the retention period. Nothing while the
-- user has no completed backup with a snapshot (a backup under way will need what follows it).
CREATE OR REPLACE FUNCTION capture_segments_expired(p_user uuid)
RETURNS TABLE (id text, s3_key text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    snap pg_snapshot;
BEGIN
    SELECT m.snapshot::pg_snapshot INTO snap FROM backup_metadata m
    WHERE m.user_id = p_user AND m.status = 'completed' AND m.snapshot IS NOT NULL
    ORDER BY coalesce(m.snapshot_at, m.completed_at), m.completed_at LIMIT 1;
    IF snap IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT s.id, s.s3_key FROM change_segments s
    WHERE s.user_id = p_user
      AND NOT EXISTS (SELECT 1 FROM unnest(s.xids) x
                      WHERE NOT pg_visible_in_snapshot(capture_xid8(x, snap), snap))
    ORDER BY s.end_lsn;
END
$$;
