-- Stores the update, marks its id as seen and appends it to its
-- conversation's order list, in one atomic step: a resend is recognised
-- without ever producing a second entry, and no crash can leave the three
-- out of step.
--
-- KEYS: stream, seen bitmap, order list. ARGV: seen TTL s, seen bit,
-- order key ('' = none), the id tag of the stream's shard (lane.rs; the
-- order list holds entry ids), then the entry's `field value ...` list,
-- written as given (its layout is defined once, in envelope.rs
-- `NewEntry`).
if redis.call('SETBIT', KEYS[2], ARGV[2], 1) == 0 then
  redis.call('EXPIRE', KEYS[2], ARGV[1])
  local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 5))
  if ARGV[3] ~= '' then redis.call('RPUSH', KEYS[3], ARGV[4] .. id) end
  return id
end
return false
