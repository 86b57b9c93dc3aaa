-- Forget a process that died (or is leaving): its deadline, liveness key and index.
-- A gateway's index counts its clients per conversation ('c:' fields) and per user
-- ('u:'); those counts are also removed from each conversation's clients hash and each
-- user's connections hash, so passivation and the connection limit see the truth.
-- A worker's conversations are owed an owner (pending) until one claims them, so the
-- reaper asks again if the claim request it sent for one is lost.
-- KEYS: deadlines, alive, index (a worker's owns set, a gateway's index hash; for a
--       reaper, which holds nothing, its alive key again), pending
-- ARGV: process_id, role, leaving ('1': forget even if alive)
-- Returns how many conversations its index held, or -1 when it is alive after all.
if ARGV[3] ~= '1' and redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local held = 0
if ARGV[2] == 'gateway' then
  for _, field in ipairs(redis.call('HKEYS', KEYS[3])) do
    local kind, id = string.sub(field, 1, 1), string.sub(field, 3)
    if kind == 'c' then
      redis.call('HDEL', key_clients(id), ARGV[1])
      held = held + 1
    else
      redis.call('HDEL', key_connections(id), ARGV[1])
    end
  end
elseif ARGV[2] == 'worker' then
  local now = now_ms()
  for _, cid in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    redis.call('ZADD', KEYS[4], 'NX', now, cid)
    held = held + 1
  end
end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[1], ARGV[1])
return held
