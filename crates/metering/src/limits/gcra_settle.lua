-- Settles the tokens-per-minute windows of one admitted request once its answer's size is
-- known: `used` replaces the `reserved` tokens charged at admission (see `Gcra::settle`).
-- Idempotent: a settle retried after an error whose first attempt went through changes nothing.
--
-- KEYS[1]       the request's settle marker (kept ten minutes, longer than any retry).
-- KEYS[1 + i]   the hash of subject i (field "2": the TAT of its tokens per minute).
-- ARGV[1], ARGV[2]  tokens reserved, tokens used.
-- ARGV[2 + i]   subject i's tokens-per-minute limit.
--
-- Returns 1 when settled now, 0 when it had been already.
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', 600000) then
  return 0
end
local most = 2 ^ 50
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local reserved = tonumber(ARGV[1])
local used = tonumber(ARGV[2])

local function keep(key, backlog)
  local ms = math.ceil(backlog / 1000) + 1000
  if redis.call('PTTL', key) < ms then
    redis.call('PEXPIRE', key, ms)
  end
end

for i = 2, #KEYS do
  local limit = tonumber(ARGV[1 + i])
  if limit > 0 then
    local interval = math.ceil(60000000 / limit)
    local tat = tonumber(redis.call('HGET', KEYS[i], '2')) or 0
    local settled
    if used >= reserved then
      settled = math.min(math.max(tat, now) + (used - reserved) * interval, now + most)
    else
      -- What was reserved and not used is given back, never below now.
      settled = math.max(tat - (reserved - used) * interval, now)
    end
    if settled > now then
      redis.call('HSET', KEYS[i], '2', string.format('%.0f', settled))
      keep(KEYS[i], settled - now)
    elseif tat > now then
      redis.call('HDEL', KEYS[i], '2')
    end
  end
end
return 1
