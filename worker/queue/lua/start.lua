-- START: claim a batch of delivered entries. ARGV[7] busy wait (ms), [8] lock
-- TTL (ms), [9] max attempts; then per job: entry, job_id, type, user_id,
-- lock (1/0), swept (1/0), field count n, n field/value strings. Entries
-- fresh from XREADGROUP are ours; swept ones are checked again (another
-- worker's sweep may have been quicker).
-- Replies one result per job: {'run', attempt} | {'busy'} | {'duplicate',
-- status} | {'dead', attempts} | {'lost'}.
local wait, ttl, max = tonumber(ARGV[7]), ARGV[8], tonumber(ARGV[9])

local function start(entry, jid, jtype, uid, lock, swept, from, nf)
  if swept and not mine(entry) then return {'lost'} end
  local jk = P .. ':job:' .. jid
  local h = redis.call('HMGET', jk, 'entry', 'attempts', 'status')
  local cur = h[1]
  if cur and cur ~= entry then
    -- the same job_id enqueued again: it runs once
    redis.call('XACK', stream, group, entry)
    local st = h[3] or ''
    emit(uid, {'event', 'duplicate', 'job_id', jid, 'type', jtype, 'user_id', uid, 'entry', entry})
    return {'duplicate', st}
  end
  local token = me .. '/' .. entry
  if lock then
    local lk = P .. ':lock:user:' .. uid
    local holder = redis.call('GET', lk)
    if holder and holder ~= token then
      -- another job of this user runs: wait in the delayed set, not counted as an attempt
      redis.call('HSET', jk, 'status', 'queued', 'entry', '', 'type', jtype, 'user_id', uid,
                 'stage', 'waiting for another job of this user')
      if not cur then redis.call('HSET', jk, 'created_at', now) end
      redis.call('PEXPIRE', jk, keep)
      redis.call('SET', jk .. ':payload', cmsgpack.pack(fields_of(from, nf, jid)), 'PX', keep)
      redis.call('ZADD', P .. ':delayed', now + wait, jid)
      redis.call('XACK', stream, group, entry)
      emit(uid, {'event', 'waiting', 'job_id', jid, 'type', jtype, 'user_id', uid, 'status', 'queued'})
      return {'busy'}
    end
    redis.call('SET', lk, token, 'PX', ttl)
  end
  local n = tonumber(h[2] or '0') + 1
  if n > max then
    -- every earlier run stopped without a result (its worker died): give up
    local why = 'gave up after ' .. max .. ' attempts: the job never finished (its worker stopped each time)'
    dead_letter(fields_of(from, nf, jid), entry, why, n - 1)
    redis.call('HSET', jk, 'status', 'dead', 'entry', entry, 'type', jtype, 'user_id', uid,
               'error', why, 'attempts', n - 1, 'finished_at', now)
    redis.call('PEXPIRE', jk, keep)
    redis.call('XACK', stream, group, entry)
    if lock then unlock(uid, token) end
    emit(uid, {'event', 'dead', 'job_id', jid, 'type', jtype, 'user_id', uid, 'status', 'dead', 'error', why})
    return {'dead', n - 1}
  end
  local run = {'status', 'running', 'entry', entry, 'type', jtype, 'user_id', uid, 'attempts', n,
               'worker', me, 'started_at', now, 'stage', 'starting', 'progress', 0, 'error', ''}
  if not cur then run[#run + 1] = 'created_at'; run[#run + 1] = now end
  redis.call('HSET', jk, unpack(run))
  redis.call('PEXPIRE', jk, keep)
  emit(uid, {'event', 'started', 'job_id', jid, 'type', jtype, 'user_id', uid, 'status', 'running',
             'attempt', tostring(n)})
  return {'run', n}
end

local out, i = {}, 10
while i <= #ARGV do
  local nf = tonumber(ARGV[i + 6])
  out[#out + 1] = start(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4] == '1',
                        ARGV[i + 5] == '1', i + 7, nf)
  i = i + 7 + nf
end
return out
