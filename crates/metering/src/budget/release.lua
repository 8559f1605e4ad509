-- Releases one reservation without charging anything (the call never reached the upstream).
-- Releasing twice, or after the lease ran out, changes nothing.
--
-- KEYS[2j - 1], KEYS[2j]  account j's holds and leases.  ARGV[1]  the request id.
local id = ARGV[1]
for j = 1, #KEYS / 2 do
  local holds, leases = KEYS[2 * j - 1], KEYS[2 * j]
  local held = tonumber(redis.call('HGET', holds, 'r:' .. id))
  if held then
    redis.call('HDEL', holds, 'r:' .. id)
    -- `0 - held`, not `-held`: Lua's -0 reaches Redis as "-0", which HINCRBY refuses.
    redis.call('HINCRBY', holds, 'sum', 0 - held)
  end
  redis.call('ZREM', leases, id)
end
return 1
