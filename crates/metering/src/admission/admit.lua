-- Admits one request, all or nothing, in one round trip: one request (and its reserved tokens)
-- against the rate limits of every subject it counts against (GCRA on the Redis server's clock,
-- the arithmetic of `limits/gcra.rs`), and its worst-case cost against every budget it falls
-- under, with a lease. Either every budget and every limit has room and all are charged, or
-- nothing is: a rate limit that refuses reserves no budget, a budget that refuses consumes no
-- rate-limit token. (Leases that ran out are released on the way either way: their relays are
-- gone.) Budgets are checked first. Either part may be empty: the limiter alone passes no
-- account, the ledger alone no subject.
--
-- ARGV[1] n, the number of subjects; ARGV[2] m, the number of accounts (a payer in a period);
-- ARGV[3] the tokens reserved for the tokens-per-minute windows; ARGV[4] the reservation id;
-- ARGV[5] the amount reserved (micro-dollars); ARGV[6] the lease (ms).
-- Subject i (1..n): KEYS[i], a hash of three TATs in microseconds (fields "0", "1", "2": requests
--   per minute, per day, tokens per minute); ARGV[6 + 3 (i - 1) + w] its limit in window w
--   (-1: none).
-- When m > 0: KEYS[n + 1], the month's generation marker (absent when the month's spend was
--   never seeded, or Redis lost its data: then nothing is done). Account j (1..m):
--   KEYS[n + 3j - 1], KEYS[n + 3j], KEYS[n + 3j + 1], its spend (a string), holds (a hash:
--   "r:<reservation id>" -> amount, "sum" -> their total) and leases (a sorted set: reservation
--   id -> lease end, ms); ARGV[6 + 3n + 2j - 1], ARGV[6 + 3n + 2j], its budget (-1: none) and
--   when its keys expire (unix ms).
--
-- Returns {-1} when the month is not seeded; {0, j, spent, reserved} when account j's budget has
-- no room; {1, now, TATs} when a rate limit refuses (the TATs before the request); {2, now,
-- generation, leases expired, TATs} when admitted (the TATs after it). `now` is in microseconds;
-- the TATs are every subject's three windows in order.
local n, m = tonumber(ARGV[1]), tonumber(ARGV[2])
local tokens, id = tonumber(ARGV[3]), ARGV[4]
local amount, lease = tonumber(ARGV[5]), tonumber(ARGV[6])

local generation = 0
if m > 0 then
  local marker = redis.call('GET', KEYS[n + 1])
  if not marker then
    return {-1}
  end
  generation = tonumber(marker)
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local now_ms = math.floor(now / 1000)

local function account(j)
  local first = n + 3 * j - 1
  return KEYS[first], KEYS[first + 1], KEYS[first + 2]
end
local function budget_of(j)
  local at = 6 + 3 * n + 2 * j
  return tonumber(ARGV[at - 1]), ARGV[at]
end

-- Budgets: release what ran out, then check every account.
local expired = 0
for j = 1, m do
  local _, holds, leases = account(j)
  local gone = redis.call('ZRANGEBYSCORE', leases, '-inf', now_ms)
  for _, other in ipairs(gone) do
    local held = tonumber(redis.call('HGET', holds, 'r:' .. other))
    if held then
      redis.call('HDEL', holds, 'r:' .. other)
      -- `0 - held`, not `-held`: Lua's -0 reaches Redis as "-0", which HINCRBY refuses.
      redis.call('HINCRBY', holds, 'sum', 0 - held)
    end
  end
  if #gone > 0 then
    redis.call('ZREMRANGEBYSCORE', leases, '-inf', now_ms)
    expired = expired + #gone
  end
end
for j = 1, m do
  local budget = budget_of(j)
  if budget >= 0 then
    local spent_key, holds = account(j)
    local spent = tonumber(redis.call('GET', spent_key)) or 0
    local reserved = tonumber(redis.call('HGET', holds, 'sum')) or 0
    if spent >= budget or spent + reserved + amount > budget then
      return {0, j, spent, reserved}
    end
  end
end

-- Rate limits: T = ceil(P / N), capacity N * T, admitted when max(TAT - now, 0) + T <= N * T.
local periods = {60000000, 86400000000, 60000000}
-- A backlog is capped (35 years) so that TATs stay exact in Lua's doubles.
local most = 2 ^ 50
local tats = {}
local admitted = true
for i = 1, n do
  local stored = redis.call('HMGET', KEYS[i], '0', '1', '2')
  for w = 1, 3 do
    local slot = (i - 1) * 3 + w
    local limit = tonumber(ARGV[6 + slot])
    local tat = tonumber(stored[w]) or 0
    tats[slot] = tat
    if limit == 0 then
      admitted = false
    elseif limit > 0 then
      local interval = math.ceil(periods[w] / limit)
      if math.max(tat - now, 0) + interval > interval * limit then
        admitted = false
      end
    end
  end
end
if not admitted then
  return {1, now, unpack(tats)}
end

-- Everything has room: charge the limits, then hold the budgets.
for i = 1, n do
  local longest = 0
  for w = 1, 3 do
    local slot = (i - 1) * 3 + w
    local limit = tonumber(ARGV[6 + slot])
    local units = 1
    if w == 3 then
      units = tokens
    end
    if limit > 0 and units > 0 then
      local interval = math.ceil(periods[w] / limit)
      local tat = math.min(math.max(tats[slot], now) + units * interval, now + most)
      tats[slot] = tat
      redis.call('HSET', KEYS[i], tostring(w - 1), string.format('%.0f', tat))
    end
    longest = math.max(longest, tats[slot] - now)
  end
  -- A key lives as long as its longest backlog (and at least as long as it already would).
  if longest > 0 then
    local ms = math.ceil(longest / 1000) + 1000
    if redis.call('PTTL', KEYS[i]) < ms then
      redis.call('PEXPIRE', KEYS[i], ms)
    end
  end
end
for j = 1, m do
  local _, holds, leases = account(j)
  local _, expire_at = budget_of(j)
  if not redis.call('HGET', holds, 'r:' .. id) then
    redis.call('HSET', holds, 'r:' .. id, ARGV[5])
    redis.call('HINCRBY', holds, 'sum', ARGV[5])
  end
  redis.call('ZADD', leases, now_ms + lease, id)
  redis.call('PEXPIREAT', holds, expire_at)
  redis.call('PEXPIREAT', leases, expire_at)
end
return {2, now, generation, expired, unpack(tats)}
