-- Forget a timer: cancelled by its conversation's owner (fenced, with lease_value), or
-- fired and logged ('' for lease_value: logging it was fenced already).
-- KEYS: lease, timers (the conversation's), due
-- ARGV: lease_value ('' not to check), conversation_id, timer_id
-- Returns 1 when it was scheduled, 0 when not, -1 when the lease had moved on.
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('ZREM', KEYS[3], ARGV[2] .. ' ' .. ARGV[3])
return redis.call('HDEL', KEYS[2], ARGV[3])
