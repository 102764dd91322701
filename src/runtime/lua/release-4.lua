--[[
  Releases a conversation's lease only if this process still holds it, clearing the outbox too when its
  effects were all applied, and answers how many events wait in the mailbox: one round trip where three were.

  Input:
    KEYS[1] lease
    KEYS[2] meta hash (its field `o` is the outbox; HDEL never makes a hash that is gone)
    KEYS[3] mailbox list
    KEYS[4] the outbox list an earlier version kept (deleted with the outbox when ARGV[3] is '1')
    ARGV[1] lease token (this drain's): nothing is released or cleared unless the lease still holds it
    ARGV[2] '1' to clear the outbox (every effect it held was applied), '' to keep it (a crash replays it)
    ARGV[3] '1' when the outbox was read from KEYS[4] and no commit of this drain deleted it yet

  Output:
    the mailbox's length (events that arrived meanwhile: the worker wakes the conversation again)
]]
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if ARGV[2] == '1' then
    redis.call('HDEL', KEYS[2], 'o')
    if ARGV[3] == '1' then redis.call('DEL', KEYS[4]) end
  end
end
return redis.call('LLEN', KEYS[3])
