-- A user's first connection through this node entered the room: take what was kept.
-- ARGV: ns, room, uid, name, node, now_ms, cutoff_ms (older kept copies expired), now_s,
--       lease_ms
local ns, room, uid, name, node = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local r = room_key(ns, room)
-- The node holds a lease from its first user on, even before its first tick: if it dies
-- at once, its users still go offline when the lease ends.
redis.call('ZADD', ns .. ':chat:nodes', 'NX', tonumber(ARGV[6]) + tonumber(ARGV[9]), node)
redis.call('ZADD', r .. ':members', '+inf', uid)
if redis.call('HSET', ns .. ':chat:node:' .. node, room .. '\0' .. uid, name) == 1 then
  redis.call('HINCRBY', r .. ':online', uid, 1)
end
local key = r .. ':kept:' .. uid
local frames = redis.call('LRANGE', key, 0, -1)
redis.call('DEL', key)
local kept, expired, cutoff = {}, 0, tonumber(ARGV[7])
for _, f in ipairs(frames) do
  local at = string.find(f, '|', 1, true)
  if tonumber(string.sub(f, 1, at - 1)) > cutoff then
    kept[#kept + 1] = string.sub(f, at + 1)
  else
    expired = expired + 1
  end
end
local stats = ns .. ':chat:stats'
redis.call('HINCRBY', stats, 'delivered', #kept)
redis.call('HINCRBY', stats, 'dropped_expired', expired)
redis.call('HINCRBY', stats, 'waiting', 0 - #frames)
return {redis.call('HLEN', r .. ':online'), version(ns, r, ARGV[8]), kept}
