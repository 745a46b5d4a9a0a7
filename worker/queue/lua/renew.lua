-- RENEW: keep a running entry's lease (and its user lock). ARGV[7] entry,
-- [8] user_id ('' = no lock), [9] lock TTL (ms). Replies 1, or 0 when the
-- entry is no longer ours (taken over): the run must stop.
local entry, uid, ttl = ARGV[7], ARGV[8], ARGV[9]
if not mine(entry) then return 0 end
-- JUSTID resets the idle time without counting a delivery
redis.call('XCLAIM', stream, group, me, 0, entry, 'JUSTID')
if uid ~= '' then
  local lk = P .. ':lock:user:' .. uid
  if redis.call('GET', lk) == me .. '/' .. entry then redis.call('PEXPIRE', lk, ttl) end
end
return 1
