--[[
  Marks conversations ready in their shard and says whether the shard needs a wake-up job: only when none is
  known to be queued or running for it (the shard's awake flag), or when the one there waits in the sends lane
  and an event (a receipt, a reply, a timer) now waits too. Under load a busy shard's loop is already running
  and claims what is marked here, so a mark costs no BullMQ job; the loop clears the flag when it stops
  (rest-2.lua), and whatever is marked after that wakes the shard again.

  Input:
    KEYS[1] the shard's ready set
    KEYS[2] the shard's awake flag
    ARGV[1] how long a flag lasts (ms): a process that died with the shard's job leaves it only this long
    ARGV[2] 'e' if any of the marks is an event, 's' if all are newly accepted sends
    ARGV[3..] score, conversation id pairs (ZADD LT: a conversation already ready keeps its earlier place)

  Output:
    'e' or 's': add a wake-up job in that lane; 0: none needed
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
