-- Claim a conversation for a worker: NX lease plus epoch bump (the fencing token),
-- in one step. A lease held by a worker whose liveness key is gone is taken over.
-- KEYS: meta, lease, epoch, owns (of the claimant)
-- ARGV: conversation_id, worker_id, alive_prefix, owns_prefix, user_prefix, limit
-- Returns {outcome, epoch, took_over}; took_over is 1 when a dead holder's lease was
-- taken over; outcome is one of
--   claimed    the lease is now ARGV[2]:epoch
--   owned      the claimant already holds it (epoch unchanged)
--   busy       a live worker holds it
--   closed     the conversation was closed; nothing may run it again
--   unknown    no such conversation
--   not_alive  the claimant's own liveness lapsed: it must not claim anything
--   over_limit its user runs `limit` conversations already
-- The holder's liveness key and the user's running set are derived from the lease
-- and the record, so they cannot be in KEYS.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'unknown', 0, 0} end
if status == 'closed' then return {'closed', 0, 0} end
if redis.call('EXISTS', ARGV[3] .. ARGV[2]) == 0 then return {'not_alive', 0, 0} end
local holder = redis.call('GET', KEYS[2])
if holder then
  local owner, epoch = string.match(holder, '^(.*):(%d+)$')
  if owner == ARGV[2] then return {'owned', tonumber(epoch), 0} end
  if redis.call('EXISTS', ARGV[3] .. owner) == 1 then return {'busy', tonumber(epoch), 0} end
  redis.call('SREM', ARGV[4] .. owner, ARGV[1])
end
if status ~= 'closing' then
  -- The per-user limit, enforced here too: a conversation runs only with a slot.
  local running = ARGV[5] .. redis.call('HGET', KEYS[1], 'user') .. ':running'
  if not redis.call('ZSCORE', running, ARGV[1]) then
    if redis.call('ZCARD', running) >= tonumber(ARGV[6]) then return {'over_limit', 0, 0} end
    local t = redis.call('TIME')
    redis.call('ZADD', running, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
  end
end
local epoch = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[2], ARGV[2] .. ':' .. epoch)
redis.call('SADD', KEYS[4], ARGV[1])
if status ~= 'closing' then redis.call('HSET', KEYS[1], 'status', 'running') end
redis.call('HSET', KEYS[1], 'owner', ARGV[2])
return {'claimed', epoch, holder and 1 or 0}
