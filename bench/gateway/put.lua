-- POST /v3/kv/put: keys in turn over 10,000, 255-byte values.
dofile(debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "common.lua")
local value = b64(string.rep("x", 255))
local n = math.random(0, 9999)
request = function()
  n = (n + 1) % 10000
  return wrk.format(nil, "/v3/kv/put", nil, '{"key":"' .. KEYS[n] .. '","value":"' .. value .. '"}')
end
