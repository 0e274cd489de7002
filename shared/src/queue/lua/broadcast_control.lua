-- Pauses, resumes or cancels a broadcast. A cancelled one forgets the
-- recipients not reached (sends in flight still finish and are counted).
-- Returns the state after, or false for an unknown id.
--
-- KEYS: job hash, todo list, broadcasts:running. ARGV: action, id, now ms.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
if ARGV[1] == 'pause' and state == 'running' then
  redis.call('HSET', KEYS[1], 'state', 'paused')
  redis.call('SREM', KEYS[3], ARGV[2])
elseif ARGV[1] == 'resume' and state == 'paused' then
  redis.call('HSET', KEYS[1], 'state', 'running')
  redis.call('SADD', KEYS[3], ARGV[2])
elseif ARGV[1] == 'cancel' and (state == 'running' or state == 'paused') then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_at', ARGV[3])
  redis.call('SREM', KEYS[3], ARGV[2])
end
return redis.call('HGET', KEYS[1], 'state')
