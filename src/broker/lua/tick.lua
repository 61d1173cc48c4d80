-- Renews this node's lease; re-registers its users when Redis lost them; takes the users of
-- nodes whose lease ran out offline (the caller announces them). Returns the cluster's
-- offline counters too.
-- ARGV: ns, node, now_ms, lease_ms, now_s, '1' when re-registering followed by this node's
--       users as (room, uid, name) triples, else '0'
local ns, node, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local nodes = ns .. ':chat:nodes'
redis.call('ZADD', nodes, now + tonumber(ARGV[4]), node)
local mine = ns .. ':chat:node:' .. node
local resync = 0
-- A marker field: missing means Redis lost this node's entries (or this is its first tick).
if redis.call('HSET', mine, '\0', '') == 1 then
  resync = 1
end
local vanished = {}
local function gone(room, uid, name)
  local r = room_key(ns, room)
  if went_offline(r, uid, ARGV[3]) then
    vanished[#vanished + 1] = {room, uid, name, redis.call('HLEN', r .. ':online'),
      version(ns, r, ARGV[5])}
  end
end
if ARGV[6] == '1' then
  -- Re-registering: the list is the truth about this node. Redis may have lost entries (add
  -- them back), or missed departures while this node could not reach it (take them out).
  resync = 0
  local given = {}
  for i = 7, #ARGV, 3 do
    local room, uid = ARGV[i], ARGV[i + 1]
    given[room .. '\0' .. uid] = true
    if redis.call('HSET', mine, room .. '\0' .. uid, ARGV[i + 2]) == 1 then
      local r = room_key(ns, room)
      redis.call('ZADD', r .. ':members', '+inf', uid)
      redis.call('HINCRBY', r .. ':online', uid, 1)
    end
  end
  local fields = redis.call('HGETALL', mine)
  for i = 1, #fields, 2 do
    if fields[i] ~= '\0' and not given[fields[i]] then
      redis.call('HDEL', mine, fields[i])
      local room, uid = split(fields[i])
      gone(room, uid, fields[i + 1])
    end
  end
end
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', nodes, '-inf', '(' .. ARGV[3])) do
  local key = ns .. ':chat:node:' .. dead
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    if fields[i] ~= '\0' then
      local room, uid = split(fields[i])
      gone(room, uid, fields[i + 1])
    end
  end
  redis.call('DEL', key)
  redis.call('ZREM', nodes, dead)
end
return {resync, vanished, redis.call('HGETALL', ns .. ':chat:stats')}
