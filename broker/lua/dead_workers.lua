-- Workers whose deadline passed (Redis clock) and whose liveness key is gone.
-- KEYS: deadlines
-- ARGV: alive_prefix, limit
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local dead = {}
for _, id in ipairs(ids) do
  if redis.call('EXISTS', ARGV[1] .. id) == 0 then dead[#dead + 1] = id end
end
return dead
