-- Creates a broadcast: its recipients (the directory's users, or the
-- given chats) minus those known to have blocked the bot, queued in
-- order; the job running at once.
--
-- KEYS: job hash, todo list, broadcasts, broadcasts:running,
-- users:first_seen, users:blocked. ARGV: id, method, params JSON, now ms,
-- 'all' or 'list', then the chat ids of a list.
local chats
if ARGV[5] == 'all' then
  chats = redis.call('ZRANGE', KEYS[5], 0, -1)
else
  chats = {}
  for i = 6, #ARGV do table.insert(chats, ARGV[i]) end
end
local seen, total = {}, 0
for _, c in ipairs(chats) do
  if not seen[c] and not redis.call('ZSCORE', KEYS[6], c) then
    seen[c] = true
    redis.call('RPUSH', KEYS[2], c)
    total = total + 1
  end
end
local state = 'running'
if total == 0 then state = 'done' end
redis.call('HSET', KEYS[1], 'state', state, 'method', ARGV[2], 'params', ARGV[3],
  'total', total, 'sent', 0, 'failed', 0, 'blocked', 0, 'created_at', ARGV[4],
  'finished_at', (total == 0) and ARGV[4] or 0)
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
if total > 0 then redis.call('SADD', KEYS[4], ARGV[1]) end
return total
