-- Puts a kept reply aside until it is due: its body (with what was sent
-- already) replaces the kept one, its due time replaces its lease, so any
-- worker takes it once due (orphan_replies.lua), in its chat's order - the
-- chat's order list still holds it. Taking it then counts as a takeover;
-- the count is set back by one here, as waiting out a 429 is no failed
-- delivery.
--
-- KEYS: replies, replies:due, failures, replies:delayed. ARGV: entry id,
-- body, due ms.
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[1], -1)
return 1
