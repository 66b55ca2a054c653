-- The token buckets of keys in Redis: the Lua twin of otel_llmcost/ratelimit/bucket.py.
-- One call of this script makes a batch of decisions (one or many, for one key or many): for each,
-- every bucket of its key is checked and debited together, or none. Redis runs a script atomically,
-- so each decision is atomic too, and a key named twice in a batch sees the first decision's write.
-- A batch lets one round trip carry the calls of many callers (threads, asyncio tasks).
-- Time is the server's TIME (read once per batch), so clients whose clocks disagree still agree.
--
-- KEYS[i]            the state of the i-th call's key, one string: struct 'dddd'
--                    (t in seconds of server time, then the three levels at t; math.huge = full or
--                    no limit) followed by the signature of the limits the levels were kept under
-- ARGV[1]            P, how many plans (tiers) the batch uses
-- ARGV[2..P+1]       each plan's signature: capacity and period of requests/minute, tokens/minute,
--                    tokens/day joined by spaces (capacity -1: no such limit); sent once per batch
-- ARGV[P+2]          the calls, in KEYS order, as one string of space-separated pairs (one
--                    argument instead of two per call: a client pays per argument): the op letter
--                    ('t' take, 's' settle, 'p' peek) and the plan's index (1-based), then the
--                    amount (take: estimated tokens; settle: tokens to charge, negative: refund;
--                    peek: 0), e.g. 't1 100 s1 -20.5'
--
-- Reply: one entry per call, in order:
--   take   -> 0 when 1 request and the tokens were taken from every bucket; else the string
--             '<slot> <seconds until every bucket has room>' (slot of the limit that frees up
--             last) and nothing is written
--   settle -> 0  (a refund never fills a bucket past capacity; a charge may take it below zero)
--   peek   -> '<level0> <level1> <level2>', 'inf' where there is no limit
-- A key expires by itself once every bucket would be full again (a missing key is a full key).

if redis.replicate_commands then
  redis.replicate_commands() -- Redis < 5: writes after TIME need effects replication
end

local INF = math.huge
local TOLERANCE = 1e-9
local tonumber, sub, format = tonumber, string.sub, string.format
local min, max, ceil = math.min, math.max, math.ceil
local spack, sunpack = struct.pack, struct.unpack

-- capacities (INF: no limit) and refill rates per second from a signature
local function parse(signature)
  local v1, v2, v3, v4, v5, v6 = string.match(signature, '^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$')
  local c0, c1, c2 = tonumber(v1), tonumber(v3), tonumber(v5)
  local r0, r1, r2 = 0, 0, 0
  if c0 < 0 then c0 = INF else r0 = c0 / tonumber(v2) end
  if c1 < 0 then c1 = INF else r1 = c1 / tonumber(v4) end
  if c2 < 0 then c2 = INF else r2 = c2 / tonumber(v6) end
  return { c0, c1, c2, r0, r1, r2, signature }
end

local nplans = tonumber(ARGV[1])
local plans = {}
for p = 1, nplans do
  plans[p] = parse(ARGV[p + 1])
end
local known = {} -- signatures of stored states seen in this batch (keys kept under another tier)

local clock = redis.call('TIME')
local server_now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
-- every state read with one command (a call into Redis costs more than a decision's arithmetic);
-- a key decided twice in the batch reads what its earlier decision wrote
local values = redis.call('MGET', unpack(KEYS))
local written = {}
local replies = {}
local i = 0

for code, number in string.gmatch(ARGV[nplans + 2], '(%S+) (%S+)') do
  i = i + 1
  local key = KEYS[i]
  local amount = tonumber(number)
  local op = sub(code, 1, 1)
  local plan = plans[tonumber(sub(code, 2))]
  local c0, c1, c2, r0, r1, r2, signature = plan[1], plan[2], plan[3], plan[4], plan[5], plan[6], plan[7]
  local now = server_now
  local stored = written[key]
  if stored == nil then
    stored = values[i]
  end
  local t, l0, l1, l2 = now, INF, INF, INF
  if stored then
    t, l0, l1, l2 = sunpack('dddd', stored)
    local old = sub(stored, 33)
    if old ~= signature then
      local o = known[old]
      if not o then
        o = parse(old)
        known[old] = o
      end
      if op == 's' then
        -- a call settled after its key changed tier: applied under the key's current limits
        -- (bucket.settle), without moving the key back
        c0, c1, c2, r0, r1, r2, signature = o[1], o[2], o[3], o[4], o[5], o[6], old
      else
        -- the key changed tier (bucket.rebase): refill under the old limits, cap at the new ones;
        -- a limit the new tier does not set has no level, a limit the old one did not set starts full
        local dt = max(0, now - t)
        l0 = min(c0, min(o[1], l0 + dt * o[4]))
        l1 = min(c1, min(o[2], l1 + dt * o[5]))
        l2 = min(c2, min(o[3], l2 + dt * o[6]))
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
  l0 = min(c0, l0 + elapsed * r0)
  l1 = min(c1, l1 + elapsed * r1)
  l2 = min(c2, l2 + elapsed * r2)

  local write = true
  if op == 't' then
    local need = amount - TOLERANCE
    if l0 >= 1 - TOLERANCE and l1 >= need and l2 >= need then
      l0, l1, l2 = l0 - 1, l1 - amount, l2 - amount
      replies[i] = 0
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
      replies[i] = slot .. ' ' .. format('%.17g', wait)
      write = false
    end
  elseif op == 's' then
    l1 = min(c1, l1 - amount)
    l2 = min(c2, l2 - amount)
    replies[i] = 0
  elseif op == 'p' then
    replies[i] = format('%.17g %.17g %.17g', l0, l1, l2)
    write = false
  else
    return redis.error_reply('bucket.lua: unknown op ' .. tostring(code)) -- (never sent by our client)
  end

  if write then
    local full_in = 0
    if c0 < INF then
      full_in = (c0 - l0) / r0
    end
    if c1 < INF then
      full_in = max(full_in, (c1 - l1) / r1)
    end
    if c2 < INF then
      full_in = max(full_in, (c2 - l2) / r2)
    end
    local value = spack('dddd', now, l0, l1, l2) .. signature
    written[key] = value
    redis.call('SET', key, value, 'PX', ceil(full_in * 1000) + 1000)
  end
end
return replies
