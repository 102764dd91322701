--[[
  Releases a conversation's lease only if this process still holds it, deleting the outbox too when its
  effects were all applied, and answers how many events wait in the mailbox: one round trip where three were.

  Input:
    KEYS[1] lease
    KEYS[2] the outbox (a string; a list in versions before 2026-12-03: DEL removes either)
    KEYS[3] mailbox list
    ARGV[1] lease token (this drain's): nothing is released or deleted unless the lease still holds it
    ARGV[2] '1' to delete the outbox (every effect it held was applied), '' to keep it (a crash replays it)

  Output:
    the mailbox's length (events that arrived meanwhile: the worker wakes the conversation again)
]]
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if ARGV[2] == '1' then
    redis.call('DEL', KEYS[2])
  end
end
return redis.call('LLEN', KEYS[3])
