-- Renew a process's liveness key and its deadline in the index the reaper sweeps.
-- A lapsed key is never renewed: that incarnation is dead to the fleet.
-- KEYS: alive, deadlines, drain (set by an operator: this process should drain)
-- ARGV: process_id, ttl_ms, register ('1' creates the key), info (the key's value
--       when registering: the process's ProcessInfo, for ops)
-- Returns 0 when the key had lapsed, 1 when alive, 2 when alive and asked to drain.
if ARGV[3] == '1' then
  redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[2])
elseif redis.call('PEXPIRE', KEYS[1], ARGV[2]) == 0 then
  return 0
end
redis.call('ZADD', KEYS[2], now_ms() + tonumber(ARGV[2]), ARGV[1])
if redis.call('EXISTS', KEYS[3]) == 1 then return 2 end
return 1
