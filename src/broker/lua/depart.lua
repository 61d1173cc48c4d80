-- A user's last connection through this node left the room.
-- ARGV: ns, room, uid, node, now_ms, now_s
local ns, room, uid = ARGV[1], ARGV[2], ARGV[3]
local r = room_key(ns, room)
local gone = 0
-- Nothing to undo if the node was reaped meanwhile, or the user left on purpose.
if redis.call('HDEL', ns .. ':chat:node:' .. ARGV[4], room .. '\0' .. uid) == 1 then
  if went_offline(r, uid, ARGV[5]) then
    gone = 1
  end
end
return {redis.call('HLEN', r .. ':online'), version(ns, r, ARGV[6]), gone}
