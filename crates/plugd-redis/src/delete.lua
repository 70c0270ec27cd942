-- Remove one cache entry and its bookkeeping.
-- KEYS as in set.lua; ARGV[1] the plugin's key. Returns 1 when a live entry was removed.
local removed = redis.call('DEL', KEYS[1])
local size = redis.call('HGET', KEYS[2], ARGV[1])
if size then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('DECRBY', KEYS[4], size)
end
redis.call('ZREM', KEYS[3], ARGV[1])
return removed
