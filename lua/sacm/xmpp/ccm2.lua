--- sacm.xmpp.ccm2: Client Certificate Management 2.0 (the ccm2 ProtoXEP, as profiled in docs/protocol.md).
--
--   local cert, err = ccm2.add(conn, { name = "web1", key_file = "/etc/sacm/web1.key",
--                                      cert_file = "/etc/sacm/web1.crt" })
--   -- then: xmpp.connect{ client_cert = cert.cert_file, client_key = cert.key_file, ... }
--   for _, c in ipairs(assert(ccm2.list(conn))) do print(c.name, c.fingerprint, c.last_used) end
--   assert(ccm2.revoke(conn, cert.fingerprint))
--
-- The key pair is made here (OpenSSL, EC P-256 by default) and the private key never leaves the
-- machine: the server gets a CSR and signs it. The key file is written 0600, the certificate
-- 0644, both atomically. The server decides what the certificate says: it names the account's
-- bare JID whatever the CSR asks for, so add checks the answer (our key, our JID, in validity).
-- All calls wait (run them in a task) and return nil, err on failure; bad arguments raise.
local crypto = require "sacm.crypto"
local disco = require "sacm.xmpp.disco"
local errors = require "sacm.error"
local fs = require "sacm.fs"
local jid = require "sacm.xmpp.jid"
local st = require "sacm.xmpp.stanza"
local time = require "sacm.time"
local log = require("sacm.log").new("ccm2")

local M = {}

M.NS_ADD = "urn:xmpp:ccm2:add-cert:0"
M.NS_LIST = "urn:xmpp:ccm2:list-certs:0"
M.NS_REVOKE = "urn:xmpp:ccm2:revoke-cert:0"
M.KEY_MODE = 0x180  -- 0600: the private key is the account's credential
M.CERT_MODE = 0x1a4 -- 0644: a certificate is public

local function check_conn(conn, what)
  if type(conn) ~= "table" or type(conn.iq) ~= "function" then
    error(("ccm2.%s: the first argument must be an xmpp connection"):format(what), 3)
  end
end

--- features(conn) -> {add = bool, list = bool, revoke = bool}, or nil, err. The three features
-- are advertised separately in the disco#info of the account's server (its domain).
---@param conn sacm.xmpp.Connection
---@return {add: boolean, list: boolean, revoke: boolean}? features
---@return sacm.Error? err
function M.features(conn)
  check_conn(conn, "features")
  local info, err = disco.info(conn, conn.domain)
  if not info then return nil, err end
  return {
    add = disco.has_feature(info, M.NS_ADD),
    list = disco.has_feature(info, M.NS_LIST),
    revoke = disco.has_feature(info, M.NS_REVOKE),
  }
end

local function require_feature(conn, which, ns)
  local f, err = M.features(conn)
  if not f then return nil, err end
  if not f[which] then
    return nil, errors.new("feature-not-implemented",
      ("%s does not advertise %s (disco#info): its server has no ccm2 %s"):format(conn.domain, ns, which))
  end
  return true
end

-- The certificate facts a caller wants, from cert_info.
local function describe(info)
  return {
    fingerprint = info.fingerprint, not_before = info.not_before, not_after = info.not_after,
    subject = info.subject, issuer = info.issuer, serial = info.serial, xmpp_addrs = info.xmpp_addrs,
    pem = crypto.pem(info.der, "CERTIFICATE"),
  }
end

