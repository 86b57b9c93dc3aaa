-- Forget a process that died (or is leaving): its deadline, liveness key and index.
-- A gateway's index counts its clients per conversation; those counts are also
-- removed from each conversation's clients hash, so passivation sees the truth.
-- KEYS: deadlines, alive, index (a worker's owns set, a gateway's conversations hash)
-- ARGV: process_id, role, leaving ('1': forget even if alive)
-- Returns how many conversations its index held, or -1 when it is alive after all.
if ARGV[3] ~= '1' and redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local held
if ARGV[2] == 'gateway' then
  local cids = redis.call('HKEYS', KEYS[3])
  for _, cid in ipairs(cids) do redis.call('HDEL', key_clients(cid), ARGV[1]) end
  held = #cids
else
  held = redis.call('SCARD', KEYS[3])
end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[1], ARGV[1])
return held
