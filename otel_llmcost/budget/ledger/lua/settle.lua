-- Replace a hold by the actual cost (the hold may have expired already: the cost counts anyway), at
-- most once per operation id.
-- KEYS[1] hash and KEYS[2] expiry zset of the reservation's bucket, KEYS[3] its scope index, KEYS[4]
-- the operation's marker (ignored when ARGV[5] is '0'), KEYS[5..] hashes of every bucket of the
-- reservation's window.
-- ARGV: reservation id, actual (nano-USD), keep_until (Unix ms), scope key, marker lifetime (ms; '0':
-- no operation id). A marker already there means this settle was applied (its reply was lost):
-- nothing is written.
-- Returns the window's committed spend (nano-USD).
local first = ARGV[5] == '0' or redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[5])
if first then
  local held = redis.call('HGET', KEYS[1], 'r:' .. ARGV[1])
  if held then
    redis.call('HDEL', KEYS[1], 'r:' .. ARGV[1])
    if held ~= '0' then
      redis.call('HINCRBY', KEYS[1], 'reserved', '-' .. held)
    end
    redis.call('ZREM', KEYS[2], ARGV[1])
  end
  if ARGV[2] ~= '0' then
    redis.call('HINCRBY', KEYS[1], 'spent', ARGV[2])
  end
  redis.call('PEXPIREAT', KEYS[1], ARGV[3])
  redis.call('SADD', KEYS[3], ARGV[4])
  redis.call('PEXPIREAT', KEYS[3], ARGV[3])
end
local spent = 0
for i = 5, #KEYS do
  spent = spent + (tonumber(redis.call('HGET', KEYS[i], 'spent')) or 0)
end
return spent
