-- Count a gateway's clients per conversation and per user, in hashes keyed by gateway,
-- so that a dead gateway's clients can be forgotten (forget.lua) without SCAN; and
-- hold each user to a number of connections across every gateway.
-- KEYS: clients (conversation: gateway -> clients), connections (user: gateway ->
--       connections), index (gateway: 'c:' .. conversation / 'u:' .. user -> count)
-- ARGV: gateway_id, conversation_id, user, delta (1 on join, -1 on leave),
--       limit (the user's connections; 0: none)
-- Returns 1, or 0 when joining would exceed the user's limit (nothing changed).
local gw, delta, limit = ARGV[1], tonumber(ARGV[4]), tonumber(ARGV[5])
if delta > 0 and limit > 0 then
  local total = 0
  for _, n in ipairs(redis.call('HVALS', KEYS[2])) do total = total + tonumber(n) end
  if total >= limit then return 0 end
end
local function count(key, field)
  if redis.call('HINCRBY', key, field, delta) <= 0 then redis.call('HDEL', key, field) end
end
count(KEYS[1], gw)
count(KEYS[2], gw)
count(KEYS[3], 'c:' .. ARGV[2])
count(KEYS[3], 'u:' .. ARGV[3])
return 1
