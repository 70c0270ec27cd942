-- Store one cache entry within the plugin's quota, atomically for every plugd instance.
-- KEYS[1] the entry, KEYS[2] the plugin's sizes (hash key -> value bytes),
-- KEYS[3] the plugin's expiries (sorted set key by expiry in ms), KEYS[4] the plugin's byte total.
-- ARGV[1] the plugin's key, ARGV[2] the value, ARGV[3] the TTL in ms (0: none),
-- ARGV[4] the most entries, ARGV[5] the most bytes.
-- Returns 0 when stored, 1 when over the entries quota, 2 when over the bytes quota.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Expired entries leave the books before the check (Redis dropped their values already).
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, field in ipairs(expired) do
  local size = redis.call('HGET', KEYS[2], field)
  if size then
    redis.call('HDEL', KEYS[2], field)
    redis.call('DECRBY', KEYS[4], size)
  end
end
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
end
local size = string.len(ARGV[2])
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old then
  old = tonumber(old)
else
  if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[4]) then
    return 1
  end
  old = 0
end
local bytes = tonumber(redis.call('GET', KEYS[4]) or '0')
if bytes - old + size > tonumber(ARGV[5]) then
  return 2
end
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
  redis.call('ZADD', KEYS[3], now + ttl, ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[1])
end
redis.call('HSET', KEYS[2], ARGV[1], size)
redis.call('INCRBY', KEYS[4], size - old)
return 0
