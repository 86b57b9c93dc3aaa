-- Begin closing a conversation for good: no more input is admitted, it no longer
-- counts against its user's limit, and its owner logs `closed` and finishes it.
-- It is owed an owner (pending) until a worker claims it to finish it.
-- KEYS: meta, running (the user's), pending
-- ARGV: conversation_id, reason
-- Returns the status before: 'running' | 'idle' start closing; 'closing' | 'closed'
-- change nothing; false when there is no such conversation.
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'closing' or status == 'closed' then return status end
redis.call('HSET', KEYS[1], 'status', 'closing', 'reason', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], now_ms(), ARGV[1])
return status
