-- Keeps a frame for every member with no connection anywhere; returns them.
-- ARGV: ns, room, now_ms, cutoff_ms (memberships away since before it end), expire_ms (a
--       backstop for lists of rooms that fall silent), limit, frame
local ns, room, now = ARGV[1], ARGV[2], ARGV[3]
local r = room_key(ns, room)
local limit = tonumber(ARGV[6])
if limit == 0 then
  return {{}, 0}
end
local stats = ns .. ':chat:stats'
-- Memberships away longer than the retention end, with what was kept for them.
for _, uid in ipairs(redis.call('ZRANGEBYSCORE', r .. ':members', '-inf', '(' .. ARGV[4])) do
  local key = r .. ':kept:' .. uid
  local n = redis.call('LLEN', key)
  if n > 0 then
    redis.call('DEL', key)
    redis.call('HINCRBY', stats, 'waiting', 0 - n)
    redis.call('HINCRBY', stats, 'dropped_expired', n)
  end
end
redis.call('ZREMRANGEBYSCORE', r .. ':members', '-inf', '(' .. ARGV[4])
local away = redis.call('ZRANGEBYSCORE', r .. ':members', '-inf', '(+inf')
local dropped = 0
for _, uid in ipairs(away) do
  local key = r .. ':kept:' .. uid
  if redis.call('RPUSH', key, now .. '|' .. ARGV[7]) > limit then
    redis.call('LPOP', key)
    dropped = dropped + 1
  end
  redis.call('PEXPIRE', key, ARGV[5])
end
redis.call('HINCRBY', stats, 'kept', #away)
redis.call('HINCRBY', stats, 'dropped_full', dropped)
redis.call('HINCRBY', stats, 'waiting', #away - dropped)
return {away, dropped}
