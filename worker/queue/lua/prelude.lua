-- Prepended to every script. ARGV[1..6]: prefix, group, consumer, now (ms),
-- events MAXLEN, status-hash retention (ms).
local P, group, me = ARGV[1], ARGV[2], ARGV[3]
local now, maxlen, keep = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local stream = P .. ':jobs'

-- One event: appended to {prefix}:events and, for a user's job, published as
-- JSON on {prefix}:progress:{user_id}.
local function emit(uid, ev)
  ev[#ev + 1] = 'worker'; ev[#ev + 1] = me
  ev[#ev + 1] = 'ts'; ev[#ev + 1] = tostring(now)
  redis.call('XADD', P .. ':events', 'MAXLEN', '~', maxlen, '*', unpack(ev))
  if uid ~= '' then
    local t = {}
    for i = 1, #ev, 2 do t[ev[i]] = ev[i + 1] end
    redis.call('PUBLISH', P .. ':progress:' .. uid, cjson.encode(t))
  end
end

-- The pending-entry record if entry is still delivered to this consumer: the
-- fence that rejects a late result from a worker whose lease ran out.
local function mine(entry)
  local p = redis.call('XPENDING', stream, group, entry, entry, 1)
  if #p == 0 or p[1][2] ~= me then return nil end
  return p[1]
end

local function unlock(uid, token)
  if uid == '' then return end
  local lk = P .. ':lock:user:' .. uid
  if redis.call('GET', lk) == token then redis.call('DEL', lk) end
end

-- ARGV[from .. from + n - 1] as a list, with job_id appended when missing
-- (a job re-enqueued for a retry must keep its id).
local function fields_of(from, n, jid)
  local f, has_id = {}, false
  for i = from, from + n - 1 do
    f[#f + 1] = ARGV[i]
    if (i - from) % 2 == 0 and ARGV[i] == 'job_id' then has_id = true end
  end
  if not has_id then f[#f + 1] = 'job_id'; f[#f + 1] = jid end
  return f
end

local function dead_letter(f, entry, why, attempts)
  for _, v in ipairs({'entry', entry, 'error', why, 'attempts', tostring(attempts),
                      'failed_at', tostring(now)}) do f[#f + 1] = v end
  redis.call('XADD', P .. ':dead', '*', unpack(f))
end
