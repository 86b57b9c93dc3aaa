-- Reaper leadership: one active reaper at a time, held by a short-TTL key.
-- KEYS: leader
-- ARGV: reaper_id, ttl_ms, mode ('hold' renews or takes it; 'release' gives it up)
-- Returns 1 when ARGV[1] leads after the call, 0 otherwise.
local holder = redis.call('GET', KEYS[1])
if ARGV[3] == 'release' then
  if holder == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return 0
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
