-- GCRA admission of one request against every subject it counts against, all or nothing, on
-- the Redis server's clock. Times are microseconds since the Unix epoch; the arithmetic is that
-- of `gcra.rs` (T = ceil(P / N), capacity N * T, admitted when max(TAT - now, 0) + T <= N * T).
--
-- KEYS[i]   the hash of subject i: fields "0", "1" and "2" hold the TATs of its requests per
--           minute, requests per day and tokens per minute.
-- ARGV[1]   tokens reserved for the tokens-per-minute windows.
-- ARGV[1 + 3 * (i - 1) + w]  subject i's limit in window w (1 rpm, 2 rpd, 3 tpm); -1: none.
--
-- Returns {admitted (1 or 0), now, the TAT of every subject's three windows in that order}:
-- the TATs before the request when it is refused (nothing was charged), after it when admitted.
local periods = {60000000, 86400000000, 60000000}
-- A backlog is capped (35 years) so that TATs stay exact in Lua's doubles.
local most = 2 ^ 50
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local reserved = tonumber(ARGV[1])

-- A key lives as long as its longest backlog (and at least as long as it already would).
local function keep(key, backlog)
  local ms = math.ceil(backlog / 1000) + 1000
  if redis.call('PTTL', key) < ms then
    redis.call('PEXPIRE', key, ms)
  end
end

local tats = {}
local admitted = 1
for i = 1, #KEYS do
  local stored = redis.call('HMGET', KEYS[i], '0', '1', '2')
  for w = 1, 3 do
    local slot = (i - 1) * 3 + w
    local limit = tonumber(ARGV[1 + slot])
    local tat = tonumber(stored[w]) or 0
    tats[slot] = tat
    if limit == 0 then
      admitted = 0
    elseif limit > 0 then
      local interval = math.ceil(periods[w] / limit)
      if math.max(tat - now, 0) + interval > interval * limit then
        admitted = 0
      end
    end
  end
end

if admitted == 1 then
  for i = 1, #KEYS do
    local longest = 0
    for w = 1, 3 do
      local slot = (i - 1) * 3 + w
      local limit = tonumber(ARGV[1 + slot])
      local units = 1
      if w == 3 then
        units = reserved
      end
      if limit > 0 and units > 0 then
        local interval = math.ceil(periods[w] / limit)
        local tat = math.min(math.max(tats[slot], now) + units * interval, now + most)
        tats[slot] = tat
        redis.call('HSET', KEYS[i], tostring(w - 1), string.format('%.0f', tat))
      end
      longest = math.max(longest, tats[slot] - now)
    end
    if longest > 0 then
      keep(KEYS[i], longest)
    end
  end
end

return {admitted, now, unpack(tats)}
