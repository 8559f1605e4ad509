-- Reserves one call's worst case against every budget it falls under, all or nothing, with a
-- lease: a reservation whose lease runs out (its relay vanished without settling) is released
-- by the next reservation against the same account. Times are the Redis server's, in ms.
--
-- KEYS[1]   the month's generation marker: absent when the month's spend was never seeded
--           (or Redis lost its data), in which case nothing is done.
-- For account j (a payer in a period), KEYS[3j - 1], KEYS[3j], KEYS[3j + 1]: its spend (a
--           string), its holds (a hash: "r:<request id>" -> amount, "sum" -> their total) and
--           its leases (a sorted set: request id -> lease end).
-- ARGV[1]   the request id; ARGV[2] the amount; ARGV[3] the lease in ms.
-- ARGV[2j + 2], ARGV[2j + 3]  account j's budget (-1: none) and when its keys expire (unix ms).
--
-- Returns {1, generation, leases expired} when reserved, {0, j, spent, reserved} when account
-- j's budget has no room, {-1} when the month is not seeded.
local generation = redis.call('GET', KEYS[1])
if not generation then
  return {-1}
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local id = ARGV[1]
local amount = tonumber(ARGV[2])
local lease = tonumber(ARGV[3])
local accounts = (#KEYS - 1) / 3

local expired = 0
for j = 1, accounts do
  local holds, leases = KEYS[3 * j], KEYS[3 * j + 1]
  local gone = redis.call('ZRANGEBYSCORE', leases, '-inf', now)
  for _, other in ipairs(gone) do
    local held = tonumber(redis.call('HGET', holds, 'r:' .. other))
    if held then
      redis.call('HDEL', holds, 'r:' .. other)
      redis.call('HINCRBY', holds, 'sum', -held)
    end
  end
  if #gone > 0 then
    redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
    expired = expired + #gone
  end
end

for j = 1, accounts do
  local budget = tonumber(ARGV[2 * j + 2])
  if budget >= 0 then
    local spent = tonumber(redis.call('GET', KEYS[3 * j - 1])) or 0
    local reserved = tonumber(redis.call('HGET', KEYS[3 * j], 'sum')) or 0
    if spent >= budget or spent + reserved + amount > budget then
      return {0, j, spent, reserved}
    end
  end
end

for j = 1, accounts do
  local holds, leases, expire_at = KEYS[3 * j], KEYS[3 * j + 1], ARGV[2 * j + 3]
  if not redis.call('HGET', holds, 'r:' .. id) then
    redis.call('HSET', holds, 'r:' .. id, ARGV[2])
    redis.call('HINCRBY', holds, 'sum', ARGV[2])
  end
  redis.call('ZADD', leases, now + lease, id)
  redis.call('PEXPIREAT', holds, expire_at)
  redis.call('PEXPIREAT', leases, expire_at)
end
return {1, tonumber(generation), expired}
