-- Marks the update handled (once), counts it, records the user, removes
-- the entry and takes it off its conversation's order list - atomically.
-- Returns whether the update was fresh (a duplicate is counted nowhere)
-- and the conversation's next entry id, if any.
--
-- The entry is removed FIRST. Under `maxmemory` with `noeviction`, Redis
-- refuses a script (one without flags, as all of ours are) only at its
-- first write and only if that write can grow memory (SETBIT, HINCRBY,
-- XADD...); once a script has written, it runs to the end, since it
-- cannot be rolled back. XACK/XDEL/HDEL/LREM never need memory, so
-- opening with them makes the finish work on a full Redis - and the
-- finish is what frees the memory. The done bit, counters and user record
-- still go in the same atomic step: nothing is best-effort. They can
-- take Redis a few hundred bytes over its limit, each time after freeing
-- a whole entry.
--
-- KEYS: done bitmap, user, users:first_seen, users:last_seen, counters,
-- stream, failures, order list, replies, replies:due, users:blocked, then
-- one kv hash per write. ARGV: done TTL s, now ms, user id ('' = none), first_name,
-- username, language_code, is message ('1'/'0'), start payload, group,
-- entry id, order key ('' = none), done bit, reply ('' = none), reply
-- lease end ms, number of writes, then (op, field, value) per write.
-- A fast-lane or shard entry id carries a tag (lane.rs), its stream
-- (KEYS[6], chosen by the caller) knows it without.
local sid = ARGV[10]
sid = string.match(sid, "(%d+%-%d+)$") or sid
redis.call('XACK', KEYS[6], ARGV[9], sid)
redis.call('XDEL', KEYS[6], sid)
redis.call('HDEL', KEYS[7], ARGV[10])
local fresh = redis.call('SETBIT', KEYS[1], ARGV[12], 1) == 0
if fresh then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  redis.call('HINCRBY', KEYS[5], 'updates_handled', 1)
  if ARGV[3] ~= '' then
    record_user(KEYS[2], ARGV[2], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
    redis.call('ZADD', KEYS[3], 'NX', ARGV[2], ARGV[3])
    redis.call('ZADD', KEYS[4], ARGV[2], ARGV[3])
    -- Writing to the bot again: no longer blocking it.
    redis.call('ZREM', KEYS[11], ARGV[3])
  end
  local n = tonumber(ARGV[15])
  for i = 1, n do
    local op, field, value = ARGV[13 + 3 * i], ARGV[14 + 3 * i], ARGV[15 + 3 * i]
    local key = KEYS[11 + i]
    if op == 'incr' then redis.call('HINCRBY', key, field, value)
    elseif op == 'set' then redis.call('HSET', key, field, value)
    else redis.call('HSETNX', key, field, value) end
  end
  if ARGV[13] ~= '' then
    redis.call('HSET', KEYS[9], ARGV[10], ARGV[13])
    redis.call('ZADD', KEYS[10], ARGV[14], ARGV[10])
    return {1, ''}
  end
else
  redis.call('HINCRBY', KEYS[5], 'updates_deduplicated', 1)
end
local head = ''
if ARGV[11] ~= '' then
  redis.call('LREM', KEYS[8], 1, ARGV[10])
  head = redis.call('LINDEX', KEYS[8], 0) or ''
end
if fresh then return {1, head} end
return {0, head}
