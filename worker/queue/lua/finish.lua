-- FINISH: record a batch of results. Per job: entry, job_id, type, user_id,
-- outcome (completed | retry | wait | dead: wait is a retry after an outage, which gives the
-- run's attempt back), error (for completed: a note, may be empty), retry at (ms), backup_id, rows,
-- bytes, attempts (0: never started), result (for completed: a JSON document the job type
-- defines, such as a restore's changes per table, may be empty), field count n, n field/value strings
-- (sent for retries and dead letters). Replies 'ok' or 'lost' per job. For a
-- job that never started (malformed entry), the status hash is written only if
-- it does not belong to another entry: garbage must not overwrite the status
-- of a real job that has its job_id. A started run owns it (START checked).
local function finish(entry, jid, jtype, uid, outcome, why, at, bid, rows, bytes, n, result, from, nf)
  if not mine(entry) then return 'lost' end
  local jk = P .. ':job:' .. jid
  local cur, own = true, true
  if n == '0' then
    cur = redis.call('HGET', jk, 'entry')
    own = (not cur) or cur == entry
  end
  local ev
  if outcome == 'completed' then
    if own then
      redis.call('HSET', jk, 'status', 'completed', 'progress', 100, 'stage', 'done', 'finished_at', now,
                 'backup_id', bid, 'rows', rows, 'rows_total', rows, 'bytes', bytes, 'error', '', 'note', why)
    end
    if own and result ~= '' then redis.call('HSET', jk, 'result', result) end
    ev = {'event', 'completed', 'status', 'completed', 'backup_id', bid, 'rows', rows, 'bytes', bytes}
    if why ~= '' then ev[#ev + 1] = 'note'; ev[#ev + 1] = why end
    if result ~= '' then ev[#ev + 1] = 'result'; ev[#ev + 1] = result end
  elseif outcome == 'retry' or outcome == 'wait' then
    if own then
      redis.call('HSET', jk, 'status', 'retrying', 'entry', '', 'error', why, 'retry_at', at,
                 'stage', outcome == 'wait' and 'waiting for a service to come back' or 'waiting to retry')
      if outcome == 'wait' then
        redis.call('HINCRBY', jk, 'attempts', -1)
        redis.call('HINCRBY', jk, 'outages', 1)
      end
      redis.call('SET', jk .. ':payload', cmsgpack.pack(fields_of(from, nf, jid)), 'PX', keep)
      redis.call('ZADD', P .. ':delayed', at, jid)
    end
    ev = {'event', 'retrying', 'status', 'retrying', 'error', why, 'retry_at', at}
  else
    dead_letter(fields_of(from, nf, jid), entry, why, n)
    if own then
      redis.call('HSET', jk, 'status', 'dead', 'entry', entry, 'error', why, 'finished_at', now,
                 'type', jtype, 'user_id', uid, 'attempts', n)
    end
    ev = {'event', 'dead', 'status', 'dead', 'error', why}
  end
  if own then
    if not cur then redis.call('HSET', jk, 'created_at', now) end
    redis.call('PEXPIRE', jk, keep)
  end
  redis.call('XACK', stream, group, entry)
  unlock(uid, me .. '/' .. entry)
  for _, v in ipairs({'job_id', jid, 'type', jtype, 'user_id', uid, 'attempt', n}) do ev[#ev + 1] = v end
  emit(uid, ev)
  return 'ok'
end

local out, i = {}, 7
while i <= #ARGV do
  local nf = tonumber(ARGV[i + 12])
  out[#out + 1] = finish(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5],
                         ARGV[i + 6], ARGV[i + 7], ARGV[i + 8], ARGV[i + 9], ARGV[i + 10], ARGV[i + 11],
                         i + 13, nf)
  i = i + 13 + nf
end
return out
