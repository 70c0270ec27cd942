-- Remove one batch of a plugin's entries: the keys named in its books (never a pattern over
-- user data). KEYS[1] the sizes hash, KEYS[2] the expiries, KEYS[3] the byte total;
-- ARGV[1] the entries' key prefix (`<prefix>:cache:<plugin>:`), ARGV[2] the HSCAN cursor.
-- Returns {next cursor, entries left}; once both are 0 the books are gone too.
local scan = redis.call('HSCAN', KEYS[1], ARGV[2], 'COUNT', 500)
local fields = scan[2]
for i = 1, #fields, 2 do
  redis.call('DEL', ARGV[1] .. fields[i])
  redis.call('HDEL', KEYS[1], fields[i])
end
local left = redis.call('HLEN', KEYS[1])
if left == 0 then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
end
return {scan[1], left}
