-- XMPP connections against a real, private Prosody on loopback.
local prosody = require "support.prosody"
local xmpp = require "sacm.xmpp"
local st = require "sacm.xmpp.stanza"
local task = require "sacm.task"
local sync = require "sacm.sync"
local loop = require "sacm._loop"

local function seconds_since(t0) return (loop.hrtime() - t0) / 1e9 end

describe("sacm.xmpp #e2e", function()
  local server
  local function connect(user, extra)
    local opts = {
      jid = server:jid(user) .. "/spec", password = user .. "-secret",
      host = server.host, port = server.port, cafile = server.ca_file,
    }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return xmpp.connect(opts)
  end

  setup(function()
    server = prosody.start()
    for _, user in ipairs({ "alice", "bob" }) do server:register(user, user .. "-secret") end
  end)
  teardown(function()
    server:stop()
  end)

  it("connects over verified TLS, binds the requested resource and answers pings", function()
    local conn, err = connect("alice")
    assert.is_not_nil(conn, tostring(err))
    assert.equal(server:jid("alice") .. "/spec", conn.jid)
    assert.is_true(conn.c:secured())
    local rtt = assert(conn:ping())
    assert.is_true(rtt >= 0)
    -- in the REPL: one line, never the password; completion offers no internals
    local pretty = require "sacm.pretty"
    assert.equal("xmpp connection " .. conn.jid .. " (connected)", pretty.format(conn))
    assert.not_matches("alice%-secret", pretty.format({ conn = conn, options = conn.options }))
    local complete = require("sacm._complete").complete
    local found = complete("conn.", 5, 5, { conn = conn })
    assert.same({ "c", "close", "domain", "host", "iq", "jid", "on", "ping", "port", "send", "state" }, found)
    conn:close()
    assert.equal("disconnected", conn.state)
  end)

  it("refuses a wrong password with not-authorized, naming the account and the server's SASL answer", function()
    local conn, err = connect("alice", { password = "wrong" })
    assert.is_nil(conn)
    assert.equal("not-authorized", err.condition)
    assert.equal("not-authorized", err.sasl_condition)
    assert.matches("^not%-authorized: the server refused the credentials of " .. server:jid("alice"):gsub("%p", "%%%0")
      .. " %(SASL SCRAM%-SHA%-1: not%-authorized", tostring(err))
    assert.matches("check the JID and password$", tostring(err))
    assert.not_matches("Cannot authenticate with known methods", tostring(err))
  end)

  it("refuses a server certificate it cannot verify, saying why, against which CA file, and the fix", function()
    local cafile = "/etc/ssl/certs/ca-certificates.crt"
    local conn, err = connect("alice", { cafile = cafile })
    assert.is_nil(conn)
    assert.equal("tls-verification-failed", err.condition)
    assert.equal("unable to get local issuer certificate", err.verify_error)
    assert.matches("UNABLE_TO_GET_ISSUER_CERT", err.text)
    assert.matches("^tls%-verification%-failed: the server certificate of " .. server.domain
      .. " %([^)]+%) did not verify against the CA file " .. cafile:gsub("%p", "%%%0")
      .. ": unable to get local issuer certificate", tostring(err))
    assert.matches("issued by /CN=sacmrun test CA", err.text)
    assert.matches("set cafile to the CA that issued the server's certificate", err.text)
  end)

  -- libstrophe loads the system store before a connection's cafile; runtime/xmpp_trust.c keeps
  -- it out. OpenSSL reads SSL_CERT_FILE as the system store, so a child process whose
  -- SSL_CERT_FILE is the server's CA shows which anchors a connection really trusts.
  it("trusts only the cafile or capath it names, not the system store beside them", function()
    local tmp = require "support.tmp"
    local certs = require "support.certs"
    local proc = require "sacm.proc"
    local fs = require "sacm.fs"
    local dir = tmp.dir("trust")
    local other = certs.ca(dir, "other-ca", "sacmrun other test CA")
    assert(fs.mkdir(dir .. "/capath"))
    assert(fs.write(dir .. "/capath/other.pem", assert(fs.read(other.cert))))
    assert(proc.run({ "openssl", "rehash", dir .. "/capath" }, { timeout = 20 }).code == 0)
    local script = dir .. "/connect.lua"
    assert(fs.write(script, [[
local xmpp = require "sacm.xmpp"
local jid, password, host, port, anchor, value = ...
local opts = { jid = jid, password = password, host = host, port = math.tointeger(tonumber(port)), reconnect = false }
if anchor ~= "none" then opts[anchor] = value end
local conn, err = xmpp.connect(opts)
if conn then print("connected") conn:close() else print(err.condition) end
]]))
    local function outcome(anchor, value)
      local r = assert(proc.run({ os.getenv("SACMRUN_BIN") or "./sacmrun", script, server:jid("alice") .. "/trust",
        "alice-secret", server.host, server.port, anchor, value or "" },
        { timeout = 30, env = { SSL_CERT_FILE = server.ca_file, SSL_CERT_DIR = dir .. "/empty" } }))
      assert.equal(0, r.code, r.stderr)
      return (r.stdout:gsub("\n$", ""))
    end
    -- the control: with no anchors named, the system store is used, and it holds the server's CA
    assert.equal("connected", outcome("none"))
    assert.equal("connected", outcome("cafile", server.ca_file))
    -- a CA file or directory of another CA: refused, although the system store would verify
    assert.equal("tls-verification-failed", outcome("cafile", other.cert))
    assert.equal("tls-verification-failed", outcome("capath", dir .. "/capath"))
    tmp.remove(dir)
  end)

  it("says which CA file cannot be loaded and why, before connecting", function()
    local conn, err = connect("alice", { cafile = "/nonexistent/ca.pem" })
    assert.is_nil(conn)
    assert.equal("tls-config: cannot load CA file /nonexistent/ca.pem: No such file or directory "
      .. "(check the cafile option)", tostring(err))
    local not_pem = os.tmpname()
    local f = assert(io.open(not_pem, "w"))
    f:write("this is not a certificate\n")
    f:close()
    conn, err = connect("alice", { cafile = not_pem })
    os.remove(not_pem)
    assert.is_nil(conn)
    assert.equal("tls-config", err.condition)
    assert.equal(("cannot load CA file %s: no certificate or crl found (check the cafile option)"):format(not_pem),
      err.text)
    conn, err = connect("alice", { capath = "/nonexistent/certs" })
    assert.is_nil(conn)
    assert.equal("tls-config: cannot load CA directory /nonexistent/certs: No such file or directory "
      .. "(check the capath option)", tostring(err))
  end)

  it("connects anyway with insecure = true (and only then)", function()
    local conn = assert(connect("alice", { cafile = "/etc/ssl/certs/ca-certificates.crt", insecure = true }))
    assert.is_true(conn.c:secured())
    conn:close()
  end)

  it("reports a refused connection with ECONNREFUSED", function()
    local conn, err = connect("alice", { port = 1 })
    assert.is_nil(conn)
    assert.equal("ECONNREFUSED", err.condition)
  end)

  it("rejects a malformed JID and a missing credential", function()
    local conn, err = xmpp.connect({ jid = "@nodomain", password = "x" })
    assert.is_nil(conn)
    assert.equal("jid-malformed", err.condition)
    assert.has_error(function() xmpp.connect({ jid = "a@b" }) end)
  end)

  it("answers an iq request nobody handles with service-unavailable", function()
    local a, b = assert(connect("alice")), assert(connect("bob"))
    local req = st.iq({ type = "get", to = a.jid }):tag("query", { xmlns = "urn:example:nobody-handles-this" })
    local reply, err = b:iq(req, 5)
    assert.is_nil(reply)
    assert.equal("service-unavailable", err.condition)
    a:close(); b:close()
  end)

  it("dispatches iq requests to handlers and their results and errors back", function()
    local a, b = assert(connect("alice")), assert(connect("bob"))
    a:on("iq", { type = "get", ns = "urn:example:echo" }, function(s)
      local q = s:child("query")
      if q.attr.fail then return nil, require("sacm.error").new("item-not-found", "no such thing") end
      task.sleep(0.001) -- handlers run as tasks and may wait
      return require("sacm.xml").element("query", { xmlns = "urn:example:echo", said = q.attr.say })
    end)
    local reply = assert(b:iq(st.iq({ type = "get", to = a.jid }):tag("query", { xmlns = "urn:example:echo", say = "hi" })))
    assert.equal("hi", reply:child("query").attr.said)
    local none, err = b:iq(st.iq({ type = "get", to = a.jid }):tag("query", { xmlns = "urn:example:echo", fail = "1" }))
    assert.is_nil(none)
    assert.equal("item-not-found", err.condition)
    assert.equal("no such thing", err.text)
    a:close(); b:close()
  end)

  it("runs 20 concurrent iq requests over two connections", function()
    local a, b = assert(connect("alice")), assert(connect("bob"))
    local tasks = {}
    for i = 1, 20 do
      local conn = (i % 2 == 0) and a or b
      local peer = (conn == a) and b.jid or a.jid
      tasks[i] = task.spawn(function()
        local reply, err = conn:iq(st.iq({ type = "get", to = peer }):tag("ping", { xmlns = "urn:xmpp:ping" }), 10)
        return reply and reply.attr.id, err
      end)
    end
    local ids = {}
    for i, r in ipairs(task.all(tasks, 15)) do
      assert.is_true(r.ok)
      assert.is_string(r.value, "request " .. i .. ": " .. tostring(r.values and r.values[2]))
      ids[r.value] = true
    end
    local n = 0
    for _ in pairs(ids) do n = n + 1 end
    assert.equal(20, n)
    a:close(); b:close()
  end)

  it("delivers a 64 KB stanza without waiting for the housekeeping tick", function()
    -- libstrophe reads 4096 bytes per call while OpenSSL may hold more: a wakeup that stopped
    -- early would leave the rest until the next tick. With the tick an hour away, the stanza
    -- arrives only if the reads drain by themselves.
    local core = require "sacm._xmpp"
    local a, b = assert(connect("alice")), assert(connect("bob"))
    local previous = core.set_tick_interval(3600 * 1000)
    local got = sync.queue()
    b:on("message", function(m) got:put(m:child("body"):get_text()) end)
    local body = ("0123456789abcdef"):rep(4096)
    a:send(st.message({ to = b.jid, type = "chat" }):tag("body"):text(body):up())
    local text, err = got:get(30)
    core.set_tick_interval(previous)
    assert.is_not_nil(text, tostring(err))
    assert.equal(#body, #text)
    assert.equal(body, text)
    a:close(); b:close()
  end)

  it("ignores a forged iq reply from a JID the request did not go to", function()
    local a, b = assert(connect("alice")), assert(connect("bob"))
    -- a asks a resource that never answers; b tries to answer for it with a matching id
    local req = st.iq({ type = "get", to = server:jid("bob") .. "/absent", id = "guessable-1" })
      :tag("ping", { xmlns = "urn:xmpp:ping" })
    local waiter = task.spawn(function() return a:iq(req, 2) end)
    task.sleep(0.05)
    b:send(st.iq({ type = "result", to = a.jid, id = "guessable-1" }))
    local reply, err = waiter:await()
    assert.is_nil(reply)
    -- the server answers for the absent resource; the forged result was not taken
    assert.is_not_nil(err)
    assert.is_true(err.condition == "service-unavailable" or err.condition == "recipient-unavailable"
      or err.condition == "remote-server-timeout", tostring(err))
    a:close(); b:close()
  end)

  it("stays connected when another account sends it a payload in the xml prefix's namespace", function()
    -- Prosody relays <xml:e/> as <e xmlns='http://www.w3.org/XML/1998/namespace'/>, which no
    -- namespace-aware parser takes: without mod_sacm_xmlns_guard the recipient's stream fails
    -- (invalid-xml), and every reconnect could be made to fail again.
    local bob = assert(connect("bob"))
    local alice = assert(connect("alice"))
    local got = {}
    bob:on("message", nil, function(s) got[#got + 1] = s end)
    local to = server:jid("bob") .. "/spec"
    local errors = {}
    alice:on("message", nil, function(s) if s.attr.type == "error" then errors[#errors + 1] = s end end)
    for _, payload in ipairs {
      "<xml:e/>",
      "<x xmlns='urn:x'><y><xml:deep a='1'/></y></x>",
      "<body>hello</body>",
    } do
      assert(alice.c:send(("<message to='%s' id='m%d'>%s</message>"):format(to, #got + #errors, payload)))
    end
    local deadline = loop.hrtime() + 5e9
    while (#got < 1 or #errors < 2) and loop.hrtime() < deadline do task.sleep(0.02) end
    assert.equal("connected", bob.state)
    assert.is_true(bob:ping() >= 0)
    assert.equal(1, #got) -- only the ordinary message came through
    assert.equal("hello", got[1]:find("body#"))
    assert.equal(2, #errors) -- the sender is told why the others were not
    assert.equal("bad-request", errors[1]:find("error/*").name)
    assert.equal("connected", alice.state)
    alice:close()
    bob:close()
  end)

  it("logs in with SASL EXTERNAL, taking the JID from the client certificate", function()
    local certs = prosody.start({ client_certs = true })
    local pair = certs:client_cert(certs:jid("carol"))
    local conn, err = xmpp.connect({
      client_cert = pair.cert, client_key = pair.key,
      host = certs.host, port = certs.port, cafile = certs.ca_file, resource = "cert",
    })
    assert.is_not_nil(conn, tostring(err))
    assert.equal(certs:jid("carol") .. "/cert", conn.jid)
    conn:close()
    -- a certificate from a CA the server does not trust is refused
    local bad = certs:client_cert(certs:jid("mallory"), { untrusted = true })
    local none, err2 = xmpp.connect({
      client_cert = bad.cert, client_key = bad.key,
      host = certs.host, port = certs.port, cafile = certs.ca_file,
    })
    assert.is_nil(none)
    assert.is_not_nil(err2)
    certs:stop()
  end)
end)

describe("sacm.xmpp across a server restart #e2e", function()
  local server
  setup(function() server = prosody.start({ users = { alice = "alice-secret" } }) end)
  teardown(function() server:stop() end)

  it("reconnects by itself, re-sends what was pending and loses nothing it was asked to send", function()
    local conn = assert(xmpp.connect({
      jid = server:jid("alice") .. "/restart", password = "alice-secret",
      host = server.host, port = server.port, cafile = server.ca_file, max_backoff = 0.5,
    }))
    local events = sync.queue()
    conn:on("status", function(event) events:put(event) end)
    local received = {}
    conn:on("message", function(m)
      local n = tonumber(m:child("body"):get_text())
      received[n] = (received[n] or 0) + 1
    end)
    local function send(n)
      assert(conn:send(st.message({ to = conn.jid, type = "chat" }):tag("body"):text(tostring(n)):up()))
    end
    for n = 1, 5 do send(n) end

    server:kill()
    assert.equal("disconnected", events:get(10))
    -- while the server is down: messages wait in the outbox, a resendable request waits too
    for n = 6, 10 do send(n) end
    local ping = task.spawn(function()
      return conn:iq(st.iq({ type = "get", to = server.domain }):tag("ping", { xmlns = "urn:xmpp:ping" }),
        { timeout = 30, resend = true })
    end)
    local plain = task.spawn(function()
      return conn:iq(st.iq({ type = "get", to = server.domain }):tag("ping", { xmlns = "urn:xmpp:ping" }), 30)
    end)
    task.sleep(0.2)
    server:restart()

    assert.equal("reconnected", events:get(20))
    assert.is_not_nil(ping:await(20), "the resendable request was answered after the reconnect")
    local plain_reply, plain_err = plain:await(20)
    -- a request queued while disconnected goes out with the outbox, so it is answered too
    assert.is_true(plain_reply ~= nil or plain_err.condition == "connection-lost")
    for n = 11, 15 do send(n) end
    local deadline = loop.hrtime() + 10e9
    local function complete()
      for n = 6, 15 do if not received[n] then return false end end
      return true
    end
    while not complete() and loop.hrtime() < deadline do task.sleep(0.02) end
    for n = 6, 15 do
      assert.is_not_nil(received[n], "message " .. n .. " was lost")
    end
    conn:close()
  end)
end)

describe("sacm.xmpp with several servers #e2e", function()
  local server
  setup(function() server = prosody.start({ users = { alice = "alice-secret" } }) end)
  teardown(function() server:stop() end)

  local function closed_port()
    return require("support.harness").pick_port({ [server.port] = true })
  end

  it("connects to the first server that answers, and says what each said when none does", function()
    local dead = closed_port()
    local conn = assert(xmpp.connect({ jid = server:jid("alice") .. "/nodes", password = "alice-secret",
      servers = { "127.0.0.1:" .. dead, { host = server.host, port = server.port } }, cafile = server.ca_file,
      reconnect = false }))
    assert.equal(server.port, conn.port)
    assert.is_number(assert(conn:ping()))
    conn:close()
    local other = closed_port()
    local none, err = xmpp.connect({ jid = server:jid("alice") .. "/none", password = "alice-secret",
      servers = { "127.0.0.1:" .. dead, "127.0.0.1:" .. other }, cafile = server.ca_file, reconnect = false })
    assert.is_nil(none)
    assert.equal("ECONNREFUSED", err.condition)
    assert.matches(("^no server answered %%(127%%.0%%.0%%.1:%d: .*; 127%%.0%%.0%%.1:%d: .*%%)$"):format(dead, other), err.text)
    -- a wrong password is the account's problem, not the node's: the round ends there
    local bad
    bad, err = xmpp.connect({ jid = server:jid("alice") .. "/bad", password = "wrong",
      servers = { { host = server.host, port = server.port }, "127.0.0.1:" .. dead }, cafile = server.ca_file,
      reconnect = false })
    assert.is_nil(bad)
    assert.equal("not-authorized", err.condition)
  end)

  it("refuses a servers list it cannot read, naming the entry", function()
    local function refused(servers, extra)
      local opts = { jid = "alice@localhost", password = "x", servers = servers }
      for k, v in pairs(extra or {}) do opts[k] = v end
      local ok, e = pcall(xmpp.connect, opts)
      assert.is_false(ok)
      return tostring(e)
    end
    assert.matches('servers must be a non%-empty list of "host:port" strings', refused({}))
    assert.matches([[servers%[2%] %("xmpp:port"%) is not host:port, e.g. "xmpp1.grid.example:5222"]],
      refused({ "a:5222", "xmpp:port" }))
    assert.matches("servers%[1%] %(number%) is not host:port", refused({ 5222 }))
    assert.matches("give servers or host/port, not both", refused({ "a:5222" }, { host = "b" }))
  end)
end)

describe("sacm.xmpp's log of a connection's life #e2e", function()
  -- runs a script (it starts its own Prosody) in a child sacmrun at a log level: its result
  local function run_logged(level, script)
    local proc = require "sacm.proc"
    local path = os.tmpname() .. ".lua"
    local f = assert(io.open(path, "w"))
    f:write('package.path = "spec/?.lua;" .. package.path\nlocal prosody = require "support.prosody"\n', script)
    f:close()
    local r = assert(proc.run({ os.getenv("SACMRUN_BIN") or "./sacmrun", "--log-level", level, path },
      { timeout = 60 }))
    os.remove(path)
    return r
  end

  it("at info: connecting, connected, lost (with the reason), reconnected after N s; none of libstrophe's noise",
    function()
      local r = run_logged("info", [[
local xmpp = require "sacm.xmpp"
local server = prosody.start({ users = { alice = "alice-secret" } })
local conn = assert(xmpp.connect({ jid = server:jid("alice") .. "/log", password = "alice-secret",
  host = server.host, port = server.port, cafile = server.ca_file, max_backoff = 0.5 }))
local back = require("sacm.sync").event()
conn:on("status", function(event) if event == "reconnected" then back:set() end end)
io.stderr:write("HOSTPORT ", server.host, ":", server.port, " ", conn.jid, "\n")
server:kill()
server:restart()
assert(back:wait(20), "no reconnect")
conn:close()
server:stop()
]])
      assert.equal(0, r.code, r.stderr)
      local hostport, jid = r.stderr:match("HOSTPORT (%S+) (%S+)")
      local hp, j = hostport:gsub("%p", "%%%0"), jid:gsub("%p", "%%%0")
      assert.matches("INFO  %[xmpp%] connecting to " .. hp .. " as " .. j, r.stderr)
      assert.matches("INFO  %[xmpp%] connected to " .. hp .. " as " .. j, r.stderr)
      assert.matches("WARN  %[xmpp%] connection to " .. hp .. " as " .. j .. " lost %([^\n]+%); reconnecting",
        r.stderr)
      assert.matches("INFO  %[xmpp%] reconnected to " .. hp .. " as " .. j .. " after %d+%.%d s", r.stderr)
      assert.not_matches("%[strophe", r.stderr)
      assert.not_matches("Unrecoverable TLS error", r.stderr)
    end)

  -- Once a session is up, libstrophe's text of each received stanza is not rendered unless
  -- trace logging is on (runtime/xmpp_hooks.c); at trace it must still be there, whole.
  it("at trace: every stanza received once the session is up, as libstrophe's RECV line", function()
    local r = run_logged("trace", [[
local xmpp = require "sacm.xmpp"
local st = require "sacm.xmpp.stanza"
local server <close> = prosody.start({ users = { alice = "alice-secret", bob = "bob-secret" } })
local function connect(user)
  return assert(xmpp.connect({ jid = server:jid(user) .. "/trace", password = user .. "-secret",
    host = server.host, port = server.port, cafile = server.ca_file }))
end
local a, b = connect("alice"), connect("bob")
local got = require("sacm.sync").queue()
b:on("message", function(m) got:put(m:child("body"):get_text()) end)
for i = 1, 3 do
  a:send(st.message({ to = b.jid, type = "chat" }):tag("body"):text("trace-me-" .. i):up())
  assert(got:get(20) == "trace-me-" .. i)
end
a:close(); b:close()
]])
    assert.equal(0, r.code, r.stderr)
    for i = 1, 3 do
      assert.matches("TRACE %[strophe%.xmpp%] RECV: <message[^\n]*<body>trace%-me%-" .. i .. "</body>", r.stderr)
    end
  end)
end)

describe("sacm.xmpp liveness (XEP-0199) #e2e", function()
  local server
  setup(function() server = prosody.start({ users = { alice = "alice-secret" } }) end)
  teardown(function() server:stop() end)

  local function connect(extra)
    local opts = {
      jid = server:jid("alice") .. "/live", password = "alice-secret",
      host = server.host, port = server.port, cafile = server.ca_file, max_backoff = 0.5,
    }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return xmpp.connect(opts)
  end

  it("rejects nonsense ping settings", function()
    assert.has_error(function() connect({ ping_interval = 0 }) end)
    assert.has_error(function() connect({ ping_interval = "1" }) end)
    assert.has_error(function() connect({ ping_timeout = -1 }) end)
  end)

  it("declares a server that stopped answering dead, fails what was pending, and reconnects once it answers again", function()
    local interval, timeout = 0.5, 0.5
    local conn = assert(connect({ ping_interval = interval, ping_timeout = timeout }))
    local events = sync.queue()
    conn:on("status", function(event, info) events:put({ event = event, info = info }) end)
    -- an idle stream that answers stays up through several ping rounds
    task.sleep(3 * interval)
    assert.equal(0, events:len())
    assert.equal("connected", conn.state)

    server:pause() -- TCP stays up, nothing answers
    local frozen_at = loop.hrtime()
    local pending = task.spawn(function()
      return conn:iq(st.iq({ type = "get", to = server.domain }):tag("ping", { xmlns = "urn:xmpp:ping" }), 60)
    end)
    -- generous bound for a loaded machine; without the pings nothing would notice for hours
    local dropped = events:get(10 * (interval + timeout))
    local dead_after = seconds_since(frozen_at)
    assert.is_not_nil(dropped, "the frozen server was not noticed")
    assert.equal("disconnected", dropped.event)
    assert.equal("connection-lost", dropped.info.condition)
    assert.matches("no reply to a ping", dropped.info.text)
    local reply, err = pending:await(5)
    assert.is_nil(reply)
    assert.equal("connection-lost", err.condition)

    server:resume()
    local back = events:get(20)
    assert.is_not_nil(back, "no reconnect after the server resumed")
    assert.equal("reconnected", back.event)
    assert(conn:ping(nil, 5))
    conn:close()
    io.stderr:write(("[liveness] declared dead %.2f s after the freeze (interval %g s, timeout %g s)\n")
      :format(dead_after, interval, timeout))
  end)

  it("leaves a silent server alone with ping_interval = false", function()
    local conn = assert(connect({ ping_interval = false, ping_timeout = 0.2 }))
    local events = sync.queue()
    conn:on("status", function(event) events:put(event) end)
    server:pause()
    local event = events:get(1.5)
    server:resume()
    assert.is_nil(event)
    assert.equal("connected", conn.state)
    assert(conn:ping(nil, 5))
    conn:close()
  end)
end)
