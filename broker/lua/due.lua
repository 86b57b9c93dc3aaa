-- Timers due now, oldest first, for the reaper to fire. Each is put off by retry_ms
-- before it is returned, so one whose firing is lost (the reaper dies half way) is
-- fired again later; its owner logs it once whatever the number of firings. Timers of
-- conversations closing or gone are dropped; those of a conversation whose queue is
-- being deleted (it was passivated) wait a little. A conversation with a timer to
-- fire and no live owner is marked owed one (as admission does), so the reaper asks
-- again.
-- KEYS: due, pending
-- ARGV: limit, retry_ms
-- Returns {member, entry, needs_owner, ...} (member: '<cid> <timer_id>').
local now = now_ms()
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local fired = {}
for _, member in ipairs(members) do
  local cid, timer = string.match(member, '^(%S+) (.+)$')
  local entry = redis.call('HGET', key_timers(cid), timer)
  local status = redis.call('HGET', key_meta(cid), 'status')
  if not entry or not status or status == 'closing' or status == 'closed' then
    redis.call('ZREM', KEYS[1], member)
    if entry then redis.call('HDEL', key_timers(cid), timer) end
  elseif redis.call('EXISTS', key_deleting(cid)) == 1 then
    redis.call('ZADD', KEYS[1], now + 20, member)
  else
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), member)
    local needs_owner = 1
    local holder = redis.call('GET', key_lease(cid))
    if holder then
      needs_owner = 1 - redis.call('EXISTS', key_alive('worker', parse_lease(holder)))
    end
    if needs_owner == 1 then redis.call('ZADD', KEYS[2], now, cid) end
    table.insert(fired, member)
    table.insert(fired, entry)
    table.insert(fired, needs_owner)
  end
end
return fired
