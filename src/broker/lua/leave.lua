-- A user left the room on purpose: no longer a member, nothing more kept, on every node.
-- ARGV: ns, room, uid, now_s
local ns, room, uid = ARGV[1], ARGV[2], ARGV[3]
local r = room_key(ns, room)
redis.call('ZREM', r .. ':members', uid)
redis.call('HDEL', r .. ':online', uid)
local key = r .. ':kept:' .. uid
redis.call('HINCRBY', ns .. ':chat:stats', 'waiting', 0 - redis.call('LLEN', key))
redis.call('DEL', key)
for _, node in ipairs(redis.call('ZRANGE', ns .. ':chat:nodes', 0, -1)) do
  redis.call('HDEL', ns .. ':chat:node:' .. node, room .. '\0' .. uid)
end
return {redis.call('HLEN', r .. ':online'), version(ns, r, ARGV[4])}
