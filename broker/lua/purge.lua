-- Purge one conversation for good (`fleet purge`), in steps, each atomic:
--   check    whether it qualifies (changes nothing: a dry run);
--   hold     it must qualify: closed before the cutoff; or idle since before it, with
--            no owner, client, input owed an owner or unfinished turn. It turns
--            'purging': no input is admitted, no claim succeeds. Held already: held.
--   delete   a held conversation's keys and index entries go (its queue went first);
--   restore  a held conversation whose queue turned out to hold input goes back to
--            its status, owed an owner.
-- KEYS: meta, lease, epoch, log, once, actions, stream, clients, pending,
--       idle, closing, closed, full (the indexes)
-- ARGV: conversation_id, step, kind ('closed' | 'idle'), cutoff_ms
-- Returns 'held' | 'deleted' | 'restored', or why not: 'gone', 'not_held', or (check,
-- hold) 'not_closed' | 'not_idle' | 'recent' | 'owned' | 'watched' | 'pending' | 'unfinished'.
local cid, step, kind, cutoff = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'gone' end

if step == 'delete' or step == 'restore' then
  if status ~= 'purging' then return 'not_held' end
  if step == 'restore' then
    redis.call('HSET', KEYS[1], 'status', redis.call('HGET', KEYS[1], 'purged_from'))
    redis.call('HDEL', KEYS[1], 'purged_from')
    redis.call('ZADD', KEYS[9], now_ms(), cid)
    return 'restored'
  end
  local user = redis.call('HGET', KEYS[1], 'user')
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8])
  redis.call('ZREM', key_user_conversations(user), cid)
  redis.call('ZREM', key_running(user), cid)
  for i = 9, 13 do redis.call('ZREM', KEYS[i], cid) end
  return 'deleted'
end

if status == 'purging' then
  if redis.call('HGET', KEYS[1], 'purged_from') ~= kind then return 'not_' .. kind end
  return 'held'  -- a purge that stopped half way: finish it
end
if kind == 'closed' then
  if status ~= 'closed' then return 'not_closed' end
  local closed = redis.call('ZSCORE', KEYS[12], cid)
  if not closed or tonumber(closed) > cutoff then return 'recent' end
else
  if status ~= 'idle' then return 'not_idle' end
  if redis.call('EXISTS', KEYS[2]) == 1 then return 'owned' end
  if redis.call('HLEN', KEYS[8]) > 0 then return 'watched' end
  if redis.call('ZSCORE', KEYS[9], cid) then return 'pending' end
  if redis.call('HEXISTS', KEYS[1], 'turn_from') == 1 then return 'unfinished' end
  local active = tonumber(redis.call('HGET', KEYS[1], 'active') or 0)
  local created = tonumber(redis.call('HGET', KEYS[1], 'created_at') or 0) * 1000
  if math.max(active, created) > cutoff then return 'recent' end
end
if step == 'hold' then
  redis.call('HSET', KEYS[1], 'status', 'purging', 'purged_from', kind)
end
return 'held'
