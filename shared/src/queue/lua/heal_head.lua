-- Unblocks a conversation whose head entry no longer exists in the stream
-- (lost with a Redis that restarted without its data, or removed by hand):
-- drops the head only if it is still the head and still missing.
--
-- KEYS: stream, order list, replies. ARGV: the head entry id.
if redis.call('LINDEX', KEYS[2], 0) ~= ARGV[1] then return 0 end
-- The head is an entry id; a shard's carries a tag (lane.rs).
local sid = string.match(ARGV[1], "(%d+%-%d+)$") or ARGV[1]
if #redis.call('XRANGE', KEYS[1], sid, sid) > 0 then return 0 end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then return 0 end
redis.call('LPOP', KEYS[2])
return 1
