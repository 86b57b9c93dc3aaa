-- Raise a hash field to at least a value: a cursor that only moves forward, whoever
-- writes it and in whatever order (a paused process's late write cannot move it back).
-- KEYS: the hash
-- ARGV: field, value (an integer)
-- Returns the field's value afterwards.
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]))
local value = tonumber(ARGV[2])
if current == nil or current < value then
  redis.call('HSET', KEYS[1], ARGV[1], value)
  return value
end
return current
