-- The HTTPS server against real clients: curl (verifying the server against the test CA) and
-- openssl s_client for what curl will not send (malformed, pipelined, half-sent requests).
local http = require "sacm.http"
local proc = require "sacm.proc"
local sync = require "sacm.sync"
local task = require "sacm.task"
local loop = require "sacm._loop"
local certs = require "support.certs"
local tmp = require "support.tmp"

local dir, ca, other_ca, server_pair, client_pair, stranger_pair

local function listen(opts, handler)
  local o = { host = "127.0.0.1", port = 0, cert = server_pair.cert, key = server_pair.key }
  for k, v in pairs(opts or {}) do o[k] = v end
  return assert(http.listen(o, handler))
end

-- curl against srv; extra arguments follow. Returns the proc result.
local function curl(srv, args, opts)
  local argv = {
    "curl", "-sS", "--cacert", ca.cert, "--resolve", ("localhost:%d:127.0.0.1"):format(srv.port),
    "--max-time", "20",
  }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return assert(proc.run(argv, opts or { timeout = 30 }))
end

local function url(srv, path)
  return ("https://localhost:%d%s"):format(srv.port, path)
end

-- openssl s_client writes `input` over verified TLS and prints what the server sends until the
-- server closes (-quiet keeps the connection open after input ends).
local function s_client(srv, input, extra)
  local argv = {
    "openssl", "s_client", "-connect", "127.0.0.1:" .. srv.port, "-servername", "localhost",
    "-CAfile", ca.cert, "-verify_return_error", "-quiet",
  }
  for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
  return assert(proc.run(argv, { stdin = input, timeout = 15 }))
end

local function status_of(text)
  return tonumber(text:match("^HTTP/1%.1 (%d%d%d)"))
end

local function echo(req)
  local lines = { req.method, req.path, req.query.a or "-", req.query.b or "-", req.body }
  return 200, { ["Content-Type"] = "text/plain" }, table.concat(lines, "|")
end

