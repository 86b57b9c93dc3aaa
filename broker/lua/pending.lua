-- Conversations owed an owner for longer than `older_than` (their claim request was
-- lost with a gateway, or no worker could take it yet); they are marked as asked
-- again now, so each is asked at most once per `older_than`.
-- KEYS: pending
-- ARGV: older_than_ms, limit
local now = now_ms()
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]),
                         'LIMIT', 0, tonumber(ARGV[2]))
for _, cid in ipairs(stale) do redis.call('ZADD', KEYS[1], now, cid) end
return stale
