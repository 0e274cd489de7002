-- Ends many entries in one call: what finish.lua does for an entry that
-- completes and reply_sent.lua for a reply that went out, for every item
-- of a batch, in order, atomically - and, when the send budget lives in
-- the same home (one shard), the budget checks of the sends that came
-- meanwhile (parts/budget.lua, put above this by scripts.rs, as is the
-- user record, parts/user.lua), so a
-- worker's finishes, sent replies and sends share one call. A chat's head
-- and whether an update is handled can be asked in the same call too (the
-- park pass's and the dedupe check's questions). One call instead of one per entry is
-- what makes the queue's Redis cost per update small (a script call costs
-- more than the commands inside it); commands that take many members
-- (XACK, XDEL, HDEL, ZADD, ZREM, HINCRBY of the counters) run once for
-- the whole batch.
--
-- As in finish.lua, the deletions come FIRST: under `maxmemory` with
-- `noeviction` Redis refuses a script only at its first write that can
-- grow memory, and XACK/XDEL/HDEL/ZREM never need memory - so a batch
-- ends its entries on a full Redis too, and ending entries is what frees
-- the memory.
--
-- KEYS: users:first_seen, users:last_seen, counters, failures, replies,
-- replies:due, users:blocked, then each item's keys. (The bot's pause
-- comes with the sends, so a batch without sends touches no key of the
-- budget's home - on a sharded cluster another slot.)
-- ARGV: done TTL s, now ms, group, item count, then each item:
--   'f' (finished): entry id, order key ('' = none), done bit, reply
--       ('' = none), reply lease end ms, user id ('' = none), first_name,
--       username, language_code, is message ('1'/'0'), start payload,
--       number of writes, then (op, field, value) per write.
--       Keys: done bitmap, user, stream, order list, one kv hash per write.
--   's' (reply sent): entry id, order key ('' = none). Keys: order list.
--   'a' (a send to budget): global interval µs, global tolerance µs, chat
--       interval µs, chat tolerance µs. Keys: the bot's pause, pool, chat
--       timestamp, chat pause.
--   'h' (a chat's head): done bit of the update asked about. Keys: order
--       list, done bitmap.
--   'd' (whether an update is handled): its done bit. Keys: done bitmap.
-- Returns, per item, whether it was fresh (1/0; always 1 for 's') and its
-- chat's next entry id ('' = none); for 'h', the done bit and the head
-- ('' = none), as of its place in the batch; for 'd', the done bit and ''; for 'a', why and the µs to
-- wait (see parts/budget.lua). The budget is checked after the ends, so its writes
-- come after the deletions.
local ttl, now, group, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])

