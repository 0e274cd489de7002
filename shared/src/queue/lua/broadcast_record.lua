-- Records how one recipient's send ended, if the caller still holds its
-- lease (else another worker took it over and records it); marks a
-- blocked user; puts one to retry back at the end of the queue; ends the
-- job once nobody is left.
--
-- KEYS: job hash, todo list, inflight, broadcasts:running, users:blocked.
-- ARGV: chat id, outcome (sent|failed|blocked|again), now ms, job id.
if redis.call('ZREM', KEYS[3], ARGV[1]) == 0 then return 0 end
if ARGV[2] == 'again' then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  return 1
end
redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
if ARGV[2] == 'blocked' then redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1]) end
if redis.call('LLEN', KEYS[2]) == 0 and redis.call('ZCARD', KEYS[3]) == 0
  and redis.call('HGET', KEYS[1], 'state') == 'running' then
  redis.call('HSET', KEYS[1], 'state', 'done', 'finished_at', ARGV[3])
  redis.call('SREM', KEYS[4], ARGV[4])
end
return 1
