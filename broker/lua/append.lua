-- Fenced append: log events only while the caller's lease value (worker:epoch) is
-- current, so a stale owner can never write. Ids are consecutive from 0.
-- With a dedupe key ("once"), a batch is logged at most once per conversation.
-- Kept in step with the log, in the same call: the log's size in bytes (meta.log_bytes,
-- for its cap), where its oldest unfinished turn starts (meta.turn_from, for the next
-- owner to resume from), the agent's last logged state (meta.agent_state, for readers
-- of the record), the stream snapshot of a step now logged (deleted), and the open
-- approval requests (one opened as it is logged, or closed with its turn).
-- KEYS: lease, log, once, meta, stream, approvals
-- ARGV: lease_value, once_key ('' for none),
--       turn_from ('' unchanged, '-' none, '=' this batch's first id, or an id),
--       logged_step ('' or turn_id .. ' ' .. step: that step's snapshot goes),
--       agent_state ('' unchanged, or the last state this batch logs),
--       open_request ('' or an approval request id), its options (JSON),
--       close_request ('' or an approval request id),
--       body1, body2, ...  (each an event's JSON without its opening brace and id)
-- Returns {first_id} when appended, {-1} when fenced, or
--   {-2, first_id, entry...} when once_key was logged before (the entries it logged).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end
local n = #ARGV - 8
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
  entries[i] = '{"id":' .. (first + i - 1) .. ',' .. ARGV[i + 8]
  size = size + #entries[i]
end
if n > 0 then redis.call('RPUSH', KEYS[2], unpack(entries)) end
redis.call('HINCRBY', KEYS[4], 'log_bytes', size)
if ARGV[2] ~= '' then redis.call('HSET', KEYS[3], ARGV[2], first .. ':' .. n) end
if ARGV[3] == '-' then
  redis.call('HDEL', KEYS[4], 'turn_from')
elseif ARGV[3] == '=' then
  redis.call('HSET', KEYS[4], 'turn_from', first)
elseif ARGV[3] ~= '' then
  redis.call('HSET', KEYS[4], 'turn_from', ARGV[3])
end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[4], 'agent_state', ARGV[5]) end
if ARGV[4] ~= '' then
  local turn, step = string.match(ARGV[4], '^(.*) (%d+)$')
  local current = redis.call('HMGET', KEYS[5], 'turn_id', 'step')
  if current[1] == turn and current[2] == step then redis.call('DEL', KEYS[5]) end
end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[6], ARGV[6], ARGV[7]) end
if ARGV[8] ~= '' then redis.call('HDEL', KEYS[6], ARGV[8]) end
return {first}
