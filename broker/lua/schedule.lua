-- Schedule (or move) a timer of a conversation's agent, by its owner only (fenced).
-- KEYS: lease, timers (the conversation's: id -> entry), due (every conversation's)
-- ARGV: lease_value, conversation_id, timer_id, at_ms, entry (JSON: at, payload)
-- Returns 1 when scheduled, 0 when the lease had moved on.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[5])
redis.call('ZADD', KEYS[3], tonumber(ARGV[4]), ARGV[2] .. ' ' .. ARGV[3])
return 1
