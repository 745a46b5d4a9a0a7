-- HANDBACK: give an unfinished entry back at shutdown. ARGV[7] entry, [8]
-- job_id, [9] type, [10] user_id, [11] lease (ms). The entry stays in this
-- consumer's pending list but looks idle past the lease, so the next sweep of
-- any live worker takes it; RETRYCOUNT undoes this delivery and the attempt
-- is not counted.
local entry, jid, jtype, uid, lease = ARGV[7], ARGV[8], ARGV[9], ARGV[10], tonumber(ARGV[11])
local p = mine(entry)
if not p then return 0 end
local count = math.max(p[4] - 1, 0)
redis.call('XCLAIM', stream, group, me, 0, entry, 'IDLE', lease + 1, 'RETRYCOUNT', count, 'JUSTID')
local jk = P .. ':job:' .. jid
if redis.call('HGET', jk, 'entry') == entry then
  if redis.call('HGET', jk, 'status') == 'running' then redis.call('HINCRBY', jk, 'attempts', -1) end
  redis.call('HSET', jk, 'status', 'queued', 'stage', 'handed back at shutdown')
end
unlock(uid, me .. '/' .. entry)
emit(uid, {'event', 'handed_back', 'job_id', jid, 'type', jtype, 'user_id', uid, 'status', 'queued'})
return 1
