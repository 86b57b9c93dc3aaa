-- Claim a conversation for a worker: NX lease plus epoch bump (the fencing token),
-- in one step. A lease held by a worker whose liveness key is gone is taken over.
-- KEYS: meta, lease, epoch, owns (of the claimant)
-- ARGV: conversation_id, worker_id, limit
-- Returns {outcome, epoch, took_over}; took_over is 1 when a dead holder's lease was
-- taken over; outcome is one of
--   claimed    the lease is now worker_id:epoch
--   owned      the claimant already holds it (epoch unchanged)
--   busy       a live worker holds it
--   closed     the conversation was closed; nothing may run it again
--   unknown    no such conversation
--   not_alive  the claimant's own liveness lapsed: it must not claim anything
--   over_limit its user runs `limit` conversations already
-- The holder's liveness key and the user's running set are derived from the lease
-- and the record, so they cannot be in KEYS.
local cid, worker = ARGV[1], ARGV[2]
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'unknown', 0, 0} end
if status == 'closed' then return {'closed', 0, 0} end
if redis.call('EXISTS', key_alive('worker', worker)) == 0 then return {'not_alive', 0, 0} end
local holder = redis.call('GET', KEYS[2])
if holder then
  local owner, epoch = parse_lease(holder)
  if owner == worker then return {'owned', epoch, 0} end
  if redis.call('EXISTS', key_alive('worker', owner)) == 1 then return {'busy', epoch, 0} end
  redis.call('SREM', key_owns(owner), cid)
end
if status ~= 'closing' then
  -- The per-user limit, enforced here too: a conversation runs only with a slot.
  local running = key_running(redis.call('HGET', KEYS[1], 'user'))
  if not redis.call('ZSCORE', running, cid) then
    if redis.call('ZCARD', running) >= tonumber(ARGV[3]) then return {'over_limit', 0, 0} end
    redis.call('ZADD', running, now_ms(), cid)
  end
end
local epoch = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[2], lease_value(worker, epoch))
redis.call('SADD', KEYS[4], cid)
if status ~= 'closing' then redis.call('HSET', KEYS[1], 'status', 'running') end
redis.call('HSET', KEYS[1], 'owner', worker)
return {'claimed', epoch, holder and 1 or 0}
