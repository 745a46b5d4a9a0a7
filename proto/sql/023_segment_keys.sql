-- 023: change segments' data keys in their records, and their replica copies made as they are
-- written.
--
-- Keys: an encrypted segment's data key, wrapped under a key-encryption key, was only in the
-- object's own (authenticated) header, so retiring a key meant rewriting every segment. Its
-- wrapping is now recorded here, as backup_metadata records a backup's: readers open the data
-- key from the record, `backupctl rekey` rewraps it here (the object is never rewritten: its
-- checksum stays), and a segment recorded before 023 (key_id NULL) is read through its header
-- until a rekey records its wrapping.
ALTER TABLE change_segments ADD COLUMN IF NOT EXISTS key_id text;
ALTER TABLE change_segments ADD COLUMN IF NOT EXISTS wrapped_key text;

-- Replica: the capture's leader copies each new segment to the replica bucket soon after it is
-- recorded (no longer only after the user's next backup); a copy that failed is tried again
-- with a growing delay, replica_attempts times so far, the last at replica_tried_at.
ALTER TABLE change_segments ADD COLUMN IF NOT EXISTS replica_attempts integer NOT NULL DEFAULT 0;
ALTER TABLE change_segments ADD COLUMN IF NOT EXISTS replica_tried_at timestamptz;
CREATE INDEX IF NOT EXISTS change_segments_unreplicated_idx ON change_segments (end_lsn)
    WHERE replica_status IS DISTINCT FROM 'completed';

-- capture_record (021) with the segments' wrappings: the same, key_id and wrapped_key taken
-- from each segment's object (absent for a cleartext one).
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
                                 xids, changes, counts, txns, size, checksum, codecs, key_id,
                                 wrapped_key, epoch)
    SELECT s.id, s.user_id, s.s3_key, s.start_lsn, s.end_lsn, s.first_commit, s.last_commit,
           s.xids, s.changes, s.counts, s.txns, s.size, s.checksum, s.codecs, s.key_id,
           s.wrapped_key, p_epoch
    FROM jsonb_to_recordset(p_segments) AS s(id text, user_id uuid, s3_key text, start_lsn pg_lsn,
         end_lsn pg_lsn, first_commit timestamptz, last_commit timestamptz, xids bigint[],
         changes integer, counts jsonb, txns jsonb, size bigint, checksum text, codecs text[],
         key_id text, wrapped_key text)
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
