-- Takes the lease if free or renews it if the holder has it: exactly one
-- poller across replicas, and a dead one's lease simply runs out.
--
-- KEYS: the lease. ARGV: holder, time to live ms. 1 = held by the caller.
local v = redis.call('GET', KEYS[1])
if v == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
