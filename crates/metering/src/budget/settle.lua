-- Settles one call: releases what it holds and adds its cost to the spend of each of its
-- accounts, reporting the alert thresholds (80 %, 100 %) this crossed, each once per account
-- across every relay (a SET NX flag). Idempotent: settling the same request again changes
-- nothing.
--
-- KEYS[1]   the generation marker of the call's month; KEYS[2] the call's settle marker.
-- For account j, KEYS[5j - 2] .. KEYS[5j + 2]: its spend, holds, leases, and its 80 % and
--           100 % alert flags.
-- ARGV[1]   the request id; ARGV[2] the generation it was reserved under (0: unknown);
-- ARGV[3]   its cost; ARGV[4] how long the settle marker is kept (ms).
-- ARGV[2j + 3], ARGV[2j + 4]  account j's budget (-1: none) and when its keys expire (unix ms).
--
-- Returns {-1} when the month is not seeded; {0} when already settled; otherwise {1, counted,
-- then j, percent, spent for each crossing}. `counted` is 0 when the generation changed since
-- the reservation: Redis lost its data and the spend was seeded again from the database, which
-- is where this call's cost is counted.
local generation = redis.call('GET', KEYS[1])
if not generation then
  return {-1}
end
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[4]) then
  return {0}
end
local id = ARGV[1]
local counted = 0
if tonumber(generation) == tonumber(ARGV[2]) then
  counted = 1
end
local actual = tonumber(ARGV[3])
local percents = {80, 100}
local result = {1, counted}
local accounts = (#KEYS - 2) / 5
for j = 1, accounts do
  local spent_key, holds, leases = KEYS[5 * j - 2], KEYS[5 * j - 1], KEYS[5 * j]
  local budget, expire_at = tonumber(ARGV[2 * j + 3]), ARGV[2 * j + 4]
  local held = tonumber(redis.call('HGET', holds, 'r:' .. id))
  if held then
    redis.call('HDEL', holds, 'r:' .. id)
    redis.call('HINCRBY', holds, 'sum', -held)
  end
  redis.call('ZREM', leases, id)
  if counted == 1 then
    local before = tonumber(redis.call('GET', spent_key)) or 0
    local after = redis.call('INCRBY', spent_key, ARGV[3])
    redis.call('PEXPIREAT', spent_key, expire_at)
    if budget >= 0 then
      for k = 1, 2 do
        local share = budget * percents[k]
        if before * 100 < share and after * 100 >= share then
          if redis.call('SET', KEYS[5 * j + k], '1', 'NX', 'PXAT', expire_at) then
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
