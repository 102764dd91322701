--[[
  Marks conversations ready in their shard and says whether the shard needs a wake-up job: only when none
  waits in the queue for it already (the shard's awake flag, set here and cleared by the job's first claim,
  claim-3.lua), or when the one waiting is in the sends lane and an event (a receipt, a reply, a timer) now
  waits too. As BullMQ's deduplication would (one job waiting besides the one running), but a mark into a
  shard whose job already waits costs no BullMQ call: under load most marks.

  Input:
    KEYS[1] the shard's ready set
    KEYS[2] the shard's awake flag
    ARGV[1] how long a flag lasts (ms): a job lost from the queue leaves it only this long (the runner's sweep
            wakes a shard whose conversations wait longer than a second anyway)
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
