--[[
  Token bucket: takes one token if there is one.

  Input:
    KEYS[1] the bucket (hash: tokens, at)
    ARGV[1] capacity (the largest burst)
    ARGV[2] refill rate, tokens per millisecond
    ARGV[3] now, ms (from the caller, so every process agrees with itself; skew only shifts refills)

  Output:
    0 when a token was taken, else the ms until one will be there
]]
local cap = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or cap
local at = tonumber(b[2]) or now
tokens = math.min(cap, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(cap / rate) + 1000)
return wait
