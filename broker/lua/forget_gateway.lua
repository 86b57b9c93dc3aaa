-- Forget a gateway's connections (it died, or is leaving): remove its count from
-- every conversation it had clients in, then its own records.
-- KEYS: deadlines, alive, conversations (of the gateway)
-- ARGV: gateway_id, conv_prefix (clients keys are conv_prefix .. id .. '}:clients'),
--       force ('1' even if alive: a gateway leaving on purpose)
-- Returns the number of conversations it was in, or -1 when it is alive after all.
if ARGV[3] ~= '1' and redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local cids = redis.call('HKEYS', KEYS[3])
for _, cid in ipairs(cids) do
  redis.call('HDEL', ARGV[2] .. cid .. '}:clients', ARGV[1])
end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[1], ARGV[1])
return #cids
