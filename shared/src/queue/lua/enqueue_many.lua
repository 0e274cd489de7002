-- Stores updates: for each, marks its id as seen, adds the entry and
-- appends it to its conversation's order list, in one atomic step - a
-- resend is recognised without ever producing a second entry, and no crash
-- can leave the three out of step. The ingress's requests that arrive
-- together are stored by one call (group commit); a quiet ingress sends
-- batches of one.
--
-- KEYS: per item: stream, seen bitmap, order list. ARGV: seen TTL s, then
-- per item: seen bit, order key ('' = none), the id tag of the stream's
-- shard (lane.rs; the order list holds entry ids), the number of field
-- args, then the entry's `field value ...` list, written as given (its
-- layout is defined once, in envelope.rs `NewEntry`).
-- An entry its conversation's list was empty for is written with one more
-- field, `first` = 1 (ahead of the others; readers go by name): it is
-- its chat's head from now until it ends (a head leaves the list only by
-- ending), so the worker that reads it first can run it without asking
-- for the head.
-- Returns per item the new entry's stream id, or '' for a duplicate.
local ttl = ARGV[1]
local out = {}
local expiring = {}
local a = 2
for i = 1, #KEYS / 3 do
  local stream, seen, order = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local nf = tonumber(ARGV[a + 3])
  local id = ''
  if redis.call('SETBIT', seen, ARGV[a], 1) == 0 then
    if not expiring[seen] then
      redis.call('EXPIRE', seen, ttl)
      expiring[seen] = true
    end
    if ARGV[a + 1] ~= '' then
      -- The flag goes in front: the fields are then passed straight from
      -- ARGV, never copied into a table first.
      if redis.call('LLEN', order) == 0 then
        id = redis.call('XADD', stream, '*', 'first', '1', unpack(ARGV, a + 4, a + 3 + nf))
      else
        id = redis.call('XADD', stream, '*', unpack(ARGV, a + 4, a + 3 + nf))
      end
      redis.call('RPUSH', order, ARGV[a + 2] .. id)
    else
      id = redis.call('XADD', stream, '*', unpack(ARGV, a + 4, a + 3 + nf))
    end
  end
  out[i] = id
  a = a + 4 + nf
end
return out
