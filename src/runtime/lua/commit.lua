--[[
  Atomic commit of one actor step: the conversation's snapshot, Signal session, message rows, retention
  index, mailbox consumption, outbox and trace, written together or not at all. All keys share the hash
  tag {c:<id>}.

  Input:
    KEYS[1] snapshot (sealed, deflated: src/runtime/snapshot-codec.ts; a hash {v, s, t} before, still read)
    KEYS[2] lease
    KEYS[3] mailbox list
    KEYS[4] session (sealed Signal state), written only when ARGV[5] is not ''
    KEYS[5] the outbox: a string, its commands as a JSON array, present only while not empty (a list in versions
            before 2026-12-03: SET and DEL replace either)
    KEYS[6] trace list (one entry per step: its lines compressed, see src/trace/store.ts)
    KEYS[7] meta hash (also holds v = snapshot version, t = trace sequence)
    KEYS[8] retention sorted set (score = when a message's retention ends, member = message id)
    KEYS[9..] message rows, addressed by index from ARGV[12]

    ARGV[1]  lease token: the commit fails unless the lease still holds it (fencing)
    ARGV[2]  expected snapshot version ('0' = no snapshot yet)
    ARGV[3]  new sealed snapshot
    ARGV[4]  trace sequence after this step
    ARGV[5]  new sealed session ('' = unchanged)
    ARGV[6]  number of mailbox entries consumed (LTRIM from the head)
    ARGV[7]  the outbox: its commands as a JSON array ('[]' = empty: the key is deleted if ARGV[10] says one is stored)
    ARGV[8]  the step's trace entry to append ('' = none)
    ARGV[9]  trace length bound, in entries (steps)
    ARGV[10] '1' when an outbox may be stored (it is deleted if this step's is empty)
    ARGV[11] key TTL backstop (ms)
    ARGV[12] row operations, JSON: [{"k": index from 1 (KEYS[8+k]; 0 = the meta hash), "set": {field: value}?, "del": [field]?, "drop": true?,
             "made": true? (a row this step makes: it gets the TTL backstop),
             "rewrite": {field: value}?, "until": ms? (the whole row written afresh, expiring then)}]
    ARGV[13] retention entries to add, JSON: [[score, member], ...]
    ARGV[14] retention members to remove, JSON: [member, ...]
    ARGV[15] the whole trace to keep before appending, as one entry ('' = keep it as it is, '-' = empty it)
    ARGV[16] '1' to delete the conversation: every key above (rows given in KEYS) instead of writing
    ARGV[17] now (ms) when the keys' TTL backstops are due for renewal ('' = not due: renewed less than an hour
             ago, when the backstop is a day longer than retention; keys this step creates get theirs anyway)

  Output:
    the new version ('0' after a delete), or an error reply 'LEASE_LOST' / 'VERSION_CONFLICT' / 'MAILBOX_MOVED'
]]
local snap, lease, mbox, sess, outbox, trace, meta, ret = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
if redis.call('GET', lease) ~= ARGV[1] then
  return redis.error_reply('LEASE_LOST')
end
local current = redis.call('HGET', meta, 'v')
if not current and redis.call('TYPE', snap).ok == 'hash' then
  -- Committed before the version moved to the meta hash: the snapshot was a hash holding it.
  current = redis.call('HGET', snap, 'v')
end
current = current or '0'
if current ~= ARGV[2] then
  return redis.error_reply('VERSION_CONFLICT')
end
local pops = tonumber(ARGV[6])

if ARGV[16] == '1' then
  -- Events the step did not see would be lost with the conversation: let the next drain decide again.
  if redis.call('LLEN', mbox) > pops then
    return redis.error_reply('MAILBOX_MOVED')
  end
  redis.call('DEL', snap, mbox, sess, outbox, trace, meta, ret)
  for i = 9, #KEYS do redis.call('DEL', KEYS[i]) end
  return '0'
end

local ttl = tonumber(ARGV[11])
local version = tostring(tonumber(current) + 1)
redis.call('SET', snap, ARGV[3], 'PX', ttl)
local renew = ARGV[17] ~= ''
if renew then
  redis.call('HSET', meta, 'v', version, 't', ARGV[4], 'x', ARGV[17])
else
  redis.call('HSET', meta, 'v', version, 't', ARGV[4])
end
if ARGV[5] ~= '' then
  redis.call('SET', sess, ARGV[5], 'PX', ttl)
end
if pops > 0 then
  redis.call('LTRIM', mbox, pops, -1)
end
-- The outbox is a key of its own, not a field of the meta hash: a value over 64 bytes would turn the hash into
-- Redis's large encoding for good (~500 bytes more per idle conversation).
if ARGV[7] ~= '[]' then
  redis.call('SET', outbox, ARGV[7], 'PX', ARGV[11])
elseif ARGV[10] == '1' then
  redis.call('DEL', outbox)
end
if ARGV[15] ~= '' then
  redis.call('DEL', trace)
  if ARGV[15] ~= '-' then redis.call('RPUSH', trace, ARGV[15]) end
end
if ARGV[8] ~= '' then
  -- Trimmed only once over its bound (RPUSH answers the length).
  if redis.call('RPUSH', trace, ARGV[8]) > tonumber(ARGV[9]) then
    redis.call('LTRIM', trace, -tonumber(ARGV[9]), -1)
  end
end
-- (PEXPIRE on a key that does not exist does nothing.) A trace rewritten here is a new key.
if renew or ARGV[15] ~= '' then redis.call('PEXPIRE', trace, ttl) end
-- A hash's fields as HSET takes them: field, value, field, value...
local function pairsOf(t)
  local out = {}
  for f, v in pairs(t) do
    out[#out + 1] = f
    out[#out + 1] = v
  end
  return out
end
for _, op in ipairs(cjson.decode(ARGV[12])) do
  local key = meta
  if op.k > 0 then key = KEYS[8 + op.k] end
  if op.drop then
    redis.call('DEL', key)
  elseif op.rewrite then
    -- The row as it is to be (the drain knows every field left): written afresh, compact, with its backstop.
    redis.call('DEL', key)
    redis.call('HSET', key, unpack(pairsOf(op.rewrite)))
    redis.call('PEXPIREAT', key, op['until'])
  else
    if op.del and #op.del > 0 then
      redis.call('HDEL', key, unpack(op.del))
      -- A hash that once held a large field (content, ciphertext) keeps Redis's large encoding after the
      -- field is gone: rewriting what is left stores it compactly again (a delivered row: ~350 -> ~120 bytes).
      if not op.set then
        local rest = redis.call('HGETALL', key)
        if #rest > 0 then
          local pttl = redis.call('PTTL', key)
          redis.call('DEL', key)
          redis.call('HSET', key, unpack(rest))
          if pttl > 0 then redis.call('PEXPIRE', key, pttl) end
        end
      end
    end
    if op.set then
      local fields = pairsOf(op.set)
      if #fields > 0 then redis.call('HSET', key, unpack(fields)) end
      -- A row made here (a user's message) gets the backstop TTL too; an outbound row keeps the one it has.
      if op.made then redis.call('PEXPIRE', key, ttl) end
    end
  end
end
local adds = {}
for _, e in ipairs(cjson.decode(ARGV[13])) do
  adds[#adds + 1] = e[1]
  adds[#adds + 1] = e[2]
end
if #adds > 0 then redis.call('ZADD', ret, unpack(adds)) end
local rem = cjson.decode(ARGV[14])
if #rem > 0 then redis.call('ZREM', ret, unpack(rem)) end
if renew then
  redis.call('PEXPIRE', ret, ttl)
  redis.call('PEXPIRE', meta, ttl)
elseif #adds > 0 and redis.call('PTTL', ret) == -1 then
  -- The index was emptied (and so deleted) since the last renewal: made again here, without a TTL.
  redis.call('PEXPIRE', ret, ttl)
end
-- (The lease is renewed by the drain's timer, src/runtime/host/lease.ts, not by every commit.)
return version
