-- Store one entry and keep the size bound, atomically.
-- KEYS[1] entry hash, KEYS[2] LRU sorted set (member: entry key, score: last access),
-- KEYS[3] sequence counter, KEYS[4] namespace sorted set (member: entry id, score: seq) or "" (plain entry)
-- ARGV[1] value, ARGV[2] expires_at (our clock, seconds), ARGV[3] Redis TTL in ms (0: none),
-- ARGV[4] now (our clock), ARGV[5] max entries (0: no bound), ARGV[6] vector, ARGV[7] entry id
local old = redis.call('HMGET', KEYS[1], 'n', 'i')
if old[1] then redis.call('ZREM', old[1], old[2]) end
redis.call('DEL', KEYS[1])
if KEYS[4] ~= '' then
  local seq = redis.call('INCR', KEYS[3])
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 'e', ARGV[2], 'x', ARGV[6], 'n', KEYS[4], 'i', ARGV[7])
  redis.call('ZADD', KEYS[4], seq, ARGV[7])
else
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 'e', ARGV[2])
end
local ttl = tonumber(ARGV[3])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
local max = tonumber(ARGV[5])
if max > 0 then
  redis.call('ZADD', KEYS[2], ARGV[4], KEYS[1])
  local excess = redis.call('ZCARD', KEYS[2]) - max
  while excess > 0 do
    local popped = redis.call('ZPOPMIN', KEYS[2], 1)
    if #popped == 0 then break end
    local victim = popped[1]
    local meta = redis.call('HMGET', victim, 'n', 'i')
    if meta[1] then redis.call('ZREM', meta[1], meta[2]) end
    redis.call('DEL', victim)
    excess = excess - 1
  end
end
return 1
