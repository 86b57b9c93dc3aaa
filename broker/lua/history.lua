-- Add a record to the fleet's history, stamped with the Redis clock (so the records of
-- every machine are in one order, whatever their clocks), and keep the newest.
-- KEYS: history
-- ARGV: kept, happened, role, process_id, conversations ('' for none), reason ('' for none)
-- Returns the number of records kept.
local record = {
  at = now_ms() / 1000,
  happened = ARGV[2],
  role = ARGV[3],
  process_id = ARGV[4],
  conversations = ARGV[5] == '' and cjson.null or tonumber(ARGV[5]),
  reason = ARGV[6] == '' and cjson.null or ARGV[6],
}
redis.call('LPUSH', KEYS[1], cjson.encode(record))
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[1]) - 1)
return redis.call('LLEN', KEYS[1])
