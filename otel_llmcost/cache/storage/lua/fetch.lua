-- Vectors of one namespace added after a cursor, one page.
-- KEYS[1] namespace sorted set, KEYS[2] epoch; ARGV[1] cursor (exclusive), ARGV[2] now, ARGV[3] page size,
-- ARGV[4] entry key prefix (entry key = prefix .. id), ARGV[5] a new epoch id, used if there is none
-- Returns {last seq scanned, epoch, id1, vector1, id2, vector2, ...}; ids whose entry is gone are dropped.
redis.call('SET', KEYS[2], ARGV[5], 'NX')
local epoch = redis.call('GET', KEYS[2])
local rows = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
local out = {ARGV[1], epoch}
local now = tonumber(ARGV[2])
for i = 1, #rows, 2 do
  local id = rows[i]
  out[1] = rows[i + 1]
  local r = redis.call('HMGET', ARGV[4] .. id, 'x', 'e')
  if not r[1] then
    redis.call('ZREM', KEYS[1], id)
  elseif tonumber(r[2]) > now then
    out[#out + 1] = id
    out[#out + 1] = r[1]
  end
end
return out
