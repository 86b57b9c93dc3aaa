-- Count one request against its user's rate limit (see gcra in the prelude).
-- KEYS: rate (the user's)
-- ARGV: interval_ms, burst
-- Returns 0 when allowed, else the milliseconds until a request would be.
return gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), 1)
