-- Puts every dead letter back on the stream as a new entry (at the end of
-- its conversation's order) and removes it from the dead letters, one at a
-- time and atomically, so an interrupted replay loses or doubles nothing.
-- A dead reply (its update was handled, only the answer failed) goes back
-- as a kept reply, due at once: any worker sends it.
--
-- The new entry's fields come from the caller (envelope.rs `NewEntry`,
-- the one definition of the entry layout), built from this same dead
-- letter as the caller read it: a stream entry never changes, so if the
-- letter is still here, those are its fields.
--
-- KEYS: stream, dead letters, order list, replies, replies:due.
-- ARGV: dead letter id, order key ('' = none), the id tag of the
-- stream's shard (lane.rs), then the new entry's `field value ...` list. Returns 1 replayed, 0 gone, -1 kept (no update
-- body).
local e = redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1])
if #e == 0 then return 0 end
local f = e[1][2]
local m = {}
for i = 1, #f, 2 do m[f[i]] = f[i + 1] end
if (m['reply'] or '') ~= '' then
  redis.call('HSET', KEYS[4], m['id'], m['reply'])
  redis.call('ZADD', KEYS[5], 0, m['id'])
  redis.call('XDEL', KEYS[2], ARGV[1])
  return 1
end
if m['update'] == nil or m['update'] == '' then return -1 end
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 4))
if ARGV[2] ~= '' then redis.call('RPUSH', KEYS[3], ARGV[3] .. id) end
redis.call('XDEL', KEYS[2], ARGV[1])
return 1
