-- RETIRE: remove this consumer from the group if nothing is pending for it
-- (deleting a consumer drops its pending entries). Replies 1 if removed.
if #redis.call('XPENDING', stream, group, '-', '+', 1, me) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', stream, group, me)
return 1
