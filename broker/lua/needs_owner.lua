-- Whether a conversation is open and has no live owner (so someone should claim it).
-- KEYS: meta, lease
-- ARGV: alive_prefix
-- Returns 1 when it needs an owner, 0 otherwise (owned by a live worker, closed or unknown).
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'closed' then return 0 end
local holder = redis.call('GET', KEYS[2])
if not holder then return 1 end
local owner = string.match(holder, '^(.*):%d+$')
return 1 - redis.call('EXISTS', ARGV[1] .. owner)
