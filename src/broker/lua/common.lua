-- Shared by every roster script. Keys, under the namespace NS:
--   NS:chat:r:ROOM:members   zset uid -> since when away (ms); +inf while online
--   NS:chat:r:ROOM:online    hash uid -> nodes the user is connected to
--   NS:chat:r:ROOM:kept:UID  list of "MS|FRAME", oldest first
--   NS:chat:r:ROOM:v         the room's count version
--   NS:chat:node:NODE        hash "ROOM\0UID" -> name: who is connected through NODE
--   NS:chat:nodes            zset node -> lease deadline (ms)
--   NS:chat:gen              when this Redis's roster data began (s): versions restart above it
--   NS:chat:stats            hash of offline counters for the whole cluster
local function room_key(ns, room)
  return ns .. ':chat:r:' .. room
end

local function version(ns, r, now_s)
  local gen = redis.call('GET', ns .. ':chat:gen')
  if not gen then
    gen = now_s
    redis.call('SET', ns .. ':chat:gen', gen)
  end
  return {tonumber(gen), redis.call('INCR', r .. ':v')}
end

local function split(field)
  local at = string.find(field, '\0', 1, true)
  return string.sub(field, 1, at - 1), string.sub(field, at + 1)
end

-- A user's connection through one node is gone; true if it was their last anywhere.
local function went_offline(r, uid, now)
  if redis.call('HINCRBY', r .. ':online', uid, -1) > 0 then
    return false
  end
  redis.call('HDEL', r .. ':online', uid)
  redis.call('ZADD', r .. ':members', now, uid)
  return true
end
