-- Gives a lease or lock up, only if the caller still holds it (it may
-- have run out and been taken by another replica meanwhile).
--
-- KEYS: the lease or lock. ARGV: holder.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
