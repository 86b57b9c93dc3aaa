-- The snapshot of the step a turn is streaming: its text so far and the last frame's
-- seq, so that a client connecting mid-step gets the whole text in one frame. Fenced
-- like an append; a new (turn, epoch, step) starts the text over.
-- KEYS: lease, stream
-- ARGV: lease_value, turn_id, epoch, step, seq, delta
-- Returns 1, or 0 when the lease moved on (nothing written).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local current = redis.call('HMGET', KEYS[2], 'turn_id', 'epoch', 'step')
if current[1] ~= ARGV[2] or current[2] ~= ARGV[3] or current[3] ~= ARGV[4] then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], 'turn_id', ARGV[2], 'epoch', ARGV[3], 'step', ARGV[4])
end
redis.call('HSET', KEYS[2], 'seq', ARGV[5])
redis.call('HSET', KEYS[2], 'text', (redis.call('HGET', KEYS[2], 'text') or '') .. ARGV[6])
return 1
