-- Processes of one role whose deadline passed (Redis clock) and whose liveness key
-- is gone.
-- KEYS: deadlines (of the role)
-- ARGV: role, limit
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[2]))
local dead = {}
for _, id in ipairs(ids) do
  if redis.call('EXISTS', key_alive(ARGV[1], id)) == 0 then dead[#dead + 1] = id end
end
return dead
