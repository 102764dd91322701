--[[
  The send limits as two token buckets, taken together or not at all: a business number's throughput and a
  burst limit per pair (one conversation, or a group). Both keys share the number's hash tag. A bucket is a
  string "tokens:at" that expires once it would be full again.

  Input:
    KEYS[1] the number's throughput bucket
    KEYS[2] the pair's bucket
    ARGV[1] throughput capacity (the largest burst)   ARGV[2] its refill, tokens per ms
    ARGV[3] pair capacity                             ARGV[4] its refill, tokens per ms
    ARGV[5] now, ms (from the caller, so every process agrees with itself; skew only shifts refills)

  Output:
    { 0, 0 } when a token was taken from each; { 1, ms } when the throughput refused (ms until a token),
    { 2, ms } when the pair did (nothing is taken from either then)
]]
local now = tonumber(ARGV[5])
local raw = redis.call('MGET', KEYS[1], KEYS[2])
local function level(v, cap, rate)
  if not v then return cap end
  local sep = string.find(v, ':', 1, true)
  local tokens, at = tonumber(string.sub(v, 1, sep - 1)), tonumber(string.sub(v, sep + 1))
  return math.min(cap, tokens + math.max(0, now - at) * rate)
end
local tpCap, tpRate, pairCap, pairRate = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local tp = level(raw[1], tpCap, tpRate)
if tp < 1 then return { 1, math.ceil((1 - tp) / tpRate) } end
local pair = level(raw[2], pairCap, pairRate)
if pair < 1 then return { 2, math.ceil((1 - pair) / pairRate) } end
redis.call('SET', KEYS[1], tostring(tp - 1) .. ':' .. ARGV[5], 'PX', math.ceil(tpCap / tpRate) + 1000)
redis.call('SET', KEYS[2], tostring(pair - 1) .. ':' .. ARGV[5], 'PX', math.ceil(pairCap / pairRate) + 1000)
return { 0, 0 }
