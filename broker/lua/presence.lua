-- Count a gateway's connections to a conversation, per gateway, so that a dead
-- gateway's connections can be forgotten (forget_gateway.lua) without SCAN.
-- KEYS: clients (conversation: gateway id -> count), conversations (gateway: id -> count)
-- ARGV: gateway_id, conversation_id, delta (1 on join, -1 on leave)
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[3])
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
n = redis.call('HINCRBY', KEYS[2], ARGV[2], ARGV[3])
if n <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]) end
return n
