-- Removes `consumer` from the group and its alive mark, in one step and
-- only if it owns no pending entry (DELCONSUMER would drop those from the
-- group's memory: nobody could reclaim them). 1 = left, 0 = still owns
-- entries.
--
-- Both lanes count; the fast lane may have no group yet (an older
-- worker's deployment), hence the pcall there.
--
-- KEYS: stream, the consumer's alive mark, fast-lane stream. ARGV: group,
-- consumer.
local owned = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #owned > 0 then return 0 end
local fast = redis.pcall('XPENDING', KEYS[3], ARGV[1], '-', '+', 1, ARGV[2])
if type(fast) == 'table' and fast.err == nil and #fast > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
redis.pcall('XGROUP', 'DELCONSUMER', KEYS[3], ARGV[1], ARGV[2])
redis.call('DEL', KEYS[2])
return 1
