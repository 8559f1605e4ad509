-- Renews the leases of reservations still open on this relay. A lease that ran out and was
-- released already is not brought back (ZADD XX).
--
-- KEYS[i]  a leases set; ARGV[1] the lease in ms; ARGV[1 + i] the request id in KEYS[i].
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local lease = tonumber(ARGV[1])
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', now + lease, ARGV[1 + i])
end
return #KEYS
