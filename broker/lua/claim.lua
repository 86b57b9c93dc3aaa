-- Claim a conversation for a worker: NX lease plus a new epoch (the fencing token),
-- in one step. A lease held by a worker whose liveness key is gone is taken over.
-- Epochs only grow, even if Redis lost its latest writes: a new one is at least the
-- Redis clock in ms, which is past any epoch handed out before a restart.
-- KEYS: meta, lease, epoch, owns (of the claimant), pending (conversations owed an owner),
--       idle (idle conversations: a claimed one runs)
-- ARGV: conversation_id, worker_id, limit
-- Returns {outcome, epoch, took_over, closing}; took_over is 1 when a dead holder's
-- lease was taken over, closing the reason when it is closing for good ('' if not);
-- outcome is one of
--   claimed    the lease is now worker_id:epoch
--   owned      the claimant already holds it (epoch unchanged)
--   busy       a live worker holds it
--   closed     the conversation was closed (or is being purged); nothing may run it again
--   unknown    no such conversation
--   not_alive  the claimant's own liveness lapsed: it must not claim anything
--   over_limit its user runs `limit` conversations already
-- The holder's liveness key and the user's running set are derived from the lease
-- and the record, so they cannot be in KEYS.
local cid, worker = ARGV[1], ARGV[2]
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'closed' or status == 'purging' then
  redis.call('ZREM', KEYS[5], cid)
  return {status and 'closed' or 'unknown', 0, 0, ''}
end
if redis.call('EXISTS', key_alive('worker', worker)) == 0 then return {'not_alive', 0, 0, ''} end
-- Whatever else happens, this claim request was answered: it is owed no other.
redis.call('ZREM', KEYS[5], cid)
local holder = redis.call('GET', KEYS[2])
if holder then
  local owner, epoch = parse_lease(holder)
  if owner == worker then return {'owned', epoch, 0, ''} end
  if redis.call('EXISTS', key_alive('worker', owner)) == 1 then return {'busy', epoch, 0, ''} end
  redis.call('SREM', key_owns(owner), cid)
end
if status ~= 'closing' then
  -- The per-user limit, enforced here too: a conversation runs only with a slot.
  local running = key_running(redis.call('HGET', KEYS[1], 'user'))
  if not redis.call('ZSCORE', running, cid) then
    if redis.call('ZCARD', running) >= tonumber(ARGV[3]) then return {'over_limit', 0, 0, ''} end
    redis.call('ZADD', running, now_ms(), cid)
  end
end
local epoch = math.max(tonumber(redis.call('GET', KEYS[3]) or 0) + 1, now_ms())
redis.call('SET', KEYS[3], epoch)
redis.call('SET', KEYS[2], lease_value(worker, epoch))
redis.call('SADD', KEYS[4], cid)
local closing = ''
if status == 'closing' then
  closing = redis.call('HGET', KEYS[1], 'reason') or 'closed'
else
  redis.call('HSET', KEYS[1], 'status', 'running')
  redis.call('ZREM', KEYS[6], cid)
end
redis.call('HSET', KEYS[1], 'owner', worker)
return {'claimed', epoch, holder and 1 or 0, closing}
