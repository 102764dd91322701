--[[
  Appends events to a conversation's mailbox; a mailbox made by this append gets its TTL backstop (one that
  already held events has had its own since it was made). Answers whether a drain holds the conversation's
  lease: that drain takes the events (its loop reads the mailbox again, and its release, release-3.lua,
  counts what is left and has the conversation claimed again), so the poster need not mark it ready. Both
  are atomic against that release: an append before it is counted, one after it finds no lease.

  Input:
    KEYS[1] the mailbox list
    KEYS[2] the conversation's lease
    ARGV[1] TTL backstop (ms)
    ARGV[2..] the events (JSON), in order

  Output:
    1 when a drain holds the lease (no ready mark needed), else 0
]]
local n = redis.call('RPUSH', KEYS[1], unpack(ARGV, 2))
if n == #ARGV - 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return redis.call('EXISTS', KEYS[2])
