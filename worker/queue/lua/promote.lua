-- PROMOTE: move due jobs from {prefix}:delayed back to the stream as new
-- entries. ARGV[7] batch limit. ZREM decides who moves a job, so two workers
-- running this at once never enqueue it twice. Replies the count moved.
local due = redis.call('ZRANGEBYSCORE', P .. ':delayed', '-inf', now, 'LIMIT', 0, tonumber(ARGV[7]))
local moved = 0
for _, jid in ipairs(due) do
  if redis.call('ZREM', P .. ':delayed', jid) == 1 then
    local jk = P .. ':job:' .. jid
    local payload = redis.call('GET', jk .. ':payload')
    if payload then
      local id = redis.call('XADD', stream, '*', unpack(cmsgpack.unpack(payload)))
      redis.call('HSET', jk, 'entry', id, 'status', 'queued')
      moved = moved + 1
    end
  end
end
return moved
