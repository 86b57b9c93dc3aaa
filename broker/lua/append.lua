-- Fenced append: log events only while the caller's lease value (worker:epoch) is
-- current, so a stale owner can never write. Ids are consecutive from 0; the ids
-- below meta.archived were moved to PostgreSQL, and the list holds the rest.
-- With a dedupe key ("once"), a batch is logged at most once per conversation: the
-- key's first id and count are kept here, or in PostgreSQL once archived (a caller
-- told so looks there, then calls again with archive_checked).
-- Kept in step with the log, in the same call: the log's size in bytes (meta.log_bytes,
-- for its cap), where its oldest unfinished turn starts (meta.turn_from, for the next
-- owner to resume from), the agent's last logged state (meta.agent_state, for readers
-- of the record), the stream snapshot of a step now logged (deleted), and the open
-- approval requests (one opened as it is logged, or closed with its turn).
-- KEYS: lease, log, once, meta, stream, approvals
-- ARGV: lease_value, once_key ('' for none),
--       archive_checked ('1': once_key is not among the archived keys),
--       turn_from ('' unchanged, '-' none, '=' this batch's first id, or an id),
--       logged_step ('' or turn_id .. ' ' .. step: that step's snapshot goes),
--       agent_state ('' unchanged, or the last state this batch logs),
--       open_request ('' or an approval request id), its options (JSON),
--       close_request ('' or an approval request id),
--       body1, body2, ...  (each an event's JSON without its opening brace and id)
-- Returns {first_id} when appended, {-1} when fenced,
--   {-2, first_id, entry...} when once_key was logged before (the entries it logged),
--   {-3, first_id, count} when once_key was logged before and its entries are archived,
--   {-4} when once_key may be among the archived keys (look, then call again).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end
local base = tonumber(redis.call('HGET', KEYS[4], 'archived') or 0)
local n = #ARGV - 9
if ARGV[2] ~= '' then
  local prev = redis.call('HGET', KEYS[3], ARGV[2])
  if prev then
    local first, count = string.match(prev, '^(%d+):(%d+)$')
    first, count = tonumber(first), tonumber(count)
    if first < base then return {-3, first, count} end
    local entries = redis.call('LRANGE', KEYS[2], first - base, first - base + count - 1)
    return {-2, first, unpack(entries)}
  end
  if base > 0 and ARGV[3] ~= '1' then return {-4} end
end
local first = base + redis.call('LLEN', KEYS[2])
local entries, size = {}, 0
for i = 1, n do
  entries[i] = '{"id":' .. (first + i - 1) .. ',' .. ARGV[i + 9]
  size = size + #entries[i]
end
if n > 0 then redis.call('RPUSH', KEYS[2], unpack(entries)) end
redis.call('HINCRBY', KEYS[4], 'log_bytes', size)
if ARGV[2] ~= '' then redis.call('HSET', KEYS[3], ARGV[2], first .. ':' .. n) end
if ARGV[4] == '-' then
  redis.call('HDEL', KEYS[4], 'turn_from')
elseif ARGV[4] == '=' then
  redis.call('HSET', KEYS[4], 'turn_from', first)
elseif ARGV[4] ~= '' then
  redis.call('HSET', KEYS[4], 'turn_from', ARGV[4])
end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[4], 'agent_state', ARGV[6]) end
if ARGV[5] ~= '' then
  local turn, step = string.match(ARGV[5], '^(.*) (%d+)$')
  local current = redis.call('HMGET', KEYS[5], 'turn_id', 'step')
  if current[1] == turn and current[2] == step then redis.call('DEL', KEYS[5]) end
end
if ARGV[7] ~= '' then redis.call('HSET', KEYS[6], ARGV[7], ARGV[8]) end
if ARGV[9] ~= '' then redis.call('HDEL', KEYS[6], ARGV[9]) end
return {first}