describe("sacm.http #e2e", function()
  lazy_setup(function()
    dir = tmp.dir("http")
    ca = certs.ca(dir, "ca", "sacmrun http test CA")
    other_ca = certs.ca(dir, "other-ca", "sacmrun untrusted test CA")
    server_pair = certs.server(ca, dir .. "/server", { dns = { "localhost" }, ips = { "127.0.0.1" } })
    client_pair = certs.client(ca, dir .. "/collector", {
      cn = "collector1", xmpp = { "collector1@grid.example" }, emails = { "ops@grid.example" },
    })
    stranger_pair = certs.client(other_ca, dir .. "/stranger", { cn = "collector1", xmpp = { "collector1@grid.example" } })
  end)
  lazy_teardown(function()
    if dir then tmp.remove(dir) end
  end)

  it("answers a GET with a decoded query over verified TLS, with the headers the server owns", function()
    local seen
    local srv <close> = listen(nil, function(req) seen = req return echo(req) end)
    local r = curl(srv, { "-i", "-H", "X-Custom-Thing: One", url(srv, "/a%20b/c?a=1%2B1&b=x+y&a=2") })
    assert.equal(0, r.code, r.stderr)
    assert.equal(200, status_of(r.stdout))
    assert.matches("\r\nContent%-Length: %d+\r\n", r.stdout)
    assert.matches("\r\nDate: %a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT\r\n", r.stdout)
    assert.matches("\r\nConnection: keep%-alive\r\n", r.stdout)
    assert.equal("GET|/a b/c|1+1|x y|", r.stdout:match("\r\n\r\n(.*)$"))
    assert.equal("/a%20b/c", seen.raw_path)
    assert.equal("/a%20b/c?a=1%2B1&b=x+y&a=2", seen.target)
    assert.same({ "1+1", "2" }, http.query_values(seen, "a"))
    assert.equal("One", seen.headers["x-custom-thing"])
    assert.equal("localhost:" .. srv.port, seen.headers.host)
    assert.equal("127.0.0.1", seen.remote)
    assert.equal("HTTP/1.1", seen.version)
    assert.matches("^TLSv1%.[23]$", seen.tls.version)
    assert.is_nil(seen.tls.peer)
  end)

  it("takes a POST body and answers HEAD with the length but no body", function()
    local srv <close> = listen(nil, echo)
    local r = curl(srv, { "--data-binary", "line1\nline2", url(srv, "/post") })
    assert.equal(0, r.code, r.stderr)
    assert.equal("POST|/post|-|-|line1\nline2", r.stdout)
    r = curl(srv, { "-I", url(srv, "/head") })
    assert.equal(0, r.code, r.stderr)
    assert.equal(200, status_of(r.stdout))
    assert.matches("Content%-Length: " .. #"HEAD|/head|-|-|" .. "\r\n", r.stdout)
  end)

  it("keeps the connection alive across requests (one TLS connection for two URLs)", function()
    local srv <close> = listen(nil, echo)
    local r = curl(srv, { "-v", url(srv, "/one"), url(srv, "/two") })
    assert.equal(0, r.code, r.stderr)
    assert.equal("GET|/one|-|-|GET|/two|-|-|", r.stdout)
    assert.matches("Re%-using existing connection", r.stderr)
    local stats = srv:stats()
    assert.equal(1, stats.accepted)
    assert.equal(2, stats.requests)
  end)

  it("answers pipelined requests in order on one connection", function()
    local srv <close> = listen(nil, function(req)
      if req.path == "/slow" then task.sleep(0.05) end -- the first answer is ready last
      return 200, nil, "path=" .. req.path .. "\n"
    end)
    local r = s_client(srv, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /fast HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    local bodies = {}
    for body in r.stdout:gmatch("path=(%S+)") do bodies[#bodies + 1] = body end
    assert.same({ "/slow", "/fast", "/last" }, bodies)
    assert.matches("Connection: close\r\n\r\npath=/last\n$", r.stdout)
    assert.equal(1, srv:stats().accepted)
  end)

  it("stops reading pipelined requests while the client does not read the responses", function()
    local big = ("z"):rep(1024 * 1024)
    local srv <close> = listen(nil, function() return 200, nil, big end)
    local go = dir .. "/go"
    -- a real TLS client (Python's ssl) that sends 40 pipelined requests, reads nothing until the
    -- file `go` exists, then counts the answers
    local script = [[
import os, socket, ssl, sys, time
port, ca, go, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], 40
ctx = ssl.create_default_context(cafile=ca)
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * (n - 1)
          + b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
while not os.path.exists(go):
    time.sleep(0.01)
data = bytearray()
while True:
    chunk = s.recv(1 << 20)
    if not chunk:
        break
    data += chunk
print(data.count(b"HTTP/1.1 200 OK"), len(data))
]]
    local client = task.spawn(proc.run, { "python3", "-c", script, tostring(srv.port), ca.cert, go }, { timeout = 60 })
    while srv:stats().requests < 1 do task.sleep(0.01) end
    task.sleep(0.5) -- time to (wrongly) answer them all
    local handled = srv:stats().requests
    assert(require("sacm.fs").write(go, ""))
    local r = assert(client:await())
    assert.equal(0, r.code, r.stderr)
    local count = tonumber(r.stdout:match("^(%d+)"))
    assert.equal(40, count)
    assert.is_true(handled < 40, "answered " .. handled .. " requests nobody was reading")
  end)

  it("runs each request as a task: one handler waits while another request is served", function()
    local ready = sync.event()
    local srv <close> = listen(nil, function(req)
      if req.path == "/wait" then
        assert(ready:wait(10), "never released")
        return 200, nil, "released"
      end
      ready:set()
      return 200, nil, "set"
    end)
    local waiting = task.spawn(curl, srv, { url(srv, "/wait") })
    while srv:stats().requests < 1 do task.sleep(0.01) end
    local r = curl(srv, { url(srv, "/set") })
    assert.equal("set", r.stdout)
    assert.equal("released", waiting:await().stdout)
  end)

  it("answers 431 to oversized or too many headers and 414 to a long URL, and keeps serving", function()
    local calls = 0
    local srv <close> = listen({ limits = { header_size = 4096, headers = 20, url = 1000 } }, function(req)
      calls = calls + 1
      return echo(req)
    end)
    local r = curl(srv, { "-i", "-H", "X-Big: " .. ("x"):rep(5000), url(srv, "/big") })
    assert.equal(431, status_of(r.stdout), r.stderr)
    local many = { "-i" }
    for i = 1, 25 do many[#many + 1] = "-H"; many[#many + 1] = ("X-H%d: v"):format(i) end
    many[#many + 1] = url(srv, "/many")
    r = curl(srv, many)
    assert.equal(431, status_of(r.stdout), r.stderr)
    r = curl(srv, { "-i", url(srv, "/" .. ("u"):rep(1200)) })
    assert.equal(414, status_of(r.stdout), r.stderr)
    assert.equal(0, calls)
    r = curl(srv, { url(srv, "/ok") })
    assert.equal("GET|/ok|-|-|", r.stdout)
    assert.equal(3, srv:stats().bad_requests)
  end)

  it("answers 413 to a body over the limit, with or without Expect: 100-continue", function()
    local calls = 0
    local srv <close> = listen({ limits = { body = 1024 } }, function(req)
      calls = calls + 1
      return echo(req)
    end)
    local file = dir .. "/big-body"
    assert(require("sacm.fs").write(file, ("b"):rep(256 * 1024)))
    -- curl announces a large body and waits for 100 Continue: the 413 comes first
    local r = curl(srv, { "-i", "--data-binary", "@" .. file, url(srv, "/upload") })
    assert.equal(413, status_of(r.stdout), r.stderr)
    -- without Expect the body is on its way when the 413 is sent: the server lingers so the
    -- client reads the answer instead of a reset
    r = curl(srv, { "-i", "-H", "Expect:", "--data-binary", "@" .. file, url(srv, "/upload") })
    assert.equal(413, status_of(r.stdout), r.stderr)
    -- chunked, so the size is known only while reading
    r = curl(srv, { "-i", "-H", "Transfer-Encoding: chunked", "--data-binary", "@" .. file, url(srv, "/upload") })
    assert.equal(413, status_of(r.stdout), r.stderr)
    assert.equal(0, calls)
    r = curl(srv, { "--data-binary", ("s"):rep(1024), url(srv, "/small") })
    assert.equal("POST|/small|-|-|" .. ("s"):rep(1024), r.stdout)
  end)

  it("answers 400 to a malformed request and goes on serving", function()
    local srv <close> = listen(nil, echo)
    local r = s_client(srv, "GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n")
    assert.equal(400, status_of(r.stdout), r.stdout .. r.stderr)
    assert.matches("Connection: close", r.stdout)
    r = s_client(srv, "NOT-HTTP\r\n\r\n")
    assert.equal(400, status_of(r.stdout))
    r = s_client(srv, "GET / HTTP/1.1\r\n\r\n") -- HTTP/1.1 without Host
    assert.equal(400, status_of(r.stdout))
    r = s_client(srv, "GET /%00x HTTP/1.1\r\nHost: x\r\n\r\n") -- a NUL in the decoded path
    assert.equal(400, status_of(r.stdout))
    r = curl(srv, { url(srv, "/after") })
    assert.equal("GET|/after|-|-|", r.stdout)
    assert.equal(4, srv:stats().bad_requests)
  end)

  it("closes slow clients: headers or body stopping halfway (408), idle, never starting TLS", function()
    local srv <close> = listen({ timeouts = { headers = 0.5, body = 0.5, idle = 0.5 } }, echo)
    -- s_client keeps the connection open after its input: only the server can end it
    local r = s_client(srv, "GET /half HTTP/1.1\r\nHost: x\r\nX-Partial: ")
    assert.equal(408, status_of(r.stdout), r.stdout .. r.stderr)
    r = s_client(srv, "GET /whole HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.equal(200, status_of(r.stdout))
    assert.equal("GET|/whole|-|-|", r.stdout:match("\r\n\r\n(.*)$"))
    r = s_client(srv, "") -- handshake, then nothing
    assert.equal("", r.stdout)
    -- the body is promised but only part of it comes
    r = s_client(srv, "POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly this")
    assert.equal(408, status_of(r.stdout), r.stdout .. r.stderr)
    -- a TCP client that never starts the TLS handshake
    r = assert(proc.run({ "python3", "-c", [[
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.settimeout(20)
print(repr(s.recv(100)))
]], tostring(srv.port) }, { timeout = 30 }))
    assert.equal("b''\n", r.stdout, r.stderr)
    assert.equal(5, srv:stats().timeouts)
    r = curl(srv, { url(srv, "/after") })
    assert.equal("GET|/after|-|-|", r.stdout)
  end)

  it("answers 500 when the handler raises or returns a malformed response, and keeps running", function()
    local srv <close> = listen(nil, function(req)
      if req.path == "/raise" then error("handler bug") end
      if req.path == "/split" then return 200, { ["X-Evil"] = "a\r\nSet-Cookie: x=1" }, "no" end
      if req.path == "/owned" then return 200, { ["Content-Length"] = "1" }, "no" end
      if req.path == "/status" then return "fine" end
      return 200, nil, "ok"
    end)
    for _, path in ipairs({ "/raise", "/split", "/owned", "/status" }) do
      local r = curl(srv, { "-i", url(srv, path) })
      assert.equal(500, status_of(r.stdout), path)
      assert.not_matches("Set%-Cookie", r.stdout)
    end
    local r = curl(srv, { url(srv, "/fine") })
    assert.equal("ok", r.stdout)
  end)

  it("answers 503 when a handler takes longer than its deadline", function()
    local release = sync.event()
    local srv <close> = listen({ timeouts = { handler = 0.3 } }, function(req)
      if req.path == "/stuck" then release:wait(10) end
      return 200, nil, "done"
    end)
    local r = curl(srv, { "-i", url(srv, "/stuck") })
    assert.equal(503, status_of(r.stdout))
    release:set()
    r = curl(srv, { url(srv, "/quick") })
    assert.equal("done", r.stdout)
  end)

  it("parses HTTP Basic credentials", function()
    local got
    local srv <close> = listen(nil, function(req)
      local user, password = http.basic_auth(req)
      got = { user, password }
      if not user then
        return 401, { ["WWW-Authenticate"] = 'Basic realm="sacm"' }, tostring(password.condition)
      end
      return 200, nil, user
    end)
    local r = curl(srv, { "-u", "alice:pa:ss word", url(srv, "/") })
    assert.equal("alice", r.stdout)
    assert.same({ "alice", "pa:ss word" }, got)
    r = curl(srv, { "-i", url(srv, "/") })
    assert.equal(401, status_of(r.stdout))
    assert.matches("not%-authorized$", r.stdout)
    r = curl(srv, { "-H", "Authorization: Basic !!!", url(srv, "/") })
    assert.equal("not-authorized", r.stdout)
    assert.is_nil(http.basic_auth({ headers = { authorization = "Basic YTpi" } }))
  end)

  describe("client certificates", function()
    it("required: refuses no certificate and one from another CA; shows the handler a good one", function()
      local seen
      local srv <close> = listen({ ca = ca.cert, verify_client = "required" }, function(req)
        seen = req.tls.peer
        return 200, nil, req.tls.peer.cn
      end)
      local r = curl(srv, { url(srv, "/") })
      assert.not_equal(0, r.code)
      assert.equal("", r.stdout)
      r = curl(srv, { "--cert", stranger_pair.cert, "--key", stranger_pair.key, url(srv, "/") })
      assert.not_equal(0, r.code)
      assert.equal("", r.stdout)
      assert.is_nil(seen)
      assert.equal(2, srv:stats().tls_failures)
      r = curl(srv, { "--cert", client_pair.cert, "--key", client_pair.key, url(srv, "/") })
      assert.equal(0, r.code, r.stderr)
      assert.equal("collector1", r.stdout)
      assert.is_true(seen.verified)
      assert.equal("CN=collector1", seen.subject)
      assert.equal("CN=sacmrun http test CA", seen.issuer)
      assert.same({ "email:ops@grid.example", "xmpp:collector1@grid.example" }, seen.sans)
      assert.matches("^%x+$", seen.fingerprint)
      assert.equal(64, #seen.fingerprint)
    end)

    it("optional: serves clients without a certificate, still refuses a bad one", function()
      local peers = {}
      local srv <close> = listen({ ca = ca.cert, verify_client = "optional" }, function(req)
        peers[#peers + 1] = req.tls.peer or false
        return 200, nil, req.tls.peer and req.tls.peer.cn or "anonymous"
      end)
      local r = curl(srv, { url(srv, "/") })
      assert.equal("anonymous", r.stdout)
      r = curl(srv, { "--cert", client_pair.cert, "--key", client_pair.key, url(srv, "/") })
      assert.equal("collector1", r.stdout)
      r = curl(srv, { "--cert", stranger_pair.cert, "--key", stranger_pair.key, url(srv, "/") })
      assert.not_equal(0, r.code)
      assert.equal(2, #peers)
    end)
  end)

  it("at its connection limit sheds a connection without a request instead of refusing", function()
    local srv <close> = listen({ limits = { connections = 1 }, timeouts = { headers = 20 } }, echo)
    local holder = task.spawn(s_client, srv, "") -- handshakes, then holds its connection open
    while srv:stats().accepted < 1 do task.sleep(0.01) end
    task.sleep(0.2) -- the handshake is over: the holder is waiting in its headers' deadline
    local t0 = loop.hrtime()
    local r = curl(srv, { url(srv, "/served") })
    assert.equal("GET|/served|-|-|", r.stdout, r.stderr)
    holder:await() -- shed at once, not after its 20 s headers deadline
    assert.is_true((loop.hrtime() - t0) / 1e9 < 5)
    local st = srv:stats()
    assert.equal(1, st.shed)
    assert.equal(0, st.refused)
  end)

  it("refuses a connection only when every connection at the limit has a request in a handler", function()
    local release = sync.event()
    local srv <close> = listen({ limits = { connections = 1 } }, function(req)
      if req.path == "/busy" then release:wait(10) end
      return echo(req)
    end)
    local busy = task.spawn(curl, srv, { url(srv, "/busy") })
    while srv:stats().requests < 1 do task.sleep(0.01) end
    local r = curl(srv, { url(srv, "/refused") })
    assert.not_equal(0, r.code)
    assert.equal(1, srv:stats().refused)
    assert.equal(0, srv:stats().shed)
    release:set()
    assert.equal("GET|/busy|-|-|", busy:await().stdout)
    r = curl(srv, { url(srv, "/served") })
    assert.equal("GET|/served|-|-|", r.stdout)
  end)

  it("caps connections per client address, shedding only that address's own", function()
    -- 127.0.0.2 is loopback too: a second client address without a second host
    local srv <close> = listen({ limits = { connections = 10, per_address = 2 } }, echo)
    local r = assert(proc.run({ "python3", "-c", [[
import socket, sys, time
port = int(sys.argv[1])
def open_from(src):
    s = socket.socket()
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    time.sleep(0.15)
    return s
other = open_from("127.0.0.2")
own = [open_from("127.0.0.1") for _ in range(3)]
time.sleep(0.3)
def state(s):
    s.setblocking(False)
    try:
        return "closed" if s.recv(1) == b"" else "data"
    except BlockingIOError:
        return "open"
    except ConnectionResetError:
        return "closed"
print(" ".join(state(s) for s in [other] + own))
]], tostring(srv.port) }, { timeout = 30 }))
    assert.equal("open closed open open\n", r.stdout, r.stderr)
    assert.equal(1, srv:stats().shed)
  end)

  it("cuts slow clients early: the handshake and the first headers are due from connecting", function()
    local srv <close> = listen({ timeouts = { handshake = 0.3, headers = 1 } }, echo)
    local r = assert(proc.run({ "python3", "-c", [[
import select, socket, ssl, sys, time
port = int(sys.argv[1])
# a TCP client that never starts TLS: closed at the handshake deadline
s = socket.create_connection(("127.0.0.1", port))
s.settimeout(10)
t0 = time.monotonic()
s.recv(100)
print("handshake %.1f" % (time.monotonic() - t0))
# a TLS client trickling its request line one byte every 0.1 s: 408 one second after connecting
ctx = ssl.create_default_context(cafile=sys.argv[2])
t0 = time.monotonic()
t = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
t.settimeout(10)
got = b""
try:
    for b in b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 100:
        t.send(bytes([b]))
        if select.select([t], [], [], 0.1)[0]:
            break # the server answered
except (ssl.SSLError, OSError):
    pass
t0_answer = time.monotonic()
try:
    while True:
        d = t.recv(1000)
        if not d: break
        got += d
except (ssl.SSLError, OSError):
    pass
print("headers %.1f %s" % (t0_answer - t0, got.split(b"\r\n")[0].decode()))
]], tostring(srv.port), ca.cert }, { timeout = 30 }))
    local hs, hd, status = r.stdout:match("^handshake ([%d.]+)\nheaders ([%d.]+) (.*)\n$")
    assert.is_not_nil(hs, r.stdout .. r.stderr)
    assert.is_true(tonumber(hs) < 0.9, r.stdout)
    assert.is_true(tonumber(hd) < 1.9, r.stdout)
    assert.equal("HTTP/1.1 408 Request Timeout", status)
    assert.equal(2, srv:stats().timeouts)
  end)

  it("answers 505 to other HTTP versions, 400 to a request line without one, 413 to an absurd chunk, at once", function()
    local srv <close> = listen(nil, echo)
    for _, case in ipairs {
      { "GET / HTTP/9.9\r\nHost: x\r\n\r\n", 505 },
      { "GET / HTTP/2.0\r\n\r\n", 505 },
      { "GET /\r\n\r\n", 400 },
      { "GET / HTTP/1.1 trailing\r\nHost: x\r\n\r\n", 400 },
      { "GET / FTP/1.1\r\nHost: x\r\n\r\n", 400 },
      { "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n7fffffffffffffff\r\nabc", 413 },
      { "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n100001\r\n", 413 },
    } do
      local t0 = loop.hrtime()
      local r = s_client(srv, case[1]) -- returns only once the server has closed
      assert.equal(case[2], status_of(r.stdout), case[1] .. ": " .. r.stdout .. r.stderr)
      assert.matches("Connection: close", r.stdout)
      assert.is_true((loop.hrtime() - t0) / 1e9 < 5, case[1])
    end
    assert.equal(7, srv:stats().bad_requests)
    assert.equal(0, srv:stats().requests)
    local r = curl(srv, { url(srv, "/after") })
    assert.equal("GET|/after|-|-|", r.stdout)
  end)

  it("survives plain HTTP sent to its TLS port", function()
    local srv <close> = listen(nil, echo)
    local r = assert(proc.run({ "curl", "-sS", "--max-time", "10", ("http://127.0.0.1:%d/"):format(srv.port) }))
    assert.not_equal(0, r.code)
    assert.equal(1, srv:stats().tls_failures)
    r = curl(srv, { url(srv, "/tls") })
    assert.equal("GET|/tls|-|-|", r.stdout)
  end)

  it("lets a busy handler answer when closed, with Connection: close", function()
    local release = sync.event()
    local srv = listen(nil, function()
      release:wait(10)
      return 200, nil, "last words"
    end)
    local pending = task.spawn(curl, srv, { "-i", url(srv, "/busy") })
    while srv:stats().requests < 1 do task.sleep(0.01) end
    srv:close()
    release:set()
    local r = pending:await()
    assert.equal(0, r.code, r.stderr)
    assert.equal(200, status_of(r.stdout))
    assert.matches("\r\nConnection: close\r\n\r\nlast words$", r.stdout)
  end)

  it("stops listening on close", function()
    local srv = listen(nil, echo)
    local r = curl(srv, { url(srv, "/") })
    assert.equal(0, r.code)
    srv:close()
    srv:close() -- idempotent
    r = curl(srv, { url(srv, "/") })
    assert.equal(7, r.code) -- couldn't connect
  end)

  it("reports bad configuration as errors", function()
    local srv, err = http.listen({ cert = dir .. "/missing.crt" }, echo)
    assert.is_nil(srv)
    assert.equal("tls-config", err.condition)
    srv, err = http.listen({ cert = server_pair.cert, key = client_pair.key }, echo)
    assert.is_nil(srv)
    assert.equal("tls-config", err.condition)
    assert.matches("private key", err.text)
    local first <close> = listen(nil, echo)
    srv, err = http.listen({ port = first.port, cert = server_pair.cert, key = server_pair.key }, echo)
    assert.is_nil(srv)
    assert.equal("EADDRINUSE", err.condition)
    assert.has_error(function() http.listen({ cert = server_pair.cert, verify_client = "required" }, echo) end)
    assert.has_error(function() http.listen({ cert = server_pair.cert, limits = { bogus = 1 } }, echo) end)
    assert.has_error(function() http.listen({ cert = server_pair.cert, max_body = 1 }, echo) end)
    -- options the C side checks are all read before it allocates (under ASan: nothing leaks)
    for _, bad in ipairs {
      { { limits = { connections = 0 } }, "http.listen: option max_connections must be an integer >= 1, got 0" },
      { { limits = { per_address = 0 } }, "http.listen: option max_per_address must be an integer >= 1, got 0" },
      { { limits = { body = -1 } }, "http.listen: option max_body must be an integer >= 0, got -1" },
      { { timeouts = { handshake = "soon" } }, "http timeout handshake must be a non-negative number of seconds" } } do
      local o = { cert = server_pair.cert, key = server_pair.key }
      for k, v in pairs(bad[1]) do o[k] = v end
      local ok, msg = pcall(http.listen, o, echo)
      assert.is_false(ok)
      assert.truthy(tostring(msg):find(bad[2], 1, true), tostring(msg))
    end
  end)
end)

describe("sacm.http helpers", function()
  local http = require "sacm.http"

  it("writes and reads IMF-fixdate (RFC 9110 5.6.7), the one date form it sends", function()
    assert.equal("Thu, 01 Jan 1970 00:00:00 GMT", http.date(0))
    assert.equal("Tue, 14 Nov 2023 22:13:20 GMT", http.date(1700000000.9))
    for _, t in ipairs({ 0, 951782400, 1700000000, 4102444799 }) do
      assert.equal(t, http.parse_date(http.date(t)))
    end
    -- the obsolete forms, a wrong month and nothing at all are not dates
    assert.is_nil(http.parse_date("Sunday, 06-Nov-94 08:49:37 GMT"))
    assert.is_nil(http.parse_date("Sun Nov  6 08:49:37 1994"))
    assert.is_nil(http.parse_date("Sun, 06 Now 1994 08:49:37 GMT"))
    assert.is_nil(http.parse_date(nil))
  end)
end)
