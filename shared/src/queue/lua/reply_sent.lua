-- A kept reply went out: forget it, let its chat go on. Only deletions,
-- so it runs on a full Redis too.
--
-- KEYS: replies, replies:due, failures, order list. ARGV: entry id,
-- order key ('' = none). Returns the chat's next entry id ('' = none).
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
local head = ''
if ARGV[2] ~= '' then
  redis.call('LREM', KEYS[4], 1, ARGV[1])
  head = redis.call('LINDEX', KEYS[4], 0) or ''
end
return head