--- add(conn, opts) -> certificate, or nil, err.
-- opts: name (label shown by list, required), key_file and cert_file (where to write the new key
-- and certificate, required), key (an existing key object to certify instead of a new one),
-- key_type ("ec" or "rsa"), curve ("P-256"), bits, subject ({CN = ...}; default CN = the
-- account's node), xmpp_addr (the JID the CSR asks for; default the account's bare JID; the
-- server decides anyway).
-- certificate: {name, fingerprint (SHA-256 hex), not_before, not_after, subject, issuer, serial,
-- xmpp_addrs, pem, key_file, cert_file}.
-- The files are written only once the server's certificate has been checked; nothing is left
-- behind on failure. Errors: feature-not-implemented, the server's stanza errors (bad-request,
-- not-acceptable, forbidden, resource-constraint, ...), bad-format for an unusable answer.
---@param conn sacm.xmpp.Connection
---@param opts {name: string, key_file: string, cert_file: string, key?: sacm.crypto.Key, key_type?: "ec"|"rsa", curve?: string, bits?: integer, subject?: table<string, string>, xmpp_addr?: string}
---@return table? certificate name, fingerprint, not_before, not_after, subject, issuer, serial, xmpp_addrs, pem, key_file, cert_file
---@return sacm.Error? err
function M.add(conn, opts)
  check_conn(conn, "add")
  if type(opts) ~= "table" then error("ccm2.add: opts must be a table", 2) end
  for _, field in ipairs({ "name", "key_file", "cert_file" }) do
    if type(opts[field]) ~= "string" or opts[field] == "" then
      error(("ccm2.add: opts.%s must be a non-empty string"):format(field), 2)
    end
  end
  if opts.key_file == opts.cert_file then error("ccm2.add: key_file and cert_file must differ", 2) end
  local ok, err = require_feature(conn, "add", M.NS_ADD)
  if not ok then return nil, err end

  local bare = jid.bare(conn.jid)
  local key = opts.key
  if key == nil then
    key, err = crypto.generate_key({ type = opts.key_type or "ec", curve = opts.curve, bits = opts.bits })
    if not key then return nil, err end
  end
  local node = jid.split(bare)
  local csr_pem, der = crypto.csr({ key = key, subject = opts.subject or { CN = node }, xmpp_addr = opts.xmpp_addr or bare })
  if not csr_pem then return nil, der end

  local request = st.iq({ type = "set" })
    :tag("add-certificate-request", { xmlns = M.NS_ADD })
      :tag("name"):text(opts.name):up()
      :tag("x509certificate-signing-request"):text(crypto.base64_encode(der)):up()
    :up()
  local reply
  reply, err = conn:iq(request)
  if not reply then return nil, err end
  local result = reply:child("add-certificate-result", M.NS_ADD)
  local b64 = result and result:child("x509certificate", M.NS_ADD)
  local cert_der = b64 and crypto.base64_decode(b64:get_text())
  if not cert_der then
    return nil, errors.new("bad-format", "the add-cert result holds no base64 <x509certificate>")
  end
  local info, ierr = crypto.cert_info(cert_der)
  if not info then return nil, errors.new("bad-format", "the add-cert result is not a certificate: " .. tostring(ierr)) end
  -- The server's word is checked: a certificate for another key is useless, one for another JID
  -- would log in as someone else (or not at all).
  local problem
  if info.public_der ~= key:public_der() then
    problem = "it certifies a different public key than the one in our CSR"
  elseif #info.xmpp_addrs ~= 1 or info.xmpp_addrs[1] ~= bare then
    problem = ("it names %s, not this account (%s)"):format(table.concat(info.xmpp_addrs, ", "), bare)
  elseif info.not_after <= os.time() then
    problem = "it has expired already (" .. time.format(info.not_after, 0) .. ")"
  end
  if problem then
    log.error("the certificate %s from %s is unusable: %s; revoking it", info.fingerprint, conn.domain, problem)
    M.revoke(conn, info.fingerprint)
    return nil, errors.new("bad-format", "the server's certificate is unusable: " .. problem)
  end
  -- the key first: a certificate file without its key is useless, the reverse is harmless; the
  -- directories made on the way are 0700
  ok, err = fs.private_file(opts.key_file, { create = false })
  if ok then ok, err = fs.write(opts.key_file, key:pem(), { mode = M.KEY_MODE }) end
  if ok then ok, err = fs.write(opts.cert_file, crypto.pem(cert_der, "CERTIFICATE"), { mode = M.CERT_MODE }) end
  if not ok then
    log.error("writing %s / %s failed (%s); revoking the new certificate %s", opts.key_file, opts.cert_file,
      tostring(err), info.fingerprint)
    M.revoke(conn, info.fingerprint)
    return nil, err
  end
  local cert = describe(info)
  cert.name, cert.key_file, cert.cert_file = opts.name, opts.key_file, opts.cert_file
  log.info("%s: certificate %s (%s) valid until %s, key in %s", bare, cert.fingerprint, opts.name,
    time.format(cert.not_after, 0), opts.key_file)
  return cert
