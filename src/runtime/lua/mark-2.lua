--[[
  Marks conversations ready in their shard and says whether the shard needs a wake-up: only when none waits
  on the wake list for it already (the shard's awake flag, set here and by the sweep, stale-4.lua, and cleared
  by the first claim of the wake-up's loop, claim-3.lua), or when the one waiting is in the sends lane and an
  event (a receipt, a reply, a timer) now waits too. Under load most marks find a wake-up waiting and cost
  nothing more.

  Input:
    KEYS[1] the shard's ready set
    KEYS[2] the shard's awake flag
    ARGV[1] how long a flag lasts (ms): a wake-up lost with a process that popped it and died leaves it only
            this long (then the runner's sweep wakes the shard)
    ARGV[2] 'e' if any of the marks is an event, 's' if all are newly accepted sends
    ARGV[3..] score, conversation id pairs (ZADD LT: a conversation already ready keeps its earlier place)

  Output:
    'e' or 's': push a wake-up in that lane; 0: none needed
]]
local added = redis.call('ZADD', KEYS[1], 'LT', unpack(ARGV, 3))
if added == 0 then
  return 0
end
local cur = redis.call('GET', KEYS[2])
if cur == ARGV[2] or cur == 'e' then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[1])
return ARGV[2]
