--[[
  A drain with nothing left to do asks for more: the events waiting in the mailbox if there are any (the
  drain keeps its lease and goes on), else the lease is released and the outbox cleared (every effect of it
  was applied), in the one round trip where a read of the mailbox and then the release went.

  Input:
    KEYS[1] lease
    KEYS[2] meta hash (its field `o` is the outbox)
    KEYS[3] mailbox list
    KEYS[4] the outbox list an earlier version kept (deleted with the outbox when ARGV[3] is '1')
    ARGV[1] lease token (this drain's)
    ARGV[2] how many events to read at most
    ARGV[3] '1' when the outbox was read from KEYS[4] and no commit of this drain deleted it yet

  Output:
    the waiting events (the lease kept), or an empty array (the lease released); an error reply 'LEASE_LOST'
    when the lease is no longer this drain's (nothing read or released)
]]
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('LEASE_LOST')
end
local events = redis.call('LRANGE', KEYS[3], 0, tonumber(ARGV[2]) - 1)
if #events > 0 then
  return events
end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], 'o')
if ARGV[3] == '1' then redis.call('DEL', KEYS[4]) end
return events
