--[[
  Sets or cancels one durable timer of a shard: its due time in the shard's timers and the mailbox event it
  posts (timers-due-2.lua hands due ones on).

  Input:
    KEYS[1] the shard's timers (sorted set: member by due time)
    KEYS[2] the shard's timer events (hash: member -> event)
    ARGV[1] the member ("<conversation id> <timer id>")
    ARGV[2] the due time (ms), or '' to cancel
    ARGV[3] the event (JSON), when setting

  Output:
    1
]]
if ARGV[2] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
return 1
