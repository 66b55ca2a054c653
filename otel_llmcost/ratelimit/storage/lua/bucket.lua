-- The token buckets of one key in Redis: the Lua twin of otel_llmcost/ratelimit/bucket.py.
-- One call of this script is one decision: every bucket is checked and debited together, or none.
-- Time is the server's TIME, so clients whose clocks disagree still agree on every bucket.
--
-- KEYS[1]     the key's state, one string: struct 'dddd' (t = last update in seconds of server
--             time, then the three levels at t; math.huge = full or no limit) followed by the
--             signature of the limits the levels were kept under (to rebase a key whose tier changed)
-- ARGV[1]     'take' | 'settle' | 'peek'
-- ARGV[2]     take: estimated tokens; settle: tokens to charge (negative: refund); peek: unused
-- ARGV[3]     the signature of the tier's limits: ARGV[4..9] joined by spaces
-- ARGV[4..9]  capacity and period (seconds) of requests/minute, tokens/minute, tokens/day;
--             capacity -1: the tier sets no such limit
--
-- take   -> {} when 1 request and the tokens were taken from every bucket; else
--           {slot, seconds until every bucket has room} (slot of the limit that frees up last)
--           and nothing is written
-- settle -> {}   (a refund never fills a bucket past capacity; a charge may take it below zero)
-- peek   -> {level0, level1, level2} as strings, 'inf' where there is no limit
--
-- The key expires by itself once every bucket would be full again (a missing key is a full key).

if redis.replicate_commands then
  redis.replicate_commands() -- Redis < 5: writes after TIME need effects replication
end

local INF = math.huge
local TOLERANCE = 1e-9
local key, op, amount, signature = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3]

-- capacities (INF: no limit) and refill rates per second from capacity/period strings
local function limits(v1, v2, v3, v4, v5, v6)
  local c0, c1, c2 = tonumber(v1), tonumber(v3), tonumber(v5)
  local r0, r1, r2 = 0, 0, 0
  if c0 < 0 then c0 = INF else r0 = c0 / tonumber(v2) end
  if c1 < 0 then c1 = INF else r1 = c1 / tonumber(v4) end
  if c2 < 0 then c2 = INF else r2 = c2 / tonumber(v6) end
  return c0, c1, c2, r0, r1, r2
end

local c0, c1, c2, r0, r1, r2 = limits(ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9])

local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local stored = redis.call('GET', key)
local t, l0, l1, l2 = now, INF, INF, INF
if stored then
  t, l0, l1, l2 = struct.unpack('dddd', stored)
  local old = string.sub(stored, 33)
  if old ~= signature then
    local v = {}
    for value in string.gmatch(old, '%S+') do
      v[#v + 1] = value
    end
    local o0, o1, o2, q0, q1, q2 = limits(v[1], v[2], v[3], v[4], v[5], v[6])
    if op == 'settle' then
      -- a call settled after its key changed tier: applied under the key's current limits
      -- (bucket.settle), without moving the key back
      c0, c1, c2, r0, r1, r2, signature = o0, o1, o2, q0, q1, q2, old
    else
      -- the key changed tier (bucket.rebase): refill under the old limits, cap at the new ones;
      -- a limit the new tier does not set has no level, a limit the old one did not set starts full
      local dt = math.max(0, now - t)
      l0 = math.min(c0, math.min(o0, l0 + dt * q0))
      l1 = math.min(c1, math.min(o1, l1 + dt * q1))
      l2 = math.min(c2, math.min(o2, l2 + dt * q2))
      if c0 == INF then l0 = INF end
      if c1 == INF then l1 = INF end
      if c2 == INF then l2 = INF end
      if now > t then t = now end
    end
  end
end

local elapsed = now - t
if elapsed < 0 then -- time never moves back for a bucket
  elapsed = 0
  now = t
end
l0 = math.min(c0, l0 + elapsed * r0)
l1 = math.min(c1, l1 + elapsed * r1)
l2 = math.min(c2, l2 + elapsed * r2)

if op == 'take' then
  local need = amount - TOLERANCE
  if l0 >= 1 - TOLERANCE and l1 >= need and l2 >= need then
    l0, l1, l2 = l0 - 1, l1 - amount, l2 - amount
  else
    local slot, wait = 0, 0
    if l0 < 1 - TOLERANCE and (1 - l0) / r0 > wait then
      slot, wait = 0, (1 - l0) / r0
    end
    if l1 < need and (amount - l1) / r1 > wait then
      slot, wait = 1, (amount - l1) / r1
    end
    if l2 < need and (amount - l2) / r2 > wait then
      slot, wait = 2, (amount - l2) / r2
    end
    return { slot, string.format('%.17g', wait) }
  end
elseif op == 'settle' then
  l1 = math.min(c1, l1 - amount)
  l2 = math.min(c2, l2 - amount)
elseif op == 'peek' then
  return { string.format('%.17g', l0), string.format('%.17g', l1), string.format('%.17g', l2) }
else
  return redis.error_reply('bucket.lua: unknown op ' .. tostring(op))
end

local full_in = 0
if c0 < INF then
  full_in = (c0 - l0) / r0
end
if c1 < INF then
  full_in = math.max(full_in, (c1 - l1) / r1)
end
if c2 < INF then
  full_in = math.max(full_in, (c2 - l2) / r2)
end
redis.call('SET', key, struct.pack('dddd', now, l0, l1, l2) .. signature, 'PX', math.ceil(full_in * 1000) + 1000)
return {}
