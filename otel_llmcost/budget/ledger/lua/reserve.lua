-- Hold an amount for a call in flight, atomically refusing once spent + reserved reach the limit.
-- KEYS[1] hash and KEYS[2] expiry zset of the bucket written, KEYS[3] its scope index, then
-- (hash, zset) pairs for every bucket of the window (the written one included).
-- ARGV: amount, limit (nano-USD), now (Unix ms), expires_at (Unix ms), reservation id,
-- keep_until (Unix ms), scope key.
-- A hash holds 'spent', 'reserved' (sum of live holds) and 'r:<id>' = amount per hold; the zset
-- holds id -> expiry. Expired holds are dropped here, before the check.
-- Returns {1 | 0 (refused), spent, reserved} as seen before this hold.
local limit = tonumber(ARGV[2])
local now = ARGV[3]
local spent, reserved = 0, 0
for i = 4, #KEYS, 2 do
  local h, z = KEYS[i], KEYS[i + 1]
  local expired = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  for _, id in ipairs(expired) do
    local held = redis.call('HGET', h, 'r:' .. id)
    if held then
      redis.call('HDEL', h, 'r:' .. id)
      if held ~= '0' then
        redis.call('HINCRBY', h, 'reserved', '-' .. held)
      end
    end
    redis.call('ZREM', z, id)
  end
  local v = redis.call('HMGET', h, 'spent', 'reserved')
  spent = spent + (tonumber(v[1]) or 0)
  reserved = reserved + (tonumber(v[2]) or 0)
end
local total = spent + reserved
if total >= limit then
  return {0, spent, reserved}
end
redis.call('HSET', KEYS[1], 'r:' .. ARGV[5], ARGV[1])
if ARGV[1] ~= '0' then
  redis.call('HINCRBY', KEYS[1], 'reserved', ARGV[1])
end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
redis.call('SADD', KEYS[3], ARGV[7])
redis.call('PEXPIREAT', KEYS[1], ARGV[6])
redis.call('PEXPIREAT', KEYS[2], ARGV[6])
redis.call('PEXPIREAT', KEYS[3], ARGV[6])
return {1, spent, reserved}
