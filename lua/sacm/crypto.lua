--- sacm.crypto: hashes, HMAC, base64, hex, random bytes and UUIDs (OpenSSL underneath).
-- Digests return raw bytes; crypto.hex() turns them into lowercase hex.
local core = require "sacm._crypto"

local M = {
  digest = core.digest,
  hmac = core.hmac,
  pbkdf2 = core.pbkdf2,
  base64_encode = core.base64_encode,
  base64_decode = core.base64_decode,
  random = core.random,
}

function M.sha1(data) return core.digest("sha1", data) end
function M.sha256(data) return core.digest("sha256", data) end
function M.sha512(data) return core.digest("sha512", data) end

function M.hex(bytes)
  return (bytes:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

--- from_hex(text) -> bytes, or nil, err
function M.from_hex(text)
  if #text % 2 ~= 0 or text:find("[^%x]") then
    return nil, require("sacm.error").new("bad-format", "not a hex string")
  end
  return (text:gsub("%x%x", function(pair) return string.char(tonumber(pair, 16)) end))
end

--- uuid() -> a random (version 4) UUID string, RFC 9562.
function M.uuid()
  local b = { core.random(16):byte(1, 16) }
  b[7] = (b[7] & 0x0f) | 0x40 -- version 4
  b[9] = (b[9] & 0x3f) | 0x80 -- variant 10xx
  return ("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x"):format(table.unpack(b))
end

return M
