--[[
  A shard's due timers: up to ARGV[2] of those due by ARGV[1], each with its due time and the event it posts.
  Nothing is removed here: the timers are removed (timers-done-2.lua) once their events are in the mailboxes,
  so a crash in between posts them again (a late duplicate timer event is ignored by the machine).

  Input:
    KEYS[1] the shard's timers (sorted set: `<conversation id> <timer id>` by due time)
    KEYS[2] the shard's timer events (hash: member → mailbox event JSON)
    ARGV[1] now (ms)
    ARGV[2] how many at most

  Output:
    a flat list: member, due time, event JSON (false when missing), member, ...
]]
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
local out = {}
for i = 1, #due, 2 do
  out[#out + 1] = due[i]
  out[#out + 1] = due[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], due[i])
end
return out
