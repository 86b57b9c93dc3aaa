-- Read a conversation's log after an id from Redis, with where the list starts
-- (meta.archived: the ids below it were moved to PostgreSQL), in one step, so that a
-- move finishing meanwhile cannot shift what the ids mean.
-- KEYS: meta, log
-- ARGV: after (an event id; -1 for the start), limit (-1 for no limit)
-- Returns {archived, {entry...}}: the entries with after < id <= after + limit that
-- Redis holds (ids from archived on).
local base = tonumber(redis.call('HGET', KEYS[1], 'archived') or 0)
local after, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local start = math.max(after + 1, base) - base
local stop = -1
if limit >= 0 then
  stop = after + limit - base
  if stop < start then return {base, {}} end
end
return {base, redis.call('LRANGE', KEYS[2], start, stop)}
