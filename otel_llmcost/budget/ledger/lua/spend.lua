-- Read a window's committed spend and its live (unexpired) holds, without writing.
-- KEYS: (hash, zset) pairs for every bucket of the window. ARGV[1]: now (Unix ms).
-- Returns {spent, reserved} (nano-USD).
local spent, reserved = 0, 0
for i = 1, #KEYS, 2 do
  local h, z = KEYS[i], KEYS[i + 1]
  spent = spent + (tonumber(redis.call('HGET', h, 'spent')) or 0)
  local live = redis.call('ZRANGEBYSCORE', z, '(' .. ARGV[1], '+inf')
  for _, id in ipairs(live) do
    reserved = reserved + (tonumber(redis.call('HGET', h, 'r:' .. id)) or 0)
  end
end
return {spent, reserved}
