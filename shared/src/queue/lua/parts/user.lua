-- A user's directory record, written with the update's "handled" mark; a
-- part (scripts.rs puts it above end_many.lua, finish.lua and apply.lua),
-- not a script of its own. Names and last_seen are replaced, first_seen
-- is set once, messages counted. The sorted sets (first and last seen)
-- and users:blocked are the caller's: end_many writes them once a batch.
--
-- first_seen is asked for only when the HSET added a field: every writer
-- sets it together with those fields, so a record that has them all has
-- it too. A returning user costs one command less than with HSETNX each
-- time.
local function record_user(key, now, first_name, username, language_code, is_message, payload)
  local added
  if payload ~= '' then
    added = redis.call('HSET', key, 'last_seen', now, 'first_name', first_name, 'username', username,
      'language_code', language_code, 'start_payload', payload)
  else
    added = redis.call('HSET', key, 'last_seen', now, 'first_name', first_name, 'username', username,
      'language_code', language_code)
  end
  if added > 0 then redis.call('HSETNX', key, 'first_seen', now) end
  if is_message == '1' then redis.call('HINCRBY', key, 'messages', 1) end
end
