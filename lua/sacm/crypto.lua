--- sacm.crypto: hashes, HMAC, base64, hex, random bytes and UUIDs (OpenSSL underneath).
-- Digests return raw bytes; crypto.hex() turns them into lowercase hex.
local core = require "sacm._crypto"

---@class sacm.crypto.Key a private key (generate_key, load_key)
---@field pem fun(self: sacm.crypto.Key): string unencrypted PKCS#8 PEM
---@field public_der fun(self: sacm.crypto.Key): string the public key, DER
---@field description fun(self: sacm.crypto.Key): string such as "EC P-256"

local M = {
  ---@type fun(name: string, data: string): string raw digest by OpenSSL name; unknown names raise
  digest = core.digest,
  ---@type fun(name: string, key: string, data: string): string raw MAC
  hmac = core.hmac,
  ---@type fun(name: string, password: string, salt: string, iterations: integer, length: integer): string
  pbkdf2 = core.pbkdf2,
  ---@type fun(bytes: string): string
  base64_encode = core.base64_encode,
  ---@type fun(text: string): string?, sacm.Error? bytes, or nil, err (bad-format)
  base64_decode = core.base64_decode,
  ---@type fun(n: integer): string n cryptographically secure random bytes
  random = core.random,
}

---@param data string
---@return string digest raw bytes
function M.sha1(data) return core.digest("sha1", data) end
---@param data string
---@return string digest raw bytes
function M.sha256(data) return core.digest("sha256", data) end
---@param data string
---@return string digest raw bytes
function M.sha512(data) return core.digest("sha512", data) end

---@param bytes string
---@return string
function M.hex(bytes)
  return (bytes:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

--- from_hex(text) -> bytes, or nil, err
---@param text string
---@return string? bytes
---@return sacm.Error? err
function M.from_hex(text)
  if #text % 2 ~= 0 or text:find("[^%x]") then
    return nil, require("sacm.error").new("bad-format", "not a hex string")
  end
  return (text:gsub("%x%x", function(pair) return string.char(tonumber(pair, 16)) end))
end

--- uuid() -> a random (version 4) UUID string, RFC 9562.
---@return string
function M.uuid()
  local b = { core.random(16):byte(1, 16) }
  b[7] = (b[7] & 0x0f) | 0x40 -- version 4
  b[9] = (b[9] & 0x3f) | 0x80 -- variant 10xx
  return ("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x"):format(table.unpack(b))
end

-- Keys, certificate requests and certificate facts (runtime/x509.c) -----------------------------
-- Loaded on first use: most scripts hash things and never touch a certificate.
local x509
local function x509_core()
  x509 = x509 or require "sacm._x509"
  return x509
end

--- generate_key([{type = "ec", curve = "P-256"} | {type = "rsa", bits = 3072}]) -> key, or nil, err.
-- A new private key, made on the threadpool (the task waits, the loop does not). The key is an
-- object: key:pem() (unencrypted PKCS#8 PEM; write it with fs.write(path, pem, {mode = 0x180})),
-- key:public_der(), key:description() ("EC P-256"). The default is EC P-256.
---@param opts? table
---@return sacm.crypto.Key? key
---@return sacm.Error? err
function M.generate_key(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("crypto.generate_key: opts must be a table", 2) end
  local kind = opts.type or "ec"
  if kind ~= "ec" and kind ~= "rsa" then
    error(("crypto.generate_key: type must be \"ec\" or \"rsa\", not %q"):format(tostring(kind)), 2)
  end
  local param = kind == "ec" and (opts.curve or "P-256") or (opts.bits or 3072)
  local task = require "sacm.task"
  local me = task._require_task("crypto.generate_key", 2)
  local waiting = true
  local ok, err = x509_core().generate_key(kind, param, function(key, e)
    if waiting then task.wake(me, key, e) end
  end)
  if ok == nil and err then return nil, err end -- the threadpool refused the work
  local key, e = task.suspend(function() waiting = false end)
  waiting = false
  return key, e
end

--- load_key(pem) -> key, or nil, err (bad-format). Unencrypted PEM (PKCS#8 or traditional).
---@param pem string
---@return sacm.crypto.Key? key
---@return sacm.Error? err
function M.load_key(pem)
  if type(pem) ~= "string" then error("crypto.load_key: pem must be a string", 2) end
  return x509_core().load_key(pem)
end

local function names_arg(what, v)
  if v == nil or type(v) == "string" then return v end
  if type(v) ~= "table" then error(("crypto.csr: %s must be a string or a list of strings"):format(what), 3) end
  for i, s in ipairs(v) do
    if type(s) ~= "string" then error(("crypto.csr: %s[%d] must be a string"):format(what, i), 3) end
  end
  return v
end

--- csr{key =, subject = {CN = ..., O = ...}, xmpp_addr = jid | {jids}, dns = name | {names}}
--   -> pem, der; or nil, err.
-- A PKCS#10 certificate signing request, signed by key with SHA-256: the JIDs go into
-- subjectAltName as id-on-xmppAddr, with extendedKeyUsage clientAuth. Subject fields: C, ST, L,
-- O, OU, CN. The private key is not in it.
---@param opts table
---@return string? pem
---@return sacm.Error? err
function M.csr(opts)
  if type(opts) ~= "table" or opts.key == nil then error("crypto.csr: needs {key = <key from generate_key>, ...}", 2) end
  if opts.subject ~= nil and type(opts.subject) ~= "table" then
    error("crypto.csr: subject must be a table such as {CN = \"collector\"}", 2)
  end
  return x509_core().csr(opts.key, {
    subject = opts.subject,
    xmpp_addr = names_arg("xmpp_addr", opts.xmpp_addr),
    dns = names_arg("dns", opts.dns),
  })
end

--- csr_info(pem_or_der) -> {subject, xmpp_addrs, signature_ok, public_der, der}, or nil, err.
---@param data string PEM or DER
---@return table? info
---@return sacm.Error? err
function M.csr_info(data)
  if type(data) ~= "string" then error("crypto.csr_info: expects a PEM or DER string", 2) end
  return x509_core().csr_info(data)
end

--- cert_info(pem_or_der) -> {subject, issuer, serial, not_before, not_after, fingerprint,
-- xmpp_addrs, der, public_der}, or nil, err. fingerprint: SHA-256 of the DER, lowercase hex;
-- times: seconds since the epoch.
---@param data string PEM or DER
---@return table? info
---@return sacm.Error? err
function M.cert_info(data)
  if type(data) ~= "string" then error("crypto.cert_info: expects a PEM or DER string", 2) end
  return x509_core().cert_info(data)
end

--- pem(der, label) -> PEM text ("CERTIFICATE", "CERTIFICATE REQUEST"), lines of 64 characters.
---@param der string
---@param label string
---@return string
function M.pem(der, label)
  local b64 = M.base64_encode(der)
  local lines = { "-----BEGIN " .. label .. "-----" }
  for i = 1, #b64, 64 do lines[#lines + 1] = b64:sub(i, i + 63) end
  lines[#lines + 1] = "-----END " .. label .. "-----"
  return table.concat(lines, "\n") .. "\n"
end

return M
