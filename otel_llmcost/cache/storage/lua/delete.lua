-- Delete one entry. KEYS[1] entry hash, KEYS[2] LRU sorted set. Returns 1 when there was one.
local meta = redis.call('HMGET', KEYS[1], 'n', 'i')
if meta[1] then redis.call('ZREM', meta[1], meta[2]) end
redis.call('ZREM', KEYS[2], KEYS[1])
return redis.call('DEL', KEYS[1])
