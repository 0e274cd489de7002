-- Stores the update, marks its id as seen and appends it to its
-- conversation's order list, in one atomic step: a resend is recognised
-- without ever producing a second entry, and no crash can leave the three
-- out of step.
--
-- KEYS: stream, seen bitmap, order list. ARGV: seen TTL s, update id,
-- received at ms, order key ('' = none), update, seen bit.
if redis.call('SETBIT', KEYS[2], ARGV[6], 1) == 0 then
  redis.call('EXPIRE', KEYS[2], ARGV[1])
  local id = redis.call('XADD', KEYS[1], '*', 'update_id', ARGV[2], 'received_at', ARGV[3], 'key', ARGV[4], 'update', ARGV[5])
  if ARGV[4] ~= '' then redis.call('RPUSH', KEYS[3], id) end
  return id
end
return false
