-- POST /v3/kv/range: a linearizable read of one of 10,000 keys (written by put.lua first).
dofile(debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "common.lua")
local n = math.random(0, 9999)
request = function()
  n = (n + 7) % 10000
  return wrk.format(nil, "/v3/kv/range", nil, '{"key":"' .. KEYS[n] .. '"}')
end
