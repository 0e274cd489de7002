-- Replies whose lease ran out, leased anew to the caller, with how many
-- times each was taken over (a reply that kills every worker sending it
-- must end somewhere too).
--
-- A reply put aside (delay_reply.lua) leaves the delayed set when taken.
--
-- KEYS: replies:due, replies, failures, replies:delayed. ARGV: now ms, new lease end ms,
-- count. Returns flat (id, body, takeovers) triples.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local body = redis.call('HGET', KEYS[2], id)
  if body then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    redis.call('ZREM', KEYS[4], id)
    local n = redis.call('HINCRBY', KEYS[3], id, 1)
    table.insert(out, id)
    table.insert(out, body)
    table.insert(out, n)
  else
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[4], id)
  end
end
return out
