-- Drop a dead worker from the indexes once its conversations were re-dispatched.
-- KEYS: deadlines, alive, owns
-- ARGV: worker_id
-- Returns 1 when forgotten, 0 when the worker is alive after all.
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[3])
return 1
