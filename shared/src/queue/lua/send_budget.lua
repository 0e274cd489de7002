-- Returns {0, 0} when a send may go now (and books it), else {why, µs to
-- wait}: 1 the rate, 2 the bot paused by Telegram (a bot-wide 429), 3 the
-- chat paused. GCRA: one timestamp per key, no per-request bookkeeping.
-- A pause is a key with a time to live (rate_limited.lua sets it); it
-- books nothing. KEYS: global, chat, bot pause, chat pause. ARGV: global
-- interval µs, global tolerance µs, chat interval µs (0 = no chat
-- limit), chat tolerance µs.
--
-- The booking opens with PEXPIRE: a full Redis (`noeviction`) refuses a
-- script only at a first write that can grow memory, and SET is one. The
-- budget must keep working then - every reply draws from it, and replies
-- finishing are what empty a full Redis - while its writes only replace
-- a timestamp or two.
local pb = redis.call('PTTL', KEYS[3])
if pb > 0 then return {2, pb * 1000} end
local pc = redis.call('PTTL', KEYS[4])
if pc > 0 then return {3, pc * 1000} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function tat_of(key)
  local v = tonumber(redis.call('GET', key) or '0')
  if v < now then return now end
  return v
end
local gi, gt, ci, ct = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local g = tat_of(KEYS[1])
local wait = g - gt - now
local c = 0
if ci > 0 then
  c = tat_of(KEYS[2])
  local w2 = c - ct - now
  if w2 > wait then wait = w2 end
end
if wait > 0 then return {1, wait} end
redis.call('PEXPIRE', KEYS[1], math.floor((g + gi - now) / 1000) + 1000)
redis.call('SET', KEYS[1], tostring(g + gi), 'PX', math.floor((g + gi - now) / 1000) + 1000)
if ci > 0 then
  redis.call('SET', KEYS[2], tostring(c + ci), 'PX', math.floor((c + ci - now) / 1000) + 1000)
end
return {0, 0}
