--- spec/support/harness.lua: what the private test servers have in common: a private directory,
-- free loopback ports, a test PKI made with the openssl command, and running helper programs.
--
-- Used by spec/support/ejabberd.lua. (spec/support/prosody.lua predates it and has its own copy
-- of the same pieces.) Waiting calls must run in a task. Failures raise: in test support a
-- server that cannot be set up is a failed test.
local proc = require "sacm.proc"
local fs = require "sacm.fs"
local crypto = require "sacm.crypto"

local M = {}

M.PORT_RANGE = { 20000, 32767 } -- below Linux's default ephemeral range (32768-60999)
M.CERT_DAYS = 2
M.SETPRIV = "/usr/bin/setpriv" -- util-linux (Essential in Debian): --pdeathsig

function M.keep_dirs()
  local v = os.getenv("SACMRUN_KEEP_TEST_DIRS")
  return v ~= nil and v ~= "" and v ~= "0"
end

--- note(tag, fmt, ...): a line on stderr, "[support.TAG] ..."
function M.note(tag, fmt, ...)
  io.stderr:write("[support.", tag, "] ", fmt:format(...), "\n")
  io.stderr:flush()
end

--- run(argv, what [, opts]) -> result of proc.run; raises with the output if it fails.
function M.run(argv, what, opts)
  opts = opts or {}
  if opts.timeout == nil then opts.timeout = 20 end
  local r, err = proc.run(argv, opts)
  if not r then error(("%s: %s"):format(what, tostring(err)), 2) end
  if not r.ok then
    error(("%s: %s exited with %s\n%s%s"):format(what, argv[1], r.signal or r.code, r.stdout, r.stderr), 2)
  end
  return r
end

function M.must(ok, err, what)
  if not ok then error(("%s: %s"):format(what, tostring(err)), 2) end
  return ok
end

