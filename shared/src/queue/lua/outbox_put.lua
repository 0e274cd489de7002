-- Stores one outbound message as a kept reply due at its `not_before`
-- (a worker takes it once due, as it takes a reply whose worker died),
-- unless its idempotency key was seen: then the first id, nothing stored.
--
-- KEYS: idempotency key (a placeholder when none), replies, replies:due,
-- replies:delayed, id sequence. ARGV: body, due ms, now ms, '1' when an
-- idempotency key was given, its lifetime s. Returns {id, 1 stored | 0}.
if ARGV[4] == '1' then
  local first = redis.call('GET', KEYS[1])
  if first then return {first, 0} end
end
local id = 'o' .. redis.call('INCR', KEYS[5])
redis.call('HSET', KEYS[2], id, ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], id)
if tonumber(ARGV[2]) > tonumber(ARGV[3]) then redis.call('ZADD', KEYS[4], ARGV[2], id) end
if ARGV[4] == '1' then redis.call('SET', KEYS[1], id, 'EX', ARGV[5]) end
return {id, 1}
