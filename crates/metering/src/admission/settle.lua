-- Settles one admitted request, in one round trip: its tokens-per-minute windows (`used` replaces
-- the `reserved` tokens charged at admission, see `Gcra::settle`) and its budgets (what it holds
-- is released and its cost added to the spend of each account, reporting the alert thresholds,
-- 80 % and 100 %, this crossed, each once per account across every relay: a SET NX flag).
-- Idempotent per reservation: a settle retried after an error whose first attempt went through,
-- on this relay or another, changes nothing. Either part may be empty.
--
-- ARGV[1] n, the number of subjects with a tokens-per-minute limit; ARGV[2] m, the number of
-- accounts; ARGV[3], ARGV[4] the tokens reserved and used; ARGV[5] the reservation id; ARGV[6]
-- the generation it was admitted under (0: unknown); ARGV[7] its cost; ARGV[8] how long the
-- settle marker is kept (ms).
-- KEYS[1] the reservation's settle marker.
-- Subject i (1..n): KEYS[1 + i], its hash (field "2": the TAT of its tokens per minute, in
--   microseconds); ARGV[8 + i] its tokens-per-minute limit.
-- When m > 0: KEYS[n + 2], the generation marker of the reservation's month. Account j (1..m):
--   KEYS[n + 5j - 2] .. KEYS[n + 5j + 2], its spend, holds, leases, and its 80 % and 100 % alert
--   flags; ARGV[8 + n + 2j - 1], ARGV[8 + n + 2j] its budget (-1: none) and when its keys expire
--   (unix ms).
--
-- Returns {-1} when the month is not seeded (nothing is done); {0} when already settled;
-- otherwise {1, counted, then j, percent, spent for each crossing}. `counted` is 0 when the
-- generation changed since the admission: Redis lost its data and the spend was seeded again from
-- the database, which is where this request's cost is counted.
local n, m = tonumber(ARGV[1]), tonumber(ARGV[2])
local generation = nil
if m > 0 then
  generation = redis.call('GET', KEYS[n + 2])
  if not generation then
    return {-1}
  end
end
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[8]) then
  return {0}
end
local reserved, used, id = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]

-- Tokens: what was reserved and not used is given back, never below now.
if n > 0 then
  local most = 2 ^ 50
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
  for i = 1, n do
    local key, limit = KEYS[1 + i], tonumber(ARGV[8 + i])
    if limit > 0 then
      local interval = math.ceil(60000000 / limit)
      local tat = tonumber(redis.call('HGET', key, '2')) or 0
      local settled
      if used >= reserved then
        settled = math.min(math.max(tat, now) + (used - reserved) * interval, now + most)
      else
        settled = math.max(tat - (reserved - used) * interval, now)
      end
      if settled > now then
        redis.call('HSET', key, '2', string.format('%.0f', settled))
        local ms = math.ceil((settled - now) / 1000) + 1000
        if redis.call('PTTL', key) < ms then
          redis.call('PEXPIRE', key, ms)
        end
      elseif tat > now then
        redis.call('HDEL', key, '2')
      end
    end
  end
end

-- Budgets.
local counted = 0
if m > 0 and tonumber(generation) == tonumber(ARGV[6]) then
  counted = 1
end
local percents = {80, 100}
local result = {1, counted}
for j = 1, m do
  local first = n + 5 * j - 2
  local spent_key, holds, leases = KEYS[first], KEYS[first + 1], KEYS[first + 2]
  local at = 8 + n + 2 * j
  local budget, expire_at = tonumber(ARGV[at - 1]), ARGV[at]
  local held = tonumber(redis.call('HGET', holds, 'r:' .. id))
  if held then
    redis.call('HDEL', holds, 'r:' .. id)
    -- `0 - held`, not `-held`: Lua's -0 reaches Redis as "-0", which HINCRBY refuses.
    redis.call('HINCRBY', holds, 'sum', 0 - held)
  end
  redis.call('ZREM', leases, id)
  if counted == 1 then
    local before = tonumber(redis.call('GET', spent_key)) or 0
    local after = redis.call('INCRBY', spent_key, ARGV[7])
    redis.call('PEXPIREAT', spent_key, expire_at)
    if budget >= 0 then
      for k = 1, 2 do
        local share = budget * percents[k]
        if before * 100 < share and after * 100 >= share then
          if redis.call('SET', KEYS[first + 2 + k], '1', 'NX', 'PXAT', expire_at) then
            table.insert(result, j)
            table.insert(result, percents[k])
            table.insert(result, after)
          end
        end
      end
    end
  end
end
return result
