--[[
  Extends a conversation's lease only while this process still holds it: a process that stalled past its
  lease lost it, and must not stretch the lease of the one that holds it now.

  Input:
    KEYS[1] lease
    ARGV[1] lease token (this drain's)
    ARGV[2] lease duration (ms)

  Output:
    1 when the lease was extended, 0 when this process no longer holds it
]]
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
