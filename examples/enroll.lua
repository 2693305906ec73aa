-- Enrolls a grid component's certificate through ccm2, renews it, lists and revokes certificates.
-- docs/deploy.md ("Enrolling components") tells the whole story; in short:
--
--   # on the XMPP server, the administrator (prints jid=, password=, expires=):
--   prosodyctl mod_sacm_ccm2 enroll collector-web1@grid.example --expires 1h
--   # on the endpoint, once, with that password (from a file or the environment, never argv):
--   SACM_ENROLL_PASSWORD=... sacmrun examples/enroll.lua enroll --jid collector-web1@grid.example \
--       --cafile /etc/sacm/ca.pem --key /etc/sacm/collector.key --cert /etc/sacm/collector.crt
--   # from cron, daily: renews once less than a third of the lifetime is left (EXTERNAL login)
--   sacmrun examples/enroll.lua renew --cafile /etc/sacm/ca.pem --key /etc/sacm/collector.key \
--       --cert /etc/sacm/collector.crt
--   sacmrun examples/enroll.lua list   --cafile ... --key ... --cert ...
--   sacmrun examples/enroll.lua revoke FINGERPRINT --cafile ... --key ... --cert ...
--
-- Options: --jid (enroll only; later the certificate names it), --password-file FILE (else
-- $SACM_ENROLL_PASSWORD), --host/--port (default: the JID's domain, 5222), --cafile (the CA of
-- the server's TLS certificate), --key/--cert (the files; the key is written 0600), --name (the
-- label list shows; default the host name), --force (renew now). Exit status 0 on success, 1 on
-- failure with the reason on stderr, 2 for a usage error.
local ccm2 = require "sacm.xmpp.ccm2"
local xmpp = require "sacm.xmpp"
local fs = require "sacm.fs"
local time = require "sacm.time"

local USAGE = [==[
usage: sacmrun examples/enroll.lua enroll --jid JID --key FILE --cert FILE [--cafile FILE] [--password-file FILE] [--name LABEL]
       sacmrun examples/enroll.lua renew  --key FILE --cert FILE [--cafile FILE] [--force]
       sacmrun examples/enroll.lua list   --key FILE --cert FILE [--cafile FILE]
       sacmrun examples/enroll.lua revoke FINGERPRINT --key FILE --cert FILE [--cafile FILE]
common: [--host HOST] [--port PORT]]==]

local function usage(why)
  io.stderr:write("enroll.lua: ", why, "\n", USAGE, "\n")
  os.exit(2)
end

local function fail(fmt, ...)
  io.stderr:write("enroll.lua: ", fmt:format(...), "\n")
  os.exit(1)
end

local VALUED = { jid = true, key = true, cert = true, cafile = true, ["password-file"] = true, name = true,
  host = true, port = true }
