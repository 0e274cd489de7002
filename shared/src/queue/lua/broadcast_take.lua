-- Leases up to `count` recipients of a running broadcast to the caller.
-- Recipients whose lease ran out (their worker died mid-send) go first:
-- each is sent at most once apart from the sends in flight at a crash.
--
-- KEYS: job hash, todo list, inflight. ARGV: now ms, lease ms, count.
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return {} end
local now = tonumber(ARGV[1])
for _, c in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  redis.call('ZREM', KEYS[3], c)
  redis.call('LPUSH', KEYS[2], c)
end
local out = {}
for _ = 1, tonumber(ARGV[3]) do
  local c = redis.call('LPOP', KEYS[2])
  if not c then break end
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), c)
  table.insert(out, c)
end
return out
