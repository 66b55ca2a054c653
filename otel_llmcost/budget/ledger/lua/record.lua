-- Add spend without a reservation, at most once per operation id.
-- KEYS[1] hash of the bucket written, KEYS[2] scope index of that bucket, KEYS[3] the operation's
-- marker (ignored when ARGV[4] is '0'), KEYS[4..] hashes of every bucket of the window.
-- ARGV: amount (nano-USD), keep_until (Unix ms), scope key, marker lifetime (ms; '0': no operation id).
-- A marker already there means this operation was applied (its reply was lost): nothing is written.
-- Returns the window's committed spend (nano-USD).
local first = ARGV[4] == '0' or redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[4])
if first then
  if ARGV[1] ~= '0' then
    redis.call('HINCRBY', KEYS[1], 'spent', ARGV[1])
  end
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[3])
  redis.call('PEXPIREAT', KEYS[2], ARGV[2])
end
local spent = 0
for i = 4, #KEYS do
  spent = spent + (tonumber(redis.call('HGET', KEYS[i], 'spent')) or 0)
end
return spent