--- tail(text [, lines]) -> the last lines of text (default 30)
function M.tail(text, lines)
  lines = lines or 30
  local all = {}
  for line in (text or ""):gmatch("[^\n]*\n?") do
    if line ~= "" then all[#all + 1] = line end
  end
  return table.concat(all, "", math.max(1, #all - lines + 1))
end

function M.random_hex(bytes)
  return crypto.hex(crypto.random(bytes))
end

-- From the CSPRNG: busted seeds math.random with the time, so two runs started in the same
-- second would otherwise try the same ports.
local function random_int(lo, hi)
  local n = string.unpack("<I4", crypto.random(4))
  return lo + n % (hi - lo + 1)
end

--- private_dir(prefix) -> a new directory $TMPDIR/PREFIX-XXXXXXXXXXXX (or /tmp/...), mode 0700
function M.private_dir(prefix)
  local base = os.getenv("TMPDIR") or "/tmp"
  if base:sub(1, 1) ~= "/" then error("TMPDIR must be an absolute path", 2) end
  base = base:gsub("/+$", "")
  for _ = 1, 10 do
    local candidate = base .. "/" .. prefix .. "-" .. M.random_hex(6)
    local ok, err = fs.mkdir(candidate, { mode = tonumber("700", 8) })
    if ok then return candidate end
    if err.condition ~= "EEXIST" then error(tostring(err), 2) end
  end
  error("could not create a directory in " .. base, 2)
end

function M.remove_tree(dir)
  M.run({ "rm", "-rf", "--", dir }, "removing " .. dir)
end

---------------------------------------------------------------------------- ports
-- {port = true} for every local TCP port in use (any state, IPv4 and IPv6).
function M.used_ports()
  local used = {}
  for _, file in ipairs({ "/proc/net/tcp", "/proc/net/tcp6" }) do
    local text = fs.read(file)
    if text then
      for port in text:gmatch("\n%s*%d+:%s+%x+:(%x+)") do used[tonumber(port, 16)] = true end
    end
  end
  return used
end

--- listening(port) -> whether a socket listens on 127.0.0.1:port (or the IPv4 wildcard)
function M.listening(port)
  local text = fs.read("/proc/net/tcp")
  if not text then return false end
  for addr, p, state in text:gmatch("\n%s*%d+:%s+(%x+):(%x+)%s+%x+:%x+%s+(%x+)") do
    if state == "0A" and tonumber(p, 16) == port and (addr == "0100007F" or addr == "00000000") then
      return true
    end
  end
  return false
end

--- listeners(pid) -> list of {address = "127.0.0.1" | hex, port = n} the process listens on
-- (its socket descriptors matched against /proc/net/tcp and tcp6 by inode).
function M.listeners(pid)
  local inodes = {}
  -- find(1) (findutils is Essential) reads the descriptor links; sacm.fs has no readlink
  local r = M.run({ "find", "/proc/" .. pid .. "/fd", "-lname", "socket:*", "-printf", "%l\\n" }, "listing sockets")
  for inode in r.stdout:gmatch("socket:%[(%d+)%]") do inodes[inode] = true end
  local found = {}
  for _, file in ipairs({ "/proc/net/tcp", "/proc/net/tcp6" }) do
    local text = fs.read(file) or ""
    for line in text:gmatch("[^\n]+") do
      local addr, p, state, inode = line:match("^%s*%d+:%s+(%x+):(%x+)%s+%x+:%x+%s+(%x+)%s+%S+%s+%S+%s+%S+%s+%S+%s+%S+%s+(%d+)")
      if state == "0A" and inodes[inode] then
        found[#found + 1] = { address = addr == "0100007F" and "127.0.0.1" or addr, port = tonumber(p, 16) }
      end
    end
  end
  return found
end

--- pick_port(avoid) -> a port in PORT_RANGE that no socket uses and that is not in avoid
function M.pick_port(avoid)
  local used = M.used_ports()
  for _ = 1, 200 do
    local port = random_int(M.PORT_RANGE[1], M.PORT_RANGE[2])
    if not used[port] and not avoid[port] then return port end
  end
  error("no free port found in " .. table.concat(M.PORT_RANGE, "-"))
end

---------------------------------------------------------------------------- certificates
-- OpenSSL config values: # starts a comment and $ a variable unless escaped.
function M.cnf_escape(s, what)
  if s:find("[%c]") then error(("%s must not contain control characters: %q"):format(what, s), 3) end
  return (s:gsub("[\\#$\"']", "\\%0"))
end

local function subj_escape(s)
  return (s:gsub("[/=+,\\]", "\\%0"))
end

M.CNF_HEAD = [[
# written by spec/support/harness.lua
[req]
distinguished_name = dn
[dn]
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
]]

--- issue(cnf, section, cn, cert, key [, ca]): a new P-256 key and a certificate with the
-- extensions of `section` in the config file `cnf`; signed by ca ({cert, key}) or self-signed.
function M.issue(cnf, section, cn, cert, key, ca)
  local argv = {
    "openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
    "-nodes", "-keyout", key, "-out", cert, "-days", tostring(M.CERT_DAYS),
    "-set_serial", "0x1" .. M.random_hex(8), -- positive, 68 bits, distinct per certificate
    "-subj", "/CN=" .. subj_escape(cn), "-config", cnf, "-extensions", section,
  }
  if ca then
    argv[#argv + 1] = "-CA"; argv[#argv + 1] = ca.cert
    argv[#argv + 1] = "-CAkey"; argv[#argv + 1] = ca.key
  end
  -- the config given is complete: a system-wide OPENSSL_CONF must not change the certificates
  M.run(argv, "issuing " .. cert, { env = { OPENSSL_CONF = cnf } })
end

--- make_ca(dir, name, cn) -> {cert, key, cnf}
function M.make_ca(dir, name, cn)
  local ca = { cert = dir .. "/" .. name .. ".crt", key = dir .. "/" .. name .. ".key", cnf = dir .. "/" .. name .. ".cnf" }
  M.must(fs.write(ca.cnf, M.CNF_HEAD), nil, "writing " .. ca.cnf)
  M.issue(ca.cnf, "ca_ext", cn, ca.cert, ca.key, nil)
  return ca
end

--- server_cert(dir, ca, names) -> {cert, key}: serverAuth, subjectAltName DNS:names
function M.server_cert(dir, ca, names)
  local dns = {}
  for i, n in ipairs(names) do dns[i] = "DNS:" .. M.cnf_escape(n, "a domain") end
  local cnf = dir .. "/server.cnf"
  M.must(fs.write(cnf, M.CNF_HEAD .. table.concat({
    "[server_ext]",
    "basicConstraints = critical,CA:FALSE",
    "keyUsage = critical,digitalSignature,keyAgreement",
    "extendedKeyUsage = serverAuth",
    "subjectKeyIdentifier = hash",
    "authorityKeyIdentifier = keyid",
    "subjectAltName = " .. table.concat(dns, ","),
  }, "\n") .. "\n"), nil, "writing " .. cnf)
  local pair = { cert = dir .. "/server.crt", key = dir .. "/server.key" }
  M.issue(cnf, "server_ext", names[1], pair.cert, pair.key, ca)
  return pair
end

--- client_cert(base, ca, jids) -> {cert, key}: clientAuth, the JIDs in subjectAltName otherName
-- id-on-xmppAddr (1.3.6.1.5.5.7.8.5, UTF8String); files BASE.crt, BASE.key
function M.client_cert(base, ca, jids)
  local lines = {
    M.CNF_HEAD,
    "[client_ext]",
    "basicConstraints = critical,CA:FALSE",
    "keyUsage = critical,digitalSignature,keyAgreement",
    "extendedKeyUsage = clientAuth",
    "subjectAltName = @client_san",
    "[client_san]",
  }
  for i, j in ipairs(jids) do
    lines[#lines + 1] = ("otherName.%d = 1.3.6.1.5.5.7.8.5;UTF8:%s"):format(i, M.cnf_escape(j, "a JID"))
  end
  local cnf = base .. ".cnf"
  M.must(fs.write(cnf, table.concat(lines, "\n") .. "\n"), nil, "writing " .. cnf)
  local pair = { cert = base .. ".crt", key = base .. ".key" }
  M.issue(cnf, "client_ext", jids[1], pair.cert, pair.key, ca)
  return pair
end

return M
