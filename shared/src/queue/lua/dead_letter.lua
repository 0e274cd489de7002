-- Moves an entry to the dead letters with the reason, and removes it
-- from the stream, atomically: it is never in both or in neither.
-- Removal first, as in finish.lua: on a full Redis the dead letter is
-- then written with the memory its entry just gave back.
--
-- KEYS: stream, dead letters, failures, counters, order list, replies,
-- replies:due. ARGV: group, entry id, update id, order key, update,
-- error, deliveries, failed at ms, reply.
-- A fast-lane or shard id carries a tag (lane.rs); its stream does not.
local sid = ARGV[2]
sid = string.match(sid, "(%d+%-%d+)$") or sid
redis.call('XACK', KEYS[1], ARGV[1], sid)
redis.call('XDEL', KEYS[1], sid)
redis.call('HDEL', KEYS[3], ARGV[2])
if ARGV[4] ~= '' then redis.call('LREM', KEYS[5], 1, ARGV[2]) end
redis.call('XADD', KEYS[2], '*', 'id', ARGV[2], 'update_id', ARGV[3], 'key', ARGV[4], 'update', ARGV[5], 'error', ARGV[6], 'deliveries', ARGV[7], 'failed_at', ARGV[8], 'reply', ARGV[9])
redis.call('HINCRBY', KEYS[4], 'updates_dead_lettered', 1)
redis.call('HDEL', KEYS[6], ARGV[2])
redis.call('ZREM', KEYS[7], ARGV[2])
return 1
