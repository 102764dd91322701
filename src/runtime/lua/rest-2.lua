--[[
  A shard's wake-up loop stops: clears the shard's awake flag unless conversations wait in its ready set (then
  the shard needs another wake-up job, which the caller adds, and the flag stays). Atomic with mark-2.lua: a
  mark before this is seen here, a mark after it finds no flag and wakes the shard itself.

  Input:
    KEYS[1] the shard's ready set
    KEYS[2] the shard's awake flag
    ARGV[1] how long a flag lasts (ms)

  Output:
    1 when the shard needs a wake-up job, else 0
]]
if redis.call('ZCARD', KEYS[1]) > 0 then
  redis.call('SET', KEYS[2], 'e', 'PX', ARGV[1])
  return 1
end
redis.call('DEL', KEYS[2])
return 0
