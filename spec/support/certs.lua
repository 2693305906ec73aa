--- spec/support/certs.lua: test certificates made with the openssl command.
--
--   local certs = require "support.certs"
--   local ca = certs.ca(dir, "ca", "sacmrun test CA")            -- {cert, key, cnf}
--   local srv = certs.server(ca, dir .. "/server", { dns = { "localhost" }, ips = { "127.0.0.1" } })
--   local cli = certs.client(ca, dir .. "/alice", { cn = "alice", xmpp = { "alice@localhost" } })
--
-- Keys are P-256; certificates are valid for opts.days (default certs.DAYS) days. Every file is
-- written into directories the caller made (and removes). Each openssl run gets a complete
-- config of its own, so a system-wide OPENSSL_CONF cannot change the certificates. Waiting
-- calls: run in a task.
local proc = require "sacm.proc"
local fs = require "sacm.fs"
local crypto = require "sacm.crypto"

local M = {}

M.DAYS = 2

local function run(argv, cnf, what)
  local r, err = proc.run(argv, { timeout = 20, env = { OPENSSL_CONF = cnf } })
  if not r then error(("%s: %s"):format(what, tostring(err)), 3) end
  if not r.ok then
    error(("%s: %s exited with %s\n%s%s"):format(what, argv[1], r.signal or r.code, r.stdout, r.stderr), 3)
  end
  return r
end

local function write(path, text)
  local ok, err = fs.write(path, text)
  if not ok then error(("writing %s: %s"):format(path, tostring(err)), 3) end
end

--- escape(s, what) -> s quoted for an OpenSSL config value (# starts a comment, $ a variable).
function M.escape(s, what)
  if s:find("[%c]") then error(("%s must not contain control characters: %q"):format(what, s), 4) end
  return (s:gsub("[\\#$\"']", "\\%0"))
end

--- subject_escape(s) -> s quoted for one value of openssl's -subj /CN=...
function M.subject_escape(s)
  return (s:gsub("[/=+,\\]", "\\%0"))
end

M.CNF_HEAD = [[
# written by spec/support/certs.lua
[req]
distinguished_name = dn
[dn]
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
]]

local function serial()
  return "0x1" .. crypto.hex(crypto.random(8)) -- positive, 68 bits, distinct per certificate
end

--- issue(cnf, section, subject, cert, key [, ca [, days]]): openssl req makes a new P-256 key
-- and a certificate with the extensions of `section` in the config file `cnf`; signed by ca (a
-- {cert, key} pair) or self-signed.
function M.issue(cnf, section, subject, cert, key, ca, days)
  local argv = {
    "openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
    "-nodes", "-keyout", key, "-out", cert, "-days", tostring(days or M.DAYS), "-set_serial", serial(),
    "-subj", subject, "-config", cnf, "-extensions", section,
  }
  if ca then
    argv[#argv + 1] = "-CA"; argv[#argv + 1] = ca.cert
    argv[#argv + 1] = "-CAkey"; argv[#argv + 1] = ca.key
  end
  run(argv, cnf, "issuing " .. cert)
end

--- ca(dir, name, cn [, days]) -> {cert = dir/name.crt, key = dir/name.key, cnf = dir/name.cnf}
function M.ca(dir, name, cn, days)
  local ca = { cert = dir .. "/" .. name .. ".crt", key = dir .. "/" .. name .. ".key", cnf = dir .. "/" .. name .. ".cnf" }
  write(ca.cnf, M.CNF_HEAD)
  M.issue(ca.cnf, "ca_ext", "/CN=" .. M.subject_escape(cn), ca.cert, ca.key, nil, days)
  return ca
end

local function san_lines(opts)
  local lines = {}
  local function add(kind, list, what)
    for i, v in ipairs(list or {}) do
      lines[#lines + 1] = ("%s.%d = %s"):format(kind, i, M.escape(v, what))
    end
  end
  add("DNS", opts.dns, "a DNS name")
  add("IP", opts.ips, "an IP address")
  add("email", opts.emails, "an email address")
  add("URI", opts.uris, "a URI")
  for i, jid in ipairs(opts.xmpp or {}) do
    -- id-on-xmppAddr (RFC 6120 13.7.1.4), how XMPP names a certificate's owner
    lines[#lines + 1] = ("otherName.%d = 1.3.6.1.5.5.7.8.5;UTF8:%s"):format(i, M.escape(jid, "a JID"))
  end
  return lines
end

local function leaf(ca, base, opts, usage)
  local sans = san_lines(opts)
  local lines = {
    M.CNF_HEAD,
    "[leaf_ext]",
    "basicConstraints = critical,CA:FALSE",
    "keyUsage = critical,digitalSignature,keyAgreement",
    "extendedKeyUsage = " .. usage,
    "subjectKeyIdentifier = hash",
  }
  if ca then lines[#lines + 1] = "authorityKeyIdentifier = keyid" end
  if #sans > 0 then
    lines[#lines + 1] = "subjectAltName = @leaf_san"
    lines[#lines + 1] = "[leaf_san]"
    for _, l in ipairs(sans) do lines[#lines + 1] = l end
  end
  local cnf = base .. ".cnf"
  write(cnf, table.concat(lines, "\n") .. "\n")
  local pair = { cert = base .. ".crt", key = base .. ".key" }
  local cn = opts.cn or (opts.dns and opts.dns[1]) or (opts.xmpp and opts.xmpp[1]) or "sacmrun test"
  M.issue(cnf, "leaf_ext", "/CN=" .. M.subject_escape(cn), pair.cert, pair.key, ca, opts.days)
  return pair
end

--- server(ca, base, opts) -> {cert = base.crt, key = base.key}: extendedKeyUsage serverAuth.
-- opts: cn (default the first DNS name), dns, ips (subjectAltName lists), days.
function M.server(ca, base, opts)
  return leaf(ca, base, opts or {}, "serverAuth")
end

--- client(ca, base, opts) -> {cert = base.crt, key = base.key}: extendedKeyUsage clientAuth.
-- opts: cn, dns, ips, emails, uris, xmpp (JIDs as otherName id-on-xmppAddr), days.
function M.client(ca, base, opts)
  return leaf(ca, base, opts or {}, "clientAuth")
end

return M