local opts, positional = {}, {}
do
  local i = 1
  while arg[i] do
    local a = arg[i]
    local flag = a:match("^%-%-(.+)$")
    if flag == "help" or a == "-h" then
      io.stdout:write(USAGE, "\n")
      os.exit(0)
    elseif flag == "force" then
      opts.force = true
    elseif flag and VALUED[flag] then
      if not arg[i + 1] then usage("--" .. flag .. " needs a value") end
      opts[flag] = arg[i + 1]
      i = i + 1
    elseif flag then
      usage("unknown option --" .. flag)
    else
      positional[#positional + 1] = a
    end
    i = i + 1
  end
end
local command = positional[1]
if not command then usage("no command") end
if not opts.key or not opts.cert then usage("--key and --cert are required") end
local port = opts.port and math.tointeger(tonumber(opts.port))
if opts.port and not port then usage("--port must be a number") end

local function hostname()
  local name = fs.read("/etc/hostname")
  return name and name:gsub("%s+$", "") or "sacmrun"
end

-- the common connection options
local function connection(extra)
  local o = { host = opts.host, port = port, cafile = opts.cafile, reconnect = false, resource = "ccm2" }
  for k, v in pairs(extra) do o[k] = v end
  return o
end

local function with_certificate()
  local conn, err = xmpp.connect(connection({ client_cert = opts.cert, client_key = opts.key }))
  if not conn then
    fail("logging in with the certificate %s (SASL EXTERNAL) failed: %s. If it has expired or was "
      .. "revoked, have the administrator enroll this endpoint again.", opts.cert, tostring(err))
  end
  return conn
end

local function report(cert, what)
  print(("%s %s: certificate %s, valid until %s"):format(what, cert.xmpp_addrs[1] or "?", cert.fingerprint,
    time.format(cert.not_after, 0)))
  print(("  key %s (0600), certificate %s"):format(cert.key_file, cert.cert_file))
end

if command == "enroll" then
  if not opts.jid then usage("enroll needs --jid (the account the administrator enrolled)") end
  local password
  if opts["password-file"] then
    local text, err = fs.read(opts["password-file"])
    if not text then fail("reading the password file: %s", tostring(err)) end
    password = text:gsub("%s+$", "")
  else
    password = os.getenv("SACM_ENROLL_PASSWORD")
  end
  if not password or password == "" then
    usage("the one-time password goes in --password-file FILE or $SACM_ENROLL_PASSWORD (never on the command line)")
  end
  if fs.exists(opts.key) or fs.exists(opts.cert) then
    fail("%s or %s exists already: this endpoint is enrolled (use renew), or remove them first", opts.key, opts.cert)
  end
  local conn, err = xmpp.connect(connection({ jid = opts.jid, password = password }))
  if not conn then
    fail("logging in as %s with the enrollment password failed: %s. The password works once and "
      .. "expires: ask the administrator for a new enrollment.", opts.jid, tostring(err))
  end
  local cert
  cert, err = ccm2.add(conn, { name = opts.name or hostname(), key_file = opts.key, cert_file = opts.cert })
  conn:close()
  if not cert then
    fail("ccm2 add failed: %s. The enrollment password is spent: ask the administrator for a new one.", tostring(err))
  end
  report(cert, "enrolled")
  -- prove the result: the next login is the EXTERNAL one every later run makes
  local check = with_certificate()
  print("  SASL EXTERNAL login as " .. check.jid .. ": ok")
  check:close()
elseif command == "renew" then
  local due, info = ccm2.needs_renewal(opts.cert)
  if due == nil then fail("reading %s: %s", opts.cert, tostring(info)) end
  if info.not_after <= os.time() then
    fail("%s expired at %s: it cannot log in to renew itself; have the administrator enroll this endpoint again",
      opts.cert, time.format(info.not_after, 0))
  end
  if not due and not opts.force then
    print(("%s is valid until %s: not due for renewal yet"):format(opts.cert, time.format(info.not_after, 0)))
    os.exit(0)
  end
  local conn = with_certificate()
  -- new files beside the old ones, swapped in once the new certificate logs in
  local next_key, next_cert = opts.key .. ".new", opts.cert .. ".new"
  local cert, err = ccm2.add(conn, { name = opts.name or hostname(), key_file = next_key, cert_file = next_cert })
  if not cert then conn:close(); fail("ccm2 add failed: %s; the current certificate stays in use", tostring(err)) end
  local check, cerr = xmpp.connect(connection({ client_cert = next_cert, client_key = next_key }))
  if not check then
    ccm2.revoke(conn, cert.fingerprint)
    conn:close()
    fail("the renewed certificate does not log in (%s); revoked it, the current one stays in use", tostring(cerr))
  end
  -- the key first, so that the pair on disk never holds an old certificate for a new key for long
  local ok, rerr = fs.rename(next_key, opts.key)
  if ok then ok, rerr = fs.rename(next_cert, opts.cert) end
  if not ok then conn:close(); check:close(); fail("replacing %s: %s", opts.cert, tostring(rerr)) end
  -- the old certificate goes: from the new session, since revoking closes the old one
  conn:close()
  local revoked, verr = ccm2.revoke(check, info.fingerprint)
  check:close()
  cert.key_file, cert.cert_file = opts.key, opts.cert
  report(cert, "renewed")
  if not revoked then
    io.stderr:write(("enroll.lua: revoking the previous certificate %s failed: %s\n"):format(info.fingerprint, tostring(verr)))
    os.exit(1)
  end
  print("  previous certificate " .. info.fingerprint .. " revoked")
elseif command == "list" then
  local conn = with_certificate()
  local list, err = ccm2.list(conn)
  conn:close()
  if not list then fail("ccm2 list failed: %s", tostring(err)) end
  for _, c in ipairs(list) do
    print(("%s  %-20s not after %s  last used %s%s"):format(c.fingerprint, c.name, time.format(c.not_after, 0),
      c.last_used and time.format(c.last_used, 0) or "never",
      #c.resources > 0 and ("  in use by " .. table.concat(c.resources, ", ")) or ""))
  end
elseif command == "revoke" then
  local fingerprint = positional[2]
  if not fingerprint then usage("revoke needs the FINGERPRINT (from list)") end
  local conn = with_certificate()
  local ok, err = ccm2.revoke(conn, fingerprint)
  conn:close()
  if not ok then fail("ccm2 revoke failed: %s", tostring(err)) end
  print("revoked " .. fingerprint)
else
  usage("unknown command " .. command)
end
