--[[
  Ends a hold on a business's webhook delivery (its lock), but only once its outbox is empty: updates
  appended while the holder was posting are its to deliver (their appenders found the lock held and left
  them to it), so the holder is told to go on instead. After a failed attempt (ARGV[2] = '1') the lock is
  released whatever is left: the retry is the webhooks queue's.

  Input:
    KEYS[1] the business's delivery lock (string: the holder's token)
    KEYS[2] the business's webhook outbox (list)
    ARGV[1] the holder's token
    ARGV[2] '1' to release even if updates are left

  Output:
    1 released; 0 not released: updates are waiting, deliver them and ask again; -1 the lock is not the
    holder's any more (it lapsed)
]]
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
if ARGV[2] ~= '1' and redis.call('LLEN', KEYS[2]) > 0 then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
