-- PROGRESS: ARGV[7] entry, [8] job_id, [9] type, [10] user_id, [11] stage,
-- [12] percent, [13] rows, [14] bytes, [15] rows_total (0: unknown). Updates the status hash (if this run
-- still owns it) and emits a progress event.
local entry, jid, jtype, uid = ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local jk = P .. ':job:' .. jid
if redis.call('HGET', jk, 'entry') ~= entry then return 0 end
redis.call('HSET', jk, 'stage', ARGV[11], 'progress', ARGV[12], 'rows', ARGV[13], 'bytes', ARGV[14],
           'rows_total', ARGV[15])
emit(uid, {'event', 'progress', 'job_id', jid, 'type', jtype, 'user_id', uid, 'status', 'running',
           'stage', ARGV[11], 'progress', ARGV[12], 'rows', ARGV[13], 'bytes', ARGV[14],
           'rows_total', ARGV[15]})
return 1
