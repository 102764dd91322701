--[[
  Ends a drain's claim on a conversation: 'done' drops the claim; 'again' drops it and makes the
  conversation ready again (events arrived meanwhile); 'retry' keeps the claim but lets it lapse at ARGV[3]
  (the drain failed or another process held the lease: the claim goes back to the ready set then).

  Input:
    KEYS[1] the shard's ready set
    KEYS[2] the shard's claimed set
    ARGV[1] the conversation id
    ARGV[2] 'done' | 'again' | 'retry'
    ARGV[3] for 'again': the ready score (now); for 'retry': when the claim lapses (ms)

  Output:
    1 when 'again' added the conversation to the ready set (its shard needs a wake-up), else 0
]]
if ARGV[2] == 'retry' then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[2] == 'again' then
  return redis.call('ZADD', KEYS[1], 'LT', ARGV[3], ARGV[1])
end
return 0
