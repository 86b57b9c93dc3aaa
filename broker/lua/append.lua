-- Fenced append: log events only while the caller's lease value (worker:epoch) is
-- current, so a stale owner can never write. Ids are consecutive from 0.
-- With a dedupe key ("once"), a batch is logged at most once per conversation.
-- The log's size in bytes is kept in the record (meta.log_bytes) for its cap.
-- KEYS: lease, log, once, meta
-- ARGV: lease_value, once_key ('' for none), body1, body2, ...
--   each body is an event's JSON without its opening brace and id.
-- Returns {first_id} when appended, {-1} when fenced, or
--   {-2, first_id, entry...} when once_key was logged before (the entries it logged).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end
local n = #ARGV - 2
if ARGV[2] ~= '' then
  local prev = redis.call('HGET', KEYS[3], ARGV[2])
  if prev then
    local first, count = string.match(prev, '^(%d+):(%d+)$')
    first = tonumber(first)
    local entries = redis.call('LRANGE', KEYS[2], first, first + tonumber(count) - 1)
    return {-2, first, unpack(entries)}
  end
end
local first = redis.call('LLEN', KEYS[2])
local entries, size = {}, 0
for i = 1, n do
  entries[i] = '{"id":' .. (first + i - 1) .. ',' .. ARGV[i + 2]
  size = size + #entries[i]
end
redis.call('RPUSH', KEYS[2], unpack(entries))
redis.call('HINCRBY', KEYS[4], 'log_bytes', size)
if ARGV[2] ~= '' then redis.call('HSET', KEYS[3], ARGV[2], first .. ':' .. n) end
return {first}
