-- Begin closing a conversation for good: no more input is admitted, it no longer
-- counts against its user's limit, and its owner logs `closed` and finishes it.
-- It is owed an owner (pending) until a worker claims it to finish it.
-- KEYS: meta, running (the user's), pending, idle, closing (conversations by status)
-- ARGV: conversation_id, reason
-- Returns the status before: 'running' | 'idle' start closing; 'closing' | 'closed' |
-- 'purging' change nothing; false when there is no such conversation.
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'running' and status ~= 'idle' then return status end
local now = now_ms()
redis.call('HSET', KEYS[1], 'status', 'closing', 'reason', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], now, ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZADD', KEYS[5], now, ARGV[1])
return status
