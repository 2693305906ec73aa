-- spec/support/prosody.lua against the real Prosody: it comes up on loopback with a certificate
-- that verifies against the test CA, accounts can be registered, client certificates carry the
-- JID and log in with SASL EXTERNAL, restart keeps port and accounts, and stop leaves nothing.
local prosody = require "support.prosody"
local proc = require "sacm.proc"
local fs = require "sacm.fs"

local STREAM = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
  .. "xmlns:stream='http://etherx.jabber.org/streams' to='%s' version='1.0'>"

-- openssl s_client with STARTTLS for XMPP; stdin is sent after the handshake.
local function s_client(server, extra, stdin)
  local argv = {
    "openssl", "s_client", "-connect", server.host .. ":" .. server.port,
    "-starttls", "xmpp", "-xmpphost", server.domain, "-CAfile", server.ca_file,
  }
  for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
  local r = assert(proc.run(argv, { stdin = stdin or "Q\n", timeout = 10 }))
  return r, r.stdout .. r.stderr
end

-- Live processes (not zombies) whose command line contains `text`.
local function processes_with(text)
  local r = assert(proc.run({ "ps", "-e", "-o", "pid=,stat=,args=" }))
  local found = {}
  for line in r.stdout:gmatch("[^\n]+") do
    local pid, stat, args = line:match("^%s*(%d+)%s+(%S+)%s+(.*)$")
    if pid and stat:sub(1, 1) ~= "Z" and args:find(text, 1, true) and not args:find("^ps ") then
      found[#found + 1] = tonumber(pid)
    end
  end
  return found
end

local keep_dirs = (os.getenv("SACMRUN_KEEP_TEST_DIRS") or "0"):match("^0?$") == nil

local function listening(port)
  local text = assert(fs.read("/proc/net/tcp"))
  for p, state in text:gmatch("\n%s*%d+:%s+0100007F:(%x+)%s+%x+:%x+%s+(%x+)") do
    if tonumber(p, 16) == port and state == "0A" then return true end
  end
  return false
end

describe("support.prosody #e2e", function()
  local server

  lazy_setup(function()
    server = prosody.start({ admins = { "orchestrator" }, users = { orchestrator = "pw-o" } })
  end)

  lazy_teardown(function()
    if server then server:stop() end
  end)

  it("runs a private prosody on a loopback port", function()
    assert.equal("localhost", server.domain)
    assert.equal("127.0.0.1", server.host)
    assert.equal("pubsub.localhost", server.pubsub)
    assert.is_true(server.port >= 1024 and server.port < 65536)
    assert.is_true(listening(server.port), "nothing listens on 127.0.0.1:" .. server.port)
    assert.is_true(server:running())
    -- prosody is a lua5.4 script: its process is named lua5.4, its command line names the config
    local cmdline = assert(fs.read("/proc/" .. server.pid .. "/cmdline")):gsub("%z", " ")
    assert.matches("prosody --config " .. server.config_file .. " -F", cmdline, 1, true)
    assert.equal("lua5.4\n", fs.read("/proc/" .. server.pid .. "/comm"))
    assert.is_true(fs.exists(server.ca_file))
    assert.same({ "orchestrator" }, server:users())
    -- nothing but the c2s port: no s2s, no http
    assert.is_nil(server:log():find("Activated service 's2s'", 1, true))
    assert.is_nil(server:log():find("Activated service 'http", 1, true))
  end)

  it("starts without errors in its log", function()
    local log = server:log()
    for line in log:gmatch("[^\n]+") do
      assert.is_nil(line:match("\t(error)\t"), "error in prosody.log: " .. line)
    end
  end)

  it("registers users while it runs", function()
    server:register("alice", "secret")
    server:register("bob", "secret2")
    assert.same({ "alice", "bob", "orchestrator" }, server:users())
  end)

  it("offers STARTTLS with a certificate that verifies against ca_file for the domain", function()
    for _, name in ipairs({ server.domain, server.pubsub }) do
      local r, out = s_client(server, { "-verify_return_error", "-verify_hostname", name })
      assert.is_true(r.ok, out)
      assert.matches("Verify return code: 0 %(ok%)", out)
    end
    -- the check is real: another name is refused
    local r, out = s_client(server, { "-verify_return_error", "-verify_hostname", "other.example" })
    assert.is_false(r.ok)
    assert.matches("hostname mismatch", out)
  end)

  it("requires TLS before authentication and offers SCRAM", function()
    local hello = STREAM:format(server.domain) .. "</stream:stream>"
    local r, out = s_client(server, { "-quiet", "-ign_eof" }, hello)
    assert.is_true(r.ok, out)
    assert.matches("<mechanism>SCRAM%-SHA%-1</mechanism>", out)
    -- over plain TCP it offers STARTTLS as required, and no way to log in
    local script = ("exec 3<>/dev/tcp/127.0.0.1/%d; printf '%%s' \"$1\" >&3; cat <&3"):format(server.port)
    local plain = assert(proc.run({ "bash", "-c", script, "bash", hello }, { timeout = 5 }))
    assert.matches("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>", plain.stdout, 1, true)
    assert.is_nil(plain.stdout:find("<mechanism>", 1, true), plain.stdout)
  end)

  it("issues client certificates carrying the JID as id-on-xmppAddr", function()
    local pair = server:client_cert("alice@localhost")
    assert.is_true(fs.exists(pair.cert))
    assert.is_true(fs.exists(pair.key))
    local text = assert(proc.run({ "openssl", "x509", "-in", pair.cert, "-noout", "-text" })).stdout
    assert.matches("othername: XmppAddr::alice@localhost", text, 1, true)
    assert.matches("TLS Web Client Authentication", text, 1, true)
    local v = assert(proc.run({ "openssl", "verify", "-CAfile", server.ca_file, pair.cert }))
    assert.is_true(v.ok, v.stdout .. v.stderr)
    -- several JIDs, and characters that mean something to OpenSSL's config syntax
    local many = server:client_cert({ "a,b#c$d@localhost", "bob@localhost" })
    text = assert(proc.run({ "openssl", "x509", "-in", many.cert, "-noout", "-text" })).stdout
    assert.matches("othername: XmppAddr::a,b#c$d@localhost, othername: XmppAddr::bob@localhost", text, 1, true)
    -- an untrusted one does not verify against ca_file
    local bad = server:client_cert("alice@localhost", { untrusted = true })
    v = assert(proc.run({ "openssl", "verify", "-CAfile", server.ca_file, bad.cert }))
    assert.is_false(v.ok)
  end)

  it("restarts on the same port with the same accounts", function()
    local port, pid = server.port, server.pid
    server:restart()
    assert.equal(port, server.port)
    assert.are_not.equal(pid, server.pid)
    assert.same({ server.pid }, processes_with(server.config_file))
    assert.is_true(listening(port))
    assert.same({ "alice", "bob", "orchestrator" }, server:users())
    local r, out = s_client(server, { "-verify_return_error", "-verify_hostname", server.domain })
    assert.is_true(r.ok, out)
  end)

  it("can be killed like a crash and brought back", function()
    local pid = server.pid
    local result = server:kill()
    assert.equal("SIGKILL", proc.signal_name(result.signal))
    assert.is_false(server:running())
    assert.same({}, processes_with(server.config_file))
    server:restart()
    assert.is_true(server:running())
    assert.are_not.equal(pid, server.pid)
    assert.same({ "alice", "bob", "orchestrator" }, server:users())
  end)

  it("fails with the log's tail when the port is taken, and cleans up", function()
    local ok, err = pcall(prosody.start, { port = server.port })
    assert.is_false(ok)
    assert.matches("port " .. server.port .. " is taken", err, 1, true)
    assert.matches("Failed to open server port", err, 1, true)
    local dir = err:match("%(log: (/%S+)/prosody%.log%)")
    assert.is_string(dir, err)
    assert.same({}, processes_with(dir))
    if not keep_dirs then assert.is_false(fs.exists(dir)) end
  end)

  it("stops: no process left, directory removed", function()
    local dir, config, pid = server.dir, server.config_file, server.pid
    server:stop()
    server:stop() -- idempotent
    assert.is_false(server:running())
    assert.same({}, processes_with(config))
    assert.is_false(fs.exists("/proc/" .. pid) and
      (fs.read("/proc/" .. pid .. "/cmdline") or ""):find(config, 1, true) ~= nil)
    assert.is_false(listening(server.port))
    if not keep_dirs then assert.is_false(fs.exists(dir)) end
    assert.has_error(function() server:restart() end)
    server = nil
  end)
end)

describe("support.prosody with client certificates (SASL EXTERNAL, mod_auth_ccert) #e2e", function()
  local server
  lazy_setup(function() server = prosody.start({ client_certs = true, domain = "grid.test" }) end)
  lazy_teardown(function() if server then server:stop() end end)

  -- Authenticates with the certificate: the stream header, <auth/> and the end of the stream in
  -- one go; the server answers in order and closes.
  local function external(pair)
    local stdin = STREAM:format(server.domain)
      .. "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth></stream:stream>"
    local _, out = s_client(server, { "-quiet", "-ign_eof", "-cert", pair.cert, "-key", pair.key }, stdin)
    return out
  end

  it("offers only EXTERNAL and accepts a CA-signed certificate for its domain", function()
    local out = external(server:client_cert("collector1@grid.test"))
    assert.matches("<mechanism>EXTERNAL</mechanism></mechanisms>", out, 1, true)
    assert.is_nil(out:find("SCRAM", 1, true))
    assert.matches("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>", out, 1, true)
  end)

  it("refuses a certificate from another CA and one for another domain", function()
    local out = external(server:client_cert("collector1@grid.test", { untrusted = true }))
    assert.is_nil(out:find("<success", 1, true), out)
    assert.matches("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>", out, 1, true)
    out = external(server:client_cert("collector1@elsewhere.test"))
    assert.is_nil(out:find("<success", 1, true), out)
  end)

  it("has no accounts to register", function()
    assert.has_error(function() server:register("x", "y") end)
  end)
end)
