-- Release a lease by compare-and-delete: only the holder of this exact epoch may.
-- KEYS: lease, meta, owns (of the releasing worker), idle (conversations by status)
-- ARGV: lease_value, conversation_id
-- Returns 1 when released, 0 when the lease had already moved on.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[3], ARGV[2])
if redis.call('HGET', KEYS[2], 'status') == 'running' then
  redis.call('HSET', KEYS[2], 'status', 'idle')
  redis.call('ZADD', KEYS[4], now_ms(), ARGV[2])
end
redis.call('HDEL', KEYS[2], 'owner')
return 1
