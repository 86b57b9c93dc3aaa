-- Mark a closing conversation closed, by its owner only (fenced): the lease is
-- deleted and nothing can ever claim it again. With history archiving on, it is then
-- owed a move of its log to PostgreSQL.
-- KEYS: lease, meta, owns (of the owner), closing, closed (conversations by status),
--       archive_owed
-- ARGV: lease_value, conversation_id, archive ('1' or '')
-- Returns 1 when closed, 0 when the lease had moved on.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local now = now_ms()
redis.call('HSET', KEYS[2], 'status', 'closed', 'closed_at', now / 1000)
redis.call('HDEL', KEYS[2], 'owner')
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('ZADD', KEYS[5], now, ARGV[2])
if ARGV[3] == '1' then redis.call('ZADD', KEYS[6], now, ARGV[2]) end
return 1
