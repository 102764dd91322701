--[[
  Appends events to a conversation's mailbox; a mailbox made by this append gets its TTL backstop (one that
  already held events has had its own since it was made).

  Input:
    KEYS[1] the mailbox list
    ARGV[1] TTL backstop (ms)
    ARGV[2..] the events (JSON), in order

  Output:
    the mailbox's length
]]
local n = redis.call('RPUSH', KEYS[1], unpack(ARGV, 2))
if n == #ARGV - 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n
