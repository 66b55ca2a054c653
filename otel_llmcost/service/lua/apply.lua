-- Apply one request's cost events atomically: stream state, dedup marks and budget spend together.
-- KEYS[1..E]: one per event (cumulative: the series' state hash; delta/span: its dedup mark),
-- KEYS[E+1..E+T]: the bucket hash of each budget target, KEYS[E+T+1..E+2T]: its scope index set.
-- ARGV[1] E, ARGV[2] T, ARGV[3] store epoch (ns, decimal text), ARGV[4] series retention (ms),
-- ARGV[5] how long a mark is kept (ms);
-- then 5 values per event: kind (1 cumulative, 2 delta, 3 span), time (ns text), value, units, start (ns text);
-- then one per event: comma-separated 1-based target indices ("" for none);
-- then 2 per target: keep_until (Unix ms), scope key.
-- Returns the units counted per event (0: baseline or no change, -1: counted before).
-- Nanosecond times exceed a Lua number's 53 bits, so they are compared as decimal text.
local function later(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local E, T = tonumber(ARGV[1]), tonumber(ARGV[2])
local epoch, retention, window = ARGV[3], ARGV[4], ARGV[5]
local spend = {}
for j = 1, T do spend[j] = 0 end
local result = {}
for i = 1, E do
  local base = 5 + (i - 1) * 5
  local kind, time, value, units, start = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3],
    tonumber(ARGV[base + 4]), ARGV[base + 5]
  local key = KEYS[i]
  local counted = 0
  if kind == '1' then
    local state = redis.call('HMGET', key, 't', 'v', 'u')
    local update = true
    if not state[1] then
      if not later(epoch, start) then counted = units end
    elseif not later(time, state[1]) then
      counted, update = -1, false
    elseif tonumber(value) < tonumber(state[2]) then
      counted = units
    else
      counted = math.max(units - tonumber(state[3]), 0)
    end
    if update then
      redis.call('HSET', key, 't', time, 'v', value, 'u', units)
    end
    redis.call('PEXPIRE', key, retention)
  else
    if redis.call('SET', key, '1', 'NX', 'PX', window) then counted = units else counted = -1 end
  end
  result[i] = counted
  if counted > 0 then
    for index in string.gmatch(ARGV[5 + 5 * E + i], '%d+') do
      local j = tonumber(index)
      spend[j] = spend[j] + counted
    end
  end
end
for j = 1, T do
  if spend[j] > 0 then
    local keep, scope = ARGV[5 + 6 * E + (j - 1) * 2 + 1], ARGV[5 + 6 * E + (j - 1) * 2 + 2]
    redis.call('HINCRBY', KEYS[E + j], 'spent', spend[j])
    redis.call('PEXPIREAT', KEYS[E + j], keep)
    redis.call('SADD', KEYS[E + T + j], scope)
    redis.call('PEXPIREAT', KEYS[E + T + j], keep)
  end
end
return result
