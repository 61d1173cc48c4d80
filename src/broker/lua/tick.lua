-- Renews this node's lease; re-registers its users when Redis lost them; takes the users of
-- nodes whose lease ran out offline (the caller announces them). Returns the cluster's
-- offline counters too.
-- ARGV: ns, node, now_ms, lease_ms, now_s, then (room, uid, name) triples when re-registering
local ns, node, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local nodes = ns .. ':chat:nodes'
redis.call('ZADD', nodes, now + tonumber(ARGV[4]), node)
local mine = ns .. ':chat:node:' .. node
local resync = 0
-- A marker field: missing means Redis lost this node's entries (or this is its first tick).
if redis.call('HSET', mine, '\0', '') == 1 then
  resync = 1
end
if #ARGV > 5 then
  resync = 0
  for i = 6, #ARGV, 3 do
    local room, uid = ARGV[i], ARGV[i + 1]
    if redis.call('HSET', mine, room .. '\0' .. uid, ARGV[i + 2]) == 1 then
      local r = room_key(ns, room)
      redis.call('ZADD', r .. ':members', '+inf', uid)
      redis.call('HINCRBY', r .. ':online', uid, 1)
    end
  end
end
local vanished = {}
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', nodes, '-inf', '(' .. ARGV[3])) do
  local key = ns .. ':chat:node:' .. dead
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    if fields[i] ~= '\0' then
      local room, uid = split(fields[i])
      local r = room_key(ns, room)
      if went_offline(r, uid, ARGV[3]) then
        vanished[#vanished + 1] = {room, uid, fields[i + 1], redis.call('HLEN', r .. ':online'),
          version(ns, r, ARGV[5])}
      end
    end
  end
  redis.call('DEL', key)
  redis.call('ZREM', nodes, dead)
end
return {resync, vanished, redis.call('HGETALL', ns .. ':chat:stats')}
