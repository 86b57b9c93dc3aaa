-- Admit a conversation under its user's limit of running conversations, and mark
-- it active (which keeps it from being passivated). Used when a conversation is
-- created ('create') and before every client action and owner query ('act').
-- Every admission counts against the user's request rate first, weighted by its size.
-- An action id is admitted with one content only: its digest is kept per conversation.
-- An approval answers an open request with one of its options, and closes it: a
-- request is answered once (the same action sent again is admitted again).
-- KEYS: meta, running (the user's sorted set: conversation id -> last activity, ms),
--       user_conversations, lease, rate (the user's), log, actions (id -> digest),
--       pending (conversations owed an owner: the reaper asks again for stale ones),
--       approvals (open request id -> options as JSON), deleting (its queue is being
--       deleted, having been passivated), idle, closing (conversations by status, for
--       ops), full (refused: log at its cap)
-- ARGV: conversation_id, mode, user, limit, policy ('reject' | 'evict_oldest'),
--       rate_interval_ms, rate_burst, rate_cost, action_id ('' for none), digest,
--       max_log_events, max_log_bytes,
--       kind ('message' | 'stop' | 'approval' | 'query' | ''; a query logs nothing: no
--       log cap), on_busy (kept in the record at 'create'), request_id, choice (of an
--       approval),
--       archive_checked ('' or the meta.archived at which the action id was looked up
--       among the archived ones), archived_digest (what that found: '' for nothing),
--       field1, value1, ...  (more of the record at 'create': callback_url, outboxed)
-- Returns {outcome, needs_owner, evicted_id, retry_after_ms[, settling, archived]};
-- outcome is one of
--   ok           admitted; needs_owner is 1 when no live worker owns it, settling 1
--                when its queue is being deleted (wait until it is, then queue the input)
--   archived     the action id may be among those moved to PostgreSQL with the history
--                (when meta.archived was `archived`): look it up there, then call again
--   rate_limited the user sends too fast: retry after retry_after_ms
--   conflict     this action id was admitted before with another content
--   log_full     the conversation's log reached its cap
--   no_request   an approval of no open request (unknown, or answered already)
--   bad_choice   an approval whose choice is not one of the request's options
--   busy         a message while a turn runs, and the conversation rejects those
--   over_limit   the user runs `limit` conversations already (policy 'reject')
--   closed       closing, closed or being purged: it takes no more input
--   unknown      no such conversation
if ARGV[2] == 'act' and ARGV[9] ~= '' then
  local archived = redis.call('HGET', KEYS[1], 'archived')
  if archived and archived ~= ARGV[17] and redis.call('HEXISTS', KEYS[7], ARGV[9]) == 0 then
    return {'archived', 0, '', 0, 0, archived}
  end
end
local wait = gcra(KEYS[5], tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]))
if wait > 0 then return {'rate_limited', 0, '', wait} end
local now = now_ms()
local cid = ARGV[1]
if ARGV[2] == 'create' then
  redis.call('HSET', KEYS[1], 'user', ARGV[3], 'status', 'idle', 'created_at', now / 1000,
             'on_busy', ARGV[14], unpack(ARGV, 19))
  redis.call('ZADD', KEYS[3], now, cid)
end
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'unknown', 0, '', 0} end
if status == 'closing' or status == 'closed' or status == 'purging' then
  return {'closed', 0, '', 0}
end
local action_id = ARGV[9]
if action_id ~= '' then
  local seen = redis.call('HGET', KEYS[7], action_id)
  if not seen and ARGV[18] ~= '' then seen = ARGV[18] end
  if seen then
    if seen ~= ARGV[10] then return {'conflict', 0, '', 0} end
    action_id = ''  -- sent again: admitted again, logged and answered once (dedupe)
  end
end
if ARGV[13] == 'message' and redis.call('HGET', KEYS[1], 'on_busy') == 'reject'
   and redis.call('HEXISTS', KEYS[1], 'turn_from') == 1 then
  return {'busy', 0, '', 0}
end
local logged = tonumber(redis.call('HGET', KEYS[1], 'archived') or 0) + redis.call('LLEN', KEYS[6])
if ARGV[13] ~= 'query' and (logged >= tonumber(ARGV[11])
   or tonumber(redis.call('HGET', KEYS[1], 'log_bytes') or 0) >= tonumber(ARGV[12])) then
  redis.call('ZADD', KEYS[13], 'NX', now, cid)
  return {'log_full', 0, '', 0}
end
local answering = ARGV[13] == 'approval' and action_id ~= ''
if answering then
  local options = redis.call('HGET', KEYS[9], ARGV[15])
  if not options then return {'no_request', 0, '', 0} end
  local valid = false
  for _, option in ipairs(cjson.decode(options)) do
    if option == ARGV[16] then valid = true end
  end
  if not valid then return {'bad_choice', 0, '', 0} end
end
local evicted = ''
if not redis.call('ZSCORE', KEYS[2], cid) and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  if ARGV[5] ~= 'evict_oldest' then
    if ARGV[2] == 'create' then
      redis.call('DEL', KEYS[1])
      redis.call('ZREM', KEYS[3], cid)
    end
    return {'over_limit', 0, '', 0}
  end
  evicted = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  redis.call('ZREM', KEYS[2], evicted)
  redis.call('HSET', key_meta(evicted), 'status', 'closing',
             'reason', 'evicted: too many conversations')
  redis.call('ZADD', KEYS[8], now, evicted)
  redis.call('ZREM', KEYS[11], evicted)
  redis.call('ZADD', KEYS[12], now, evicted)
end
redis.call('ZADD', KEYS[2], now, cid)
redis.call('HSET', KEYS[1], 'active', now)
if ARGV[2] == 'create' then redis.call('ZADD', KEYS[11], now, cid) end
if action_id ~= '' then redis.call('HSET', KEYS[7], action_id, ARGV[10]) end
if answering then redis.call('HDEL', KEYS[9], ARGV[15]) end
local needs_owner = 1
local holder = redis.call('GET', KEYS[4])
if holder then
  local owner = parse_lease(holder)
  needs_owner = 1 - redis.call('EXISTS', key_alive('worker', owner))
end
if needs_owner == 1 then redis.call('ZADD', KEYS[8], now, cid) end
return {'ok', needs_owner, evicted, 0, redis.call('EXISTS', KEYS[10])}
