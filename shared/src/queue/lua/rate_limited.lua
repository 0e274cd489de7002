-- Telegram answered 429 for a chat: pause that chat, and the whole bot
-- when the 429s are not one chat's. Telegram does not say which limit was
-- hit; refusals for two or more chats within the window mean the bot's
-- (about 30 messages/s for all chats together), and then every worker
-- pauses at once through the bot pause key - for the shortest
-- `retry_after` of the window, so one chat's long wait never stops the
-- others for as long. Returns 1 for the bot, 0 for the chat alone.
--
-- Opens by removing old records (never refused on a full Redis).
-- KEYS: recent 429s, bot pause, chat pause. ARGV: chat id, retry_after
-- ms, window ms.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local retry, window = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
-- A pause key holds when it ends (ms): the budget reads a chat's pause in
-- the same MGET as the chat's timestamp (parts/budget.lua).
local function pause(key, ms)
  if redis.call('PTTL', key) < ms then
    redis.call('SET', key, string.format('%d', now + ms), 'PX', ms)
  end
end
pause(KEYS[3], retry)
redis.call('ZADD', KEYS[1], now, ARGV[1] .. '|' .. ARGV[2])
redis.call('PEXPIRE', KEYS[1], window * 2)
local chats, n, shortest = {}, 0, retry
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local c, r = string.match(m, '^(.-)|(%d+)$')
  if c and not chats[c] then
    chats[c] = true
    n = n + 1
  end
  r = tonumber(r)
  if r and r < shortest then shortest = r end
end
if n >= 2 then
  pause(KEYS[2], shortest)
  return 1
end
return 0
