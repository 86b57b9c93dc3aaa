-- Passivate an idle conversation: release its lease (compare-and-delete) and its
-- slot in the user's limit, keeping its log, unless a client is connected or it was
-- admitted input within the idle period (Redis clock; no shorter than a publish may
-- take, so no input admitted before is still on its way to the queue). Its owner then
-- deletes its queue: `deleting` (expiring after deleting_ms) makes input admitted
-- meanwhile wait until the queue is gone before it declares it again. With history
-- archiving on, the conversation is then owed a move of its log to PostgreSQL.
-- KEYS: lease, meta, owns (of the owner), clients, deleting, idle (conversations by
--       status), archive_owed
-- ARGV: lease_value, conversation_id, idle_ms, deleting_ms, archive ('1' or '')
-- Returns 'passivated', or why not: 'moved' (not our lease), 'closing', 'watched', 'active'.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'moved' end
if redis.call('HGET', KEYS[2], 'status') ~= 'running' then return 'closing' end
if redis.call('HLEN', KEYS[4]) > 0 then return 'watched' end
local active = tonumber(redis.call('HGET', KEYS[2], 'active') or 0)
if now_ms() - active < tonumber(ARGV[3]) then return 'active' end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[3], ARGV[2])
redis.call('HSET', KEYS[2], 'status', 'idle')
redis.call('ZADD', KEYS[6], now_ms(), ARGV[2])
redis.call('HDEL', KEYS[2], 'owner')
redis.call('ZREM', key_running(redis.call('HGET', KEYS[2], 'user')), ARGV[2])
redis.call('SET', KEYS[5], '1', 'PX', tonumber(ARGV[4]))
if ARGV[5] == '1' then redis.call('ZADD', KEYS[7], now_ms(), ARGV[2]) end
return 'passivated'
