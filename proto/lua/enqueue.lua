-- ENQUEUE: add a job's entry and, unless its job id is known already, its status hash
-- `queued` (proto/README, "Following a job"), so a status read right after the enqueue finds
-- the job before a worker claims it; the worker's start takes the hash over (same entry).
-- KEYS[1] the jobs stream, KEYS[2] the job's hash; ARGV[1] type, [2] user_id, [3] now (ms),
-- [4] how long the hash is kept (ms: JOB_RETENTION, the workers' setting), then the entry's
-- field/value pairs. backupctl embeds this file; the TypeScript client's
-- BackupQueue.enqueue holds the same text (tests/test_names.sh checks they agree).
local e = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 5))
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('HSET', KEYS[2], 'status', 'queued', 'entry', e, 'type', ARGV[1], 'user_id', ARGV[2],
             'created_at', ARGV[3], 'stage', 'queued')
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return e
