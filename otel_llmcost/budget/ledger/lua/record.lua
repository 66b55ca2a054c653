-- Add spend without a reservation.
-- KEYS[1] hash of the bucket written, KEYS[2] scope index of that bucket, KEYS[3..] hashes of every
-- bucket of the window. ARGV: amount (nano-USD), keep_until (Unix ms), scope key.
-- Returns the window's committed spend (nano-USD).
if ARGV[1] ~= '0' then
  redis.call('HINCRBY', KEYS[1], 'spent', ARGV[1])
end
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('PEXPIREAT', KEYS[2], ARGV[2])
local spent = 0
for i = 3, #KEYS do
  spent = spent + (tonumber(redis.call('HGET', KEYS[i], 'spent')) or 0)
end
return spent