end

--- list(conn) -> list of {name, fingerprint, not_before, not_after, last_used (seconds since the
-- epoch, nil if never used), resources (the sessions logged in with it now), subject, issuer,
-- serial, xmpp_addrs, pem}, in the server's order (oldest first), or nil, err.
---@param conn sacm.xmpp.Connection
---@return table[]? certificates name, fingerprint, not_before, not_after, last_used, resources, ...
---@return sacm.Error? err
function M.list(conn)
  check_conn(conn, "list")
  local ok, err = require_feature(conn, "list", M.NS_LIST)
  if not ok then return nil, err end
  local reply
  reply, err = conn:iq(st.iq({ type = "get" }):tag("list-certificates-request", { xmlns = M.NS_LIST }):up())
  if not reply then return nil, err end
  local wrapper = reply:child("list-of-certificates", M.NS_LIST)
  if not wrapper then return nil, errors.new("bad-format", "the list-certs result holds no <list-of-certificates>") end
  local out = {}
  for item in wrapper:children("x509certificate", M.NS_LIST) do
    local der_el = item:child("x509cert", M.NS_LIST)
    local der = der_el and crypto.base64_decode(der_el:get_text())
    local info = der and crypto.cert_info(der)
    if not info then
      log.warn("list-certs from %s: an entry without a readable <x509cert> was skipped", conn.domain)
    else
      local c = describe(info)
      local name_el = item:child("name", M.NS_LIST)
      c.name = name_el and name_el:get_text() or ""
      if item.attr["last-used"] then
        c.last_used = time.parse(item.attr["last-used"])
        if not c.last_used then log.warn("list-certs: unreadable last-used %q", item.attr["last-used"]) end
      end
      c.resources = {}
      local users = item:child("users", M.NS_LIST)
      if users then
        for r in users:children("resource", M.NS_LIST) do c.resources[#c.resources + 1] = r:get_text() end
      end
      out[#out + 1] = c
    end
  end
  return out
end

--- revoke(conn, fingerprint) -> true, or nil, err (item-not-found for a fingerprint the account
-- does not have). fingerprint: SHA-256 of the DER certificate in hex (colons and case ignored).
-- The server closes the sessions that logged in with the certificate, this one included.
---@param conn sacm.xmpp.Connection
---@param fingerprint string SHA-256 of the DER, hex (colons and case ignored)
---@return true? ok
---@return sacm.Error? err item-not-found
function M.revoke(conn, fingerprint)
  check_conn(conn, "revoke")
  if type(fingerprint) ~= "string" then error("ccm2.revoke: fingerprint must be a hex string", 2) end
  local fp = fingerprint:gsub("[:%s]", ""):lower()
  if not fp:match("^" .. ("%x"):rep(64) .. "$") then
    error("ccm2.revoke: fingerprint must be 64 hex digits (SHA-256), got " .. fingerprint, 2)
  end
  local ok, err = require_feature(conn, "revoke", M.NS_REVOKE)
  if not ok then return nil, err end
  local reply
  reply, err = conn:iq(st.iq({ type = "set" })
    :tag("revoke-certificate", { xmlns = M.NS_REVOKE })
      :tag("fingerprint", { hash = "sha-256" }):text(fp):up()
    :up())
  if not reply then return nil, err end
  return true
end

--- needs_renewal(cert_file [, fraction]) -> boolean, info; or nil, err. True once less than
-- fraction (default 1/3) of the certificate's lifetime is left, or when it has expired.
---@param cert_file string
---@param fraction? number of the lifetime (1/3)
---@return boolean? renew
---@return table|sacm.Error info (crypto.cert_info's), or err
function M.needs_renewal(cert_file, fraction)
  local pem, err = fs.read(cert_file)
  if not pem then return nil, err end
  local info, ierr = crypto.cert_info(pem)
  if not info then return nil, ierr end
  local left = info.not_after - os.time()
  return left < (info.not_after - info.not_before) * (fraction or 1 / 3), info
end

return M
