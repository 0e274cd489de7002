-- The bot-wide half of finishing an update whose shard lives in another
-- slot than the bot's keys (several shards on a cluster): records the
-- user and applies the handler's writes, once per update id. Runs before
-- the shard's finish.lua: a crash between the two redelivers the entry,
-- whose writes then find their applied mark and are not applied again -
-- exactly once, as in the one-script finish.
--
-- KEYS: applied bitmap, user, users:first_seen, users:last_seen,
-- users:blocked, then one kv hash per write. ARGV: mark TTL s, now ms,
-- user id ('' = none), first_name, username, language_code, is message
-- ('1'/'0'), start payload, applied bit, number of writes, then (op,
-- field, value) per write. Returns 1 when applied now, 0 when done before.
if redis.call('SETBIT', KEYS[1], ARGV[9], 1) == 1 then return 0 end
redis.call('EXPIRE', KEYS[1], ARGV[1])
if ARGV[3] ~= '' then
  record_user(KEYS[2], ARGV[2], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
  redis.call('ZADD', KEYS[3], 'NX', ARGV[2], ARGV[3])
  redis.call('ZADD', KEYS[4], ARGV[2], ARGV[3])
  redis.call('ZREM', KEYS[5], ARGV[3])
end
for i = 1, tonumber(ARGV[10]) do
  local op, field, value = ARGV[8 + 3 * i], ARGV[9 + 3 * i], ARGV[10 + 3 * i]
  local key = KEYS[5 + i]
  if op == 'incr' then redis.call('HINCRBY', key, field, value)
  elseif op == 'set' then redis.call('HSET', key, field, value)
  else redis.call('HSETNX', key, field, value) end
end
return 1
