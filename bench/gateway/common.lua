-- Shared by put.lua and range.lua: 10,000 keys ("key000000" ...) as base64, for etcd's
-- JSON gateway (bytes fields are base64 in proto3 JSON).
local alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
function b64(data)
  return ((data:gsub('.', function(x)
    local r, byte = '', x:byte()
    for i = 8, 1, -1 do r = r .. (byte % 2 ^ i - byte % 2 ^ (i - 1) > 0 and '1' or '0') end
    return r
  end) .. '0000'):gsub('%d%d%d?%d?%d?%d?', function(x)
    if #x < 6 then return '' end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == '1' and 2 ^ (6 - i) or 0) end
    return alphabet:sub(c + 1, c + 1)
  end) .. ({ '', '==', '=' })[#data % 3 + 1])
end

KEYS = {}
for i = 0, 9999 do KEYS[i] = b64(string.format("key%06d", i)) end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
