-- Read one live entry and mark it used.
-- KEYS[1] entry hash, KEYS[2] LRU sorted set; ARGV[1] now (our clock), ARGV[2] "1" when bounded
-- Returns {value, vector or false}, or false when absent or expired (an expired one is deleted).
local r = redis.call('HMGET', KEYS[1], 'v', 'e', 'x', 'n', 'i')
if not r[1] then return false end
if tonumber(r[2]) <= tonumber(ARGV[1]) then
  if r[4] then redis.call('ZREM', r[4], r[5]) end
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], KEYS[1])
  return false
end
if ARGV[2] == '1' then redis.call('ZADD', KEYS[2], ARGV[1], KEYS[1]) end
return {r[1], r[3] or false}
