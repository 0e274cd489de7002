-- The shared send budget for many sends in one call (the budget itself is
-- parts/budget.lua, put above this by scripts.rs). Used when the budget's
-- keys are in another slot than the bot's home (a sharded cluster);
-- otherwise sends are budgeted inside end_many.lua's batches.
--
-- KEYS: bot pause, then per item: its pool (global or paid), its chat's
-- timestamp, its chat's pause. ARGV per item: global interval µs, global
-- tolerance µs, chat interval µs (0 = no chat limit), chat tolerance µs.
-- Returns, per item, why (0 go and booked, 1 rate, 2 bot paused, 3 chat
-- paused) and the µs to wait.
local sends = {}
for i = 0, #ARGV / 4 - 1 do
  sends[i + 1] = { KEYS[2 + 3 * i], KEYS[3 + 3 * i], KEYS[4 + 3 * i],
    ARGV[1 + 4 * i], ARGV[2 + 4 * i], ARGV[3 + 4 * i], ARGV[4 + 4 * i] }
end
local out = {}
for _, r in ipairs(admit_sends(KEYS[1], sends)) do
  out[#out + 1] = r[1]
  out[#out + 1] = r[2]
end
return out
