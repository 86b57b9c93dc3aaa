-- Conversations owed a move of their history to PostgreSQL for longer than
-- `older_than` (their mover died, or PostgreSQL was down); they are marked as tried
-- again now, so each is tried at most once per `older_than`.
-- KEYS: archive_owed
-- ARGV: older_than_ms, limit
local now = now_ms()
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]),
                         'LIMIT', 0, tonumber(ARGV[2]))
for _, cid in ipairs(stale) do redis.call('ZADD', KEYS[1], now, cid) end
return stale
