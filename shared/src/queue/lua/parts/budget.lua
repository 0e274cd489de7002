-- The shared send budget, for many sends at once, in order; a part
-- (scripts.rs puts it at the top of admit_many.lua and end_many.lua), not
-- a script of its own. Each send gets {0, 0} when it may go now (and is
-- booked), else {why, µs to wait}: 1 the rate, 2 the bot paused by
-- Telegram (a bot-wide 429), 3 the chat paused. Bookings made earlier in
-- the list count for later sends, exactly as if they had come one by one.
-- GCRA: one timestamp per key, no per-request bookkeeping. A pause is a
-- key with a time to live (rate_limited.lua sets it); it books nothing.
-- A chat's pause holds its end (ms, Redis's clock), so it is read in one
-- MGET with the chat's timestamp; a pause written by an earlier version
-- holds '1' and is read by its time to live.
--
-- A send: {pool (global or paid), its chat's timestamp, its chat's pause,
-- global interval µs, global tolerance µs, chat interval µs (0 = no chat
-- limit), chat tolerance µs}. An interval of 0 books nothing (no limit):
-- only the pauses are checked.
--
-- The booking opens with PEXPIRE: a full Redis (`noeviction`) refuses a
-- script only at a first write that can grow memory, and SET is one. The
-- budget must keep working then - every reply draws from it, and replies
-- finishing are what empty a full Redis - while its writes only replace a
-- timestamp or two.
local function admit_sends(pause_bot, sends)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local now_ms = math.floor(now / 1000)
  local pb = redis.call('PTTL', pause_bot)
  local tats, dirty = {}, {}
  -- Milliseconds of pause left, from the pause key's value.
  local function pause_left(key, v)
    if not v then return 0 end
    local ends = tonumber(v)
    if ends and ends > 1 then return ends - now_ms end
    return redis.call('PTTL', key)
  end
  -- The chat's pause, and (with a chat limit) its timestamp in the same
  -- read the first time the batch meets the chat.
  local function chat_pause(cpause, chat, limited)
    if limited and tats[chat] == nil then
      local v = redis.call('MGET', cpause, chat)
      tats[chat] = tonumber(v[2] or '0')
      return pause_left(cpause, v[1])
    end
    return pause_left(cpause, redis.call('GET', cpause))
  end
  local function tat_of(key)
    local v = tats[key]
    if v == nil then
      v = tonumber(redis.call('GET', key) or '0')
      tats[key] = v
    end
    if v < now then return now end
    return v
  end
  local function book(key, v)
    if not dirty[key] then
      dirty[#dirty + 1] = key
      dirty[key] = true
    end
    tats[key] = v
  end
  local out = {}
  for i, s in ipairs(sends) do
    local pool, chat, cpause = s[1], s[2], s[3]
    local gi, gt, ci, ct = tonumber(s[4]), tonumber(s[5]), tonumber(s[6]), tonumber(s[7])
    local why, wait = 0, 0
    if pb > 0 then
      why, wait = 2, pb * 1000
    else
      local pc = chat_pause(cpause, chat, ci > 0)
      if pc > 0 then
        why, wait = 3, pc * 1000
      elseif gi > 0 or ci > 0 then
        local g, c = 0, 0
        if gi > 0 then
          g = tat_of(pool)
          wait = g - gt - now
        end
        if ci > 0 then
          c = tat_of(chat)
          local w2 = c - ct - now
          if w2 > wait then wait = w2 end
        end
        if wait > 0 then
          why = 1
        else
          wait = 0
          if gi > 0 then book(pool, g + gi) end
          if ci > 0 then book(chat, c + ci) end
        end
      end
    end
    out[i] = { why, wait }
  end
  for j, key in ipairs(dirty) do
    local v = tats[key]
    local ttl = math.floor((v - now) / 1000) + 1000
    if j == 1 then redis.call('PEXPIRE', key, ttl) end
    redis.call('SET', key, string.format('%d', v), 'PX', ttl)
  end
  return out
end
