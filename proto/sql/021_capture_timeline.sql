-- 021: the timeline of a user's transactions (backupctl timeline, GET /api/backup/timeline):
-- each change segment sums up its transactions, one object each in commit order:
-- {"xid": 741, "lsn": "0/16B3748", "time": "2026-12-07T09:14:00.123456Z",
--  "counts": {"orders": {"i": 1, "u": 0, "d": 0, "t": 0}}}
-- (segments recorded before 021 have none: the timeline shows them whole).
ALTER TABLE change_segments ADD COLUMN IF NOT EXISTS txns jsonb;

-- Record one flush of the leader of epoch p_epoch: its segments (a JSON array of objects with
-- change_segments' columns) and the position now covered. Refused when a newer leader took
-- over (the stale leader's segments do not count); a segment recorded before (a replay after a
-- crash) is left as it was. Returns how many segments were new.
-- p_owners: the owners changed since the last flush, each key once ({"t": table, "k": key,
-- "u": user or null when the row is gone}); p_truncated: tables truncated since, whose older
-- owners all go first.
CREATE OR REPLACE FUNCTION capture_record(p_epoch bigint, p_lsn pg_lsn, p_segments jsonb,
                                          p_owners jsonb, p_truncated text[])
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    PERFORM 1 FROM capture_state WHERE epoch = p_epoch FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'capture epoch % is stale', p_epoch USING ERRCODE = 'P0001';
    END IF;
    INSERT INTO change_segments (id, user_id, s3_key, start_lsn, end_lsn, first_commit, last_commit,
                                 xids, changes, counts, txns, size, checksum, codecs, epoch)
    SELECT s.id, s.user_id, s.s3_key, s.start_lsn, s.end_lsn, s.first_commit, s.last_commit,
           s.xids, s.changes, s.counts, s.txns, s.size, s.checksum, s.codecs, p_epoch
    FROM jsonb_to_recordset(p_segments) AS s(id text, user_id uuid, s3_key text, start_lsn pg_lsn,
         end_lsn pg_lsn, first_commit timestamptz, last_commit timestamptz, xids bigint[],
         changes integer, counts jsonb, txns jsonb, size bigint, checksum text, codecs text[])
    ON CONFLICT (id) DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM capture_owners WHERE table_name = ANY (p_truncated);
    DELETE FROM capture_owners o USING jsonb_to_recordset(p_owners) AS x(t text, k text, u uuid)
    WHERE x.u IS NULL AND o.table_name = x.t AND o.row_key = x.k;
    INSERT INTO capture_owners (table_name, row_key, user_id)
    SELECT x.t, x.k, x.u FROM jsonb_to_recordset(p_owners) AS x(t text, k text, u uuid)
    WHERE x.u IS NOT NULL
    ON CONFLICT (table_name, row_key) DO UPDATE SET user_id = EXCLUDED.user_id;
    UPDATE capture_state SET confirmed_lsn = greatest(confirmed_lsn, p_lsn), updated_at = now()
    WHERE epoch = p_epoch;
    RETURN n;
END
$$;
