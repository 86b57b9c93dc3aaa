-- Finish moving a conversation's history to PostgreSQL, once its copy is committed
-- there: drop from Redis the log (ids from meta.archived on), the dedupe keys and the
-- action digests that were copied, and raise meta.archived past them. Only while the
-- conversation is passivated or closed (no lease: nobody appends, and an owner's
-- dedupe checks never race this), and only if nothing changed since the copy began:
-- the list starts where it did (no other mover finished first), holds what was copied
-- (nothing was appended), and no input was admitted (meta.active as it was).
-- KEYS: meta, lease, log, once, actions, archive_owed
-- ARGV: conversation_id, archived (meta.archived when the copy began), count (events
--       copied), active (meta.active when the copy began, '' if none)
-- Returns 'archived' (done: no longer owed), or why not:
--   'running' not passivated nor closed: owed nothing until it is again (then indexed anew)
--   'stale'   another mover finished first
--   'changed' input came or events were logged meanwhile: copy again
local status = redis.call('HGET', KEYS[1], 'status')
if (status ~= 'idle' and status ~= 'closed') or redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('ZREM', KEYS[6], ARGV[1])
  return 'running'
end
local base = tonumber(redis.call('HGET', KEYS[1], 'archived') or 0)
if base ~= tonumber(ARGV[2]) then return 'stale' end
local count = tonumber(ARGV[3])
if (redis.call('HGET', KEYS[1], 'active') or '') ~= ARGV[4]
   or redis.call('LLEN', KEYS[3]) ~= count then
  return 'changed'
end
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])
redis.call('HSET', KEYS[1], 'archived', base + count)
redis.call('ZREM', KEYS[6], ARGV[1])
return 'archived'