local items, sends = {}, {}
local pause_bot
local a, k = 5, 8
-- Each item's table is built by one constructor: Lua sizes it once,
-- where adding the fields one by one would regrow it several times.
for i = 1, n do
  local kind = ARGV[a]
  if kind == 'a' then
    pause_bot = KEYS[k]
    sends[#sends + 1] = { KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4] }
    items[i] = { kind = kind, send = #sends }
    a, k = a + 5, k + 4
  elseif kind == 'h' then
    items[i] = { kind = kind, order = KEYS[k], done = KEYS[k + 1], bit = ARGV[a + 1] }
    a, k = a + 2, k + 2
  elseif kind == 'd' then
    items[i] = { kind = kind, done = KEYS[k], bit = ARGV[a + 1] }
    a, k = a + 2, k + 1
  elseif kind == 'f' then
    local nw = tonumber(ARGV[a + 12])
    items[i] = {
      kind = kind, id = ARGV[a + 1], okey = ARGV[a + 2], bit = ARGV[a + 3],
      reply = ARGV[a + 4], lease = ARGV[a + 5], uid = ARGV[a + 6], w = a + 7,
      nw = nw, wa = a + 13,
      done = KEYS[k], user = KEYS[k + 1], stream = KEYS[k + 2], order = KEYS[k + 3], wk = k + 4,
    }
    a = a + 13 + 3 * nw
    k = k + 4 + nw
  else
    items[i] = { kind = kind, id = ARGV[a + 1], okey = ARGV[a + 2], order = KEYS[k] }
    a, k = a + 3, k + 1
  end
end

-- 1. Deletions.
local streams, acks, failed, sent = {}, {}, {}, {}
for i = 1, n do
  local it = items[i]
  if it.kind == 'f' or it.kind == 's' then failed[#failed + 1] = it.id end
  if it.kind == 'f' then
    -- A plain id is the stream id; a tagged one (fast lane) loses its tag.
    local sid, b = it.id, string.byte(it.id, 1)
    if b < 48 or b > 57 then sid = string.match(sid, "(%d+%-%d+)$") or sid end
    local l = acks[it.stream]
    if not l then
      l = {}
      acks[it.stream] = l
      streams[#streams + 1] = it.stream
    end
    l[#l + 1] = sid
  elseif it.kind == 's' then
    sent[#sent + 1] = it.id
  end
end
for _, s in ipairs(streams) do
  redis.call('XACK', s, group, unpack(acks[s]))
  redis.call('XDEL', s, unpack(acks[s]))
end
if #sent > 0 then
  redis.call('HDEL', KEYS[5], unpack(sent))
  redis.call('ZREM', KEYS[6], unpack(sent))
end
if #failed > 0 then redis.call('HDEL', KEYS[4], unpack(failed)) end

-- 2. Marks, records, writes, kept replies, order - item by item.
local handled, dups = 0, 0
local expiring = {}
local first, last, users, kept, due = {}, {}, {}, {}, {}
local out = {}
for i = 1, n do
  local it = items[i]
  local fresh, keep, head = 1, false, ''
  if it.kind == 'f' then
    if redis.call('SETBIT', it.done, it.bit, 1) == 0 then
      if not expiring[it.done] then
        redis.call('EXPIRE', it.done, ttl)
        expiring[it.done] = true
      end
      handled = handled + 1
      if it.uid ~= '' then
        local w = it.w
        record_user(it.user, now, ARGV[w], ARGV[w + 1], ARGV[w + 2], ARGV[w + 3], ARGV[w + 4])
        first[#first + 1] = now
        first[#first + 1] = it.uid
        last[#last + 1] = now
        last[#last + 1] = it.uid
        -- Writing to the bot again: no longer blocking it.
        users[#users + 1] = it.uid
      end
      for j = 0, it.nw - 1 do
        local op, field, value = ARGV[it.wa + 3 * j], ARGV[it.wa + 3 * j + 1], ARGV[it.wa + 3 * j + 2]
        local key = KEYS[it.wk + j]
        if op == 'incr' then redis.call('HINCRBY', key, field, value)
        elseif op == 'set' then redis.call('HSET', key, field, value)
        else redis.call('HSETNX', key, field, value) end
      end
      if it.reply ~= '' then
        kept[#kept + 1] = it.id
        kept[#kept + 1] = it.reply
        due[#due + 1] = it.lease
        due[#due + 1] = it.id
        keep = true
      end
    else
      fresh = 0
      dups = dups + 1
    end
  elseif it.kind == 'h' then
    fresh = redis.call('GETBIT', it.done, it.bit)
    head = redis.call('LINDEX', it.order, 0) or ''
  elseif it.kind == 'd' then
    fresh = redis.call('GETBIT', it.done, it.bit)
  end
  -- A kept reply holds its chat until it is sent.
  if (it.kind == 'f' or it.kind == 's') and not keep and it.okey ~= '' then
    redis.call('LREM', it.order, 1, it.id)
    head = redis.call('LINDEX', it.order, 0) or ''
  end
  out[#out + 1] = fresh
  out[#out + 1] = head
end
if #users > 0 then
  redis.call('ZADD', KEYS[1], 'NX', unpack(first))
  redis.call('ZADD', KEYS[2], unpack(last))
  redis.call('ZREM', KEYS[7], unpack(users))
end
if #kept > 0 then
  redis.call('HSET', KEYS[5], unpack(kept))
  redis.call('ZADD', KEYS[6], unpack(due))
end
if handled > 0 then redis.call('HINCRBY', KEYS[3], 'updates_handled', handled) end
if dups > 0 then redis.call('HINCRBY', KEYS[3], 'updates_deduplicated', dups) end

-- 3. The sends' budget.
if #sends > 0 then
  local verdicts = admit_sends(pause_bot, sends)
  for i = 1, n do
    local it = items[i]
    if it.send then
      out[2 * i - 1] = verdicts[it.send][1]
      out[2 * i] = verdicts[it.send][2]
    end
  end
end
return out
