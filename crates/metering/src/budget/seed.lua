-- Seeds a month's spend (and today's) from the database, once: only when the month's
-- generation marker is absent, and then every spend key only if it is absent (SET NX), so that
-- a relay starting beside others never overwrites live spend.
--
-- KEYS[1]   the month's generation marker; KEYS[i] (i >= 2) a spend key.
-- ARGV[1], ARGV[2]  the new generation and when the marker expires (unix ms).
-- ARGV[2i - 1], ARGV[2i]  the spend for KEYS[i] and when it expires (unix ms).
--
-- Returns {1, generation} when seeded now, {0, generation} when it had been.
local existing = redis.call('GET', KEYS[1])
if existing then
  return {0, tonumber(existing)}
end
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[2 * i - 1], 'NX', 'PXAT', ARGV[2 * i])
end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
return {1, tonumber(ARGV[1])}
