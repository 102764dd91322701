--[[
  Accepts an outbound message: the conversation's metadata (made if new), the message row, its retention
  entry and the SEND event in the mailbox, in one step on keys of one hash slot ({c:<id>}). The keys' TTL
  backstops (retention and a day) are renewed at most every ARGV[7] ms (the meta field `xa` says when they
  last were); a key made here gets its TTL at once. Whether a drain holds the conversation's lease is
  answered too: that drain takes the SEND (its loop reads the mailbox again, and its release counts what
  is left, release-3.lua), so the accept needs no ready mark.

  Input:
    KEYS[1] meta hash
    KEYS[2] the message row (hash)
    KEYS[3] retention sorted set
    KEYS[4] mailbox list
    KEYS[5] the conversation's lease
    ARGV[1] business id        ARGV[2] phone number id        ARGV[3] the user's number, sealed
    ARGV[4] key TTL backstop (ms)
    ARGV[5] the row's TTL backstop (ms)
    ARGV[6] now (ms)
    ARGV[7] how often the backstops are renewed (ms)
    ARGV[8] when the message's retention ends (ms, the retention entry's score)
    ARGV[9] the message id
    ARGV[10] the mailbox event (JSON)
    ARGV[11..] the row's field, value pairs

  Output:
    1 when the conversation's metadata was made now (a new or deleted-and-new conversation), else 0; plus 2
    when a drain holds the conversation's lease
]]
local meta, row, ret, mbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = tonumber(ARGV[6])
local m = redis.call('HMGET', meta, 'business_id', 'xa')
local created = not m[1]
local renew = created or not m[2] or now - tonumber(m[2]) >= tonumber(ARGV[7])
if created then
  redis.call('HSET', meta, 'business_id', ARGV[1], 'phone_number_id', ARGV[2], 'wa', ARGV[3], 'xa', ARGV[6])
elseif renew then
  redis.call('HSET', meta, 'xa', ARGV[6])
end
redis.call('HSET', row, unpack(ARGV, 11))
redis.call('PEXPIRE', row, ARGV[5])
redis.call('ZADD', ret, ARGV[8], ARGV[9])
local fresh = redis.call('RPUSH', mbox, ARGV[10]) == 1
if renew then
  redis.call('PEXPIRE', meta, ARGV[4])
  redis.call('PEXPIRE', ret, ARGV[4])
  redis.call('PEXPIRE', mbox, ARGV[4])
else
  -- Emptied (and so deleted) since the last renewal and made again just now: no TTL yet.
  if redis.call('PTTL', ret) == -1 then redis.call('PEXPIRE', ret, ARGV[4]) end
  if fresh then redis.call('PEXPIRE', mbox, ARGV[4]) end
end
local held = 0
if redis.call('EXISTS', KEYS[5]) == 1 then held = 2 end
if created then return 1 + held end
return held
