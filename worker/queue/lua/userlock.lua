-- USERLOCK: a job that works through many users (cleanup scope=all) takes each user's lock as
-- it goes, the same lock START takes for a job of one user. ARGV[7] entry, [8] user_id,
-- [9] lock TTL (ms), [10] 'lock' or 'unlock'. Replies 1 (locked / released), 0 (another job
-- of that user holds it), or -1 when the entry is no longer ours.
local entry, uid, ttl, op = ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local token = me .. '/' .. entry
if op == 'unlock' then
  unlock(uid, token)
  return 1
end
if not mine(entry) then return -1 end
local lk = P .. ':lock:user:' .. uid
local holder = redis.call('GET', lk)
if holder and holder ~= token then return 0 end
redis.call('SET', lk, token, 'PX', ttl)
return 1
