-- The HTTPS client (http.request) against real servers: sacm.http's own server, nginx, and
-- spec/support/tls_responder.py (Python's ssl module) for the answers well-behaved servers do
-- not give (bodies ended by the connection, truncation, interim and malformed responses, silence,
-- a kept-alive connection closed under the next request).
local http = require "sacm.http"
local proc = require "sacm.proc"
local fs = require "sacm.fs"
local sync = require "sacm.sync"
local task = require "sacm.task"
local certs = require "support.certs"
local time = require "sacm.time"

local dir, ca, other_ca, server_pair, name_only_pair, wrong_name_pair, client_pair

local function listen(opts, handler)
  local o = { host = "127.0.0.1", port = 0, cert = server_pair.cert, key = server_pair.key }
  for k, v in pairs(opts or {}) do o[k] = v end
  return assert(http.listen(o, handler))
end

local function url(srv_or_port, path, host)
  local port = type(srv_or_port) == "number" and srv_or_port or srv_or_port.port
  return ("https://%s:%d%s"):format(host or "localhost", port, path)
end

local function echo(req)
  local out = { req.method, req.target, req.headers.host, req.headers["user-agent"] or "-",
                req.headers.accept or "-", req.body }
  return 200, { ["Content-Type"] = "text/plain", ["X-Twice"] = { "a", "b" } }, table.concat(out, "|")
end

-- Waits until something accepts connections on port (a server started as a process).
local function wait_listening(port)
  for _ = 1, 200 do
    local r = assert(proc.run({ "sh", "-c", ("grep -q ':%04X 00000000:0000 0A' /proc/net/tcp"):format(port) }))
    if r.ok then return end
    task.sleep(0.02)
  end
  error("nothing listens on port " .. port)
end

-- Runs argv until the returned stop() (the task's cancellation kills its process group).
local function start_process(argv)
  local t = task.spawn({ name = argv[1], silent = true }, proc.run, argv, { timeout = 300 })
  return function()
    t:cancel()
    t:await()
  end
end

local function read_port(file)
  for _ = 1, 3000 do -- up to 30 s: building its answers takes python several seconds on a loaded machine
    local text = fs.read(file)
    if text and text ~= "" then return tonumber(text) end
    task.sleep(0.01)
  end
  error("no port in " .. file)
end

describe("http.request #e2e", function()
  lazy_setup(function()
    local r = assert(proc.run({ "mktemp", "-d", "/tmp/sacmrun-httpc-XXXXXXXXXX" }))
    dir = r.stdout:gsub("%s+$", "")
    ca = certs.ca(dir, "ca", "sacmrun http client test CA")
    other_ca = certs.ca(dir, "other-ca", "sacmrun untrusted test CA")
    server_pair = certs.server(ca, dir .. "/server", { dns = { "localhost" }, ips = { "127.0.0.1", "::1" } })
    name_only_pair = certs.server(ca, dir .. "/name-only", { dns = { "localhost" } })
    wrong_name_pair = certs.server(ca, dir .. "/wrong-name", { dns = { "repository.example" }, ips = { "127.0.0.2" } })
    client_pair = certs.client(ca, dir .. "/collector", { cn = "collector1", xmpp = { "collector1@grid.example" } })
  end)
  lazy_teardown(function()
    if dir then proc.run({ "rm", "-rf", "--", dir }) end
  end)

  describe("against sacm.http", function()
    it("GETs by name and by IP address, verified against the CA, with request and response headers", function()
      local srv <close> = listen(nil, echo)
      local res, err = http.request{ url = url(srv, "/rolie/servicedocument?x=1#frag"),
        headers = { accept = "application/atomsvc+xml" }, cafile = ca.cert }
      assert.is_nil(err)
      assert.equal(200, res.status)
      assert.equal("OK", res.reason)
      assert.equal("HTTP/1.1", res.version)
      assert.equal("text/plain", res.headers["content-type"])
      assert.equal("a, b", res.headers["x-twice"])
      assert.equal("keep-alive", res.headers.connection:lower())
      assert.equal(("GET|/rolie/servicedocument?x=1|localhost:%d|%s|application/atomsvc+xml|"):format(
        srv.port, require("sacm.http.client").USER_AGENT), res.body)
      assert.matches("^TLSv1%.[23]$", res.tls.version)

      res = assert(http.request{ url = url(srv, "/ip", "127.0.0.1"), cafile = ca.cert })
      assert.equal(("GET|/ip|127.0.0.1:%d|"):format(srv.port), res.body:match("^GET|/ip|[^|]*|"))
    end)

    it("GETs over IPv6 with a bracketed address", function()
      local srv <close> = listen({ host = "::1" }, echo)
      local res = assert(http.request{ url = url(srv, "/six", "[::1]"), cafile = ca.cert })
      assert.equal(("GET|/six|[::1]:%d|"):format(srv.port), res.body:match("^GET|/six|[^|]*|"))
    end)

    it("POSTs a body, sends HEAD without reading a body, takes 304 and 204 without one, returns redirects", function()
      local srv <close> = listen(nil, function(req)
        if req.path == "/cached" then
          assert.equal('"v1"', req.headers["if-none-match"])
          return 304, { ETag = '"v1"' }
        end
        if req.path == "/empty" then return 204 end
        if req.path == "/moved" then return 302, { Location = "/elsewhere" }, "" end
        if req.path == "/list" then return 200, nil, req.headers["x-list"] end
        return echo(req)
      end)
      local res = assert(http.request{ method = "POST", url = url(srv, "/entries"), cafile = ca.cert,
        headers = { ["Content-Type"] = "application/atom+xml;type=entry" }, body = "<entry/>" })
      assert.equal(200, res.status)
      assert.matches("^POST|/entries|.*|<entry/>$", res.body)

      res = assert(http.request{ url = url(srv, "/entrées?q=é"), cafile = ca.cert })
      assert.matches("^GET|/entr%%C3%%A9es%?q=%%C3%%A9|", res.body)

      res = assert(http.request{ method = "HEAD", url = url(srv, "/head"), cafile = ca.cert })
      assert.equal(200, res.status)
      assert.equal("", res.body)
      assert.is_true(tonumber(res.headers["content-length"]) > 0)

      res = assert(http.request{ url = url(srv, "/cached"), cafile = ca.cert, headers = { ["If-None-Match"] = '"v1"' } })
      assert.equal(304, res.status)
      assert.equal("Not Modified", res.reason)
      assert.equal('"v1"', res.headers.etag)
      assert.equal("", res.body)

      -- redirects are returned, not followed; a list value sends the header once per element
      res = assert(http.request{ url = url(srv, "/moved"), cafile = ca.cert })
      assert.equal(302, res.status)
      assert.equal("/elsewhere", res.headers.location)
      res = assert(http.request{ url = url(srv, "/list"), cafile = ca.cert, headers = { ["X-List"] = { "a", "b" } } })
      assert.equal("a, b", res.body)

      res = assert(http.request{ method = "DELETE", url = url(srv, "/empty"), cafile = ca.cert })
      assert.equal(204, res.status)
      assert.equal("", res.body)
    end)

    it("reads a large body intact", function()
      local big = {}
      for i = 1, 200000 do big[i] = string.char(i % 251) .. "x" end
      big = table.concat(big) -- 400 KB of varied bytes
      local srv <close> = listen(nil, function() return 200, nil, big:rep(10) end)
      local res = assert(http.request{ url = url(srv, "/big"), cafile = ca.cert })
      assert.equal(#big * 10, #res.body)
      assert.is_true(res.body == big:rep(10))
    end)

    it("refuses a body above max_body as too-large, by Content-Length before reading it", function()
      local srv <close> = listen(nil, function() return 200, nil, ("x"):rep(100000) end)
      local res, err = http.request{ url = url(srv, "/"), cafile = ca.cert, max_body = 99999 }
      assert.is_nil(res)
      assert.equal("too-large", err.condition)
      assert.matches("100000 bytes", err.text)
      res = assert(http.request{ url = url(srv, "/"), cafile = ca.cert, max_body = 100000 })
      assert.equal(100000, #res.body)
    end)

    it("presents a client certificate the server verifies", function()
      local srv <close> = listen({ ca = ca.cert, verify_client = "required" }, function(req)
        return 200, nil, req.tls.peer.cn
      end)
      local res = assert(http.request{ url = url(srv, "/who"), cafile = ca.cert,
        cert = client_pair.cert, key = client_pair.key })
      assert.equal("collector1", res.body)
      -- without one, the server ends the handshake
      local _, err = http.request{ url = url(srv, "/who"), cafile = ca.cert }
      assert.equal("tls-failed", err.condition)
    end)

    it("fails with tls-verification-failed for an unknown CA, a wrong name or a wrong IP address", function()
      local srv <close> = listen(nil, echo)
      local _, err = http.request{ url = url(srv, "/"), cafile = other_ca.cert }
      assert.equal("tls-verification-failed", err.condition)
      assert.matches("unable to get local issuer certificate", err.text)
      -- the system store does not know the test CA either
      _, err = http.request{ url = url(srv, "/") }
      assert.equal("tls-verification-failed", err.condition)

      local wrong <close> = listen({ cert = wrong_name_pair.cert, key = wrong_name_pair.key }, echo)
      _, err = http.request{ url = url(wrong, "/"), cafile = ca.cert }
      assert.equal("tls-verification-failed", err.condition)
      assert.matches("hostname mismatch", err.text)
      _, err = http.request{ url = url(wrong, "/", "127.0.0.1"), cafile = ca.cert }
      assert.equal("tls-verification-failed", err.condition)
      assert.matches("IP address mismatch", err.text)

      -- a certificate naming only localhost does not stand for 127.0.0.1
      local named <close> = listen({ cert = name_only_pair.cert, key = name_only_pair.key }, echo)
      _, err = http.request{ url = url(named, "/", "127.0.0.1"), cafile = ca.cert }
      assert.equal("tls-verification-failed", err.condition)
      assert(http.request{ url = url(named, "/"), cafile = ca.cert })
    end)

    it("skips verification only when asked (insecure = true)", function()
      local srv <close> = listen({ cert = wrong_name_pair.cert, key = wrong_name_pair.key }, echo)
      local res = assert(http.request{ url = url(srv, "/anyway"), insecure = true })
      assert.equal(200, res.status)
    end)

    it("fails with ECONNREFUSED when nothing listens", function()
      local srv = listen(nil, echo)
      local port = srv.port
      srv:close()
      local res, err = http.request{ url = url(port, "/", "127.0.0.1"), cafile = ca.cert }
      assert.is_nil(res)
      assert.equal("ECONNREFUSED", err.condition)
    end)

    it("times out when the handler does not answer, and other tasks run meanwhile", function()
      local release = sync.event()
      local srv <close> = listen(nil, function()
        release:wait(30)
        return 200, nil, "late"
      end)
      local ticks = 0
      local ticker = task.spawn(function()
        while true do
          task.sleep(0.01)
          ticks = ticks + 1
        end
      end)
      local res, err = http.request{ url = url(srv, "/slow?token=s3cret"), cafile = ca.cert, timeout = 0.3 }
      ticker:cancel()
      release:set()
      assert.is_nil(res)
      assert.equal("timeout", err.condition)
      -- what failed, without the query (it may hold a token)
      assert.equal(("GET %s: no complete response within 0.3s"):format(url(srv, "/slow")), err.text)
      assert.is_true(ticks > 0, "the loop was blocked")
    end)

    it("runs requests at once from several tasks", function()
      local srv <close> = listen(nil, echo)
      local tasks = {}
      for i = 1, 20 do
        tasks[i] = task.spawn(http.request, { url = url(srv, "/n" .. i), cafile = ca.cert })
      end
      for i, r in ipairs(task.all(tasks, 30)) do
        assert.equal(200, r.value.status)
        assert.matches("^GET|/n" .. i .. "|", r.value.body)
      end
    end)

    it("stops the request when its task is cancelled, leaving nothing open", function()
      local started = sync.event()
      local release = sync.event()
      local srv <close> = listen(nil, function()
        started:set()
        release:wait(30)
        return 200, nil, "late"
      end)
      local t = task.spawn(http.request, { url = url(srv, "/"), cafile = ca.cert })
      assert(started:wait(10))
      t:cancel()
      local _, err = t:await()
      assert.equal("cancelled", err.condition)
      release:set()
      -- (spec/run.lua fails the run if a handle of the request were left open)
    end)
  end)

  describe("keep-alive against sacm.http", function()
    before_each(function() http.close_idle() end)
    after_each(function() http.close_idle() end)

    -- the pool's counters since the last call (they count from the program's start)
    local last
    local function pool_delta()
      local now = http.pool_stats()
      local d = { idle = now.idle, reused = now.reused - (last and last.reused or 0),
                  opened = now.opened - (last and last.opened or 0) }
      last = now
      return d
    end

    it("sends 50 sequential GETs over one connection", function()
      local srv <close> = listen(nil, echo)
      pool_delta()
      for i = 1, 50 do
        local res = assert(http.request{ url = url(srv, "/n" .. i), cafile = ca.cert })
        assert.matches("^GET|/n" .. i .. "|", res.body)
      end
      assert.equal(1, srv:stats().accepted)
      assert.same({ idle = 1, reused = 49, opened = 1 }, pool_delta())
      http.close_idle()
      assert.equal(0, http.pool_stats().idle)
    end)

    it("does not send a request into a connection the server closed while it was idle", function()
      local srv <close> = listen({ timeouts = { idle = 0.2 } }, echo)
      assert(http.request{ url = url(srv, "/1"), cafile = ca.cert })
      assert.equal(1, http.pool_stats().idle)
      task.sleep(0.5)
      -- the parked connection read the server's close_notify and closed
      assert.equal(0, http.pool_stats().idle)
      local res = assert(http.request{ url = url(srv, "/2"), cafile = ca.cert })
      assert.equal(200, res.status)
      assert.equal(2, srv:stats().accepted)
    end)

    it("keeps no connection the server or the request said to close", function()
      local srv <close> = listen(nil, function(req)
        if req.path == "/last" then return 200, { Connection = "close" }, "bye" end
        return echo(req)
      end)
      local res = assert(http.request{ url = url(srv, "/last"), cafile = ca.cert })
      assert.equal("close", res.headers.connection)
      assert.equal(0, http.pool_stats().idle)
      assert(http.request{ url = url(srv, "/next"), cafile = ca.cert })
      assert.equal(2, srv:stats().accepted)
      assert.equal(1, http.pool_stats().idle)
      -- keep_alive = false: a connection of its own, with Connection: close, not kept after
      res = assert(http.request{ url = url(srv, "/own"), cafile = ca.cert, keep_alive = false })
      assert.equal("close", res.headers.connection)
      assert.equal(3, srv:stats().accepted)
      assert.equal(1, http.pool_stats().idle)
      assert(http.request{ url = url(srv, "/pooled"), cafile = ca.cert })
      assert.equal(3, srv:stats().accepted)
    end)

    it("never reuses the connection of a timed-out, cancelled or too-large request", function()
      local release = sync.event()
      local started = sync.event()
      local srv <close> = listen(nil, function(req)
        if req.path == "/slow" then
          started:set()
          release:wait(30)
        end
        if req.path == "/big" then return 200, nil, ("x"):rep(1000) end
        return echo(req)
      end)
      local function accepted() return srv:stats().accepted end
      assert(http.request{ url = url(srv, "/a"), cafile = ca.cert })
      local _, err = http.request{ url = url(srv, "/slow"), cafile = ca.cert, timeout = 0.3 }
      assert.equal("timeout", err.condition)
      assert.equal(1, accepted()) -- it went on the kept connection
      assert.equal(0, http.pool_stats().idle)
      assert(http.request{ url = url(srv, "/b"), cafile = ca.cert })
      assert.equal(2, accepted())

      started:clear()
      local t = task.spawn(http.request, { url = url(srv, "/slow"), cafile = ca.cert })
      assert(started:wait(10))
      t:cancel()
      assert.equal("cancelled", select(2, t:await()).condition)
      assert.equal(0, http.pool_stats().idle)
      assert(http.request{ url = url(srv, "/c"), cafile = ca.cert })
      assert.equal(3, accepted())

      _, err = http.request{ url = url(srv, "/big"), cafile = ca.cert, max_body = 10 }
      assert.equal("too-large", err.condition)
      assert.equal(0, http.pool_stats().idle)
      assert(http.request{ url = url(srv, "/d"), cafile = ca.cert })
      assert.equal(4, accepted())
      release:set()
    end)

    it("PUTs 2 MB bodies on a kept connection", function()
      local parts = {}
      for i = 1, 2 * 1024 * 1024 / 8 do parts[i] = ("%08x"):format(i * 2654435761 % 4294967296) end
      local big = table.concat(parts)
      local srv <close> = listen({ limits = { body = 4 * 1024 * 1024 } }, function(req)
        if req.method == "PUT" then return 201, nil, ("%d %s"):format(#req.body, tostring(req.body == big)) end
        return echo(req)
      end)
      pool_delta()
      assert(http.request{ url = url(srv, "/before"), cafile = ca.cert })
      for i = 1, 2 do
        local res = assert(http.request{ method = "PUT", url = url(srv, "/upload/" .. i), cafile = ca.cert, body = big })
        assert.equal(201, res.status)
        assert.equal(#big .. " true", res.body)
      end
      local res = assert(http.request{ url = url(srv, "/after"), cafile = ca.cert })
      assert.matches("^GET|/after|", res.body)
      assert.equal(1, srv:stats().accepted)
      assert.same({ idle = 1, reused = 3, opened = 1 }, pool_delta())
    end)

    it("keeps one pool entry per host, port and TLS options, and verifies each new one", function()
      local copy = dir .. "/ca-copy.pem"
      assert(fs.write(copy, assert(fs.read(ca.cert))))
      local srv <close> = listen(nil, echo)
      local function accepted() return srv:stats().accepted end
      assert(http.request{ url = url(srv, "/1"), cafile = ca.cert })
      assert(http.request{ url = url(srv, "/2"), cafile = copy })
      assert.equal(2, accepted())
      assert.equal(2, http.pool_stats().idle)
      assert(http.request{ url = url(srv, "/3"), cafile = ca.cert })
      assert(http.request{ url = url(srv, "/4"), cafile = copy })
      assert.equal(2, accepted())
      -- the same server by IP address is another entry: its certificate is checked for the address
      assert(http.request{ url = url(srv, "/5", "127.0.0.1"), cafile = ca.cert })
      assert.equal(3, accepted())
      -- a CA that does not know the server gets no verified connection from the pool
      local _, err = http.request{ url = url(srv, "/6"), cafile = other_ca.cert }
      assert.equal("tls-verification-failed", err.condition)
      assert.equal(4, accepted())
      -- and a request that verifies never gets a connection made without verification
      assert(http.request{ url = url(srv, "/7"), insecure = true })
      assert.equal(5, accepted())
      assert(http.request{ url = url(srv, "/8"), cafile = ca.cert })
      assert.equal(5, accepted())
      assert.equal(4, http.pool_stats().idle)
    end)

    it("keeps at most MAX_IDLE_PER_KEY connections per key and MAX_IDLE in all", function()
      local pool = require "sacm.http.pool"
      local arrived, all_there = 0, sync.event()
      local srv <close> = listen(nil, function(req)
        arrived = arrived + 1
        if arrived == 10 then all_there:set() end
        all_there:wait(10) -- all ten at once: each needs a connection of its own
        return echo(req)
      end)
      pool_delta()
      local tasks = {}
      for i = 1, 10 do tasks[i] = task.spawn(http.request, { url = url(srv, "/c" .. i), cafile = ca.cert }) end
      for _, r in ipairs(task.all(tasks, 30)) do assert.equal(200, r.value.status) end
      assert.same({ idle = pool.MAX_IDLE_PER_KEY, reused = 0, opened = 10 }, pool_delta())

      http.close_idle()
      local saved = pool.MAX_IDLE
      pool.MAX_IDLE = 2
      local ok, err = pcall(function()
        local others = { listen(nil, echo), listen(nil, echo) }
        assert(http.request{ url = url(srv, "/first"), cafile = ca.cert })
        for _, other in ipairs(others) do assert(http.request{ url = url(other, "/"), cafile = ca.cert }) end
        assert.equal(2, http.pool_stats().idle)
        -- the connection idle longest (to srv) made room
        assert(http.request{ url = url(srv, "/again"), cafile = ca.cert })
        assert.equal(12, srv:stats().accepted)
        for _, other in ipairs(others) do other:close() end
      end)
      pool.MAX_IDLE = saved
      assert(ok, err)
    end)

    it("lets a script end while connections are kept", function()
      -- (the server would keep the idle connection open for a minute: a client waiting for it shows)
      local srv <close> = listen({ timeouts = { idle = 60 } }, echo)
      local script = ([[
        local http = require "sacm.http"
        local res = assert(http.request{ url = %q, cafile = %q })
        assert(http.pool_stats().idle == 1, "the connection was not kept")
        print(res.status)
      ]]):format(url(srv, "/child"), ca.cert)
      local started = time.monotonic()
      local r = assert(proc.run({ os.getenv("SACMRUN_BIN") or "./sacmrun", "-e", script },
        { timeout = 20, env = { SACMRUN_STRICT_EXIT = "1" } }))
      local took = time.monotonic() - started
      assert.equal(0, r.code, r.stderr)
      assert.equal("200\n", r.stdout)
      assert.is_true(took < 10, ("the script took %.1f s to exit"):format(took))
      assert.equal(1, srv:stats().accepted)
    end)
  end)

  describe("against a plain TCP listener", function()
    it("times out when the server never starts the TLS handshake", function()
      local port_file = dir .. "/silent.port"
      local stop = start_process({ "python3", "-c", [[
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(4)
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
conns = []
while True:
    conns.append(s.accept()[0])
]], port_file })
      local port = read_port(port_file)
      local res, err = http.request{ url = url(port, "/", "127.0.0.1"), cafile = ca.cert, timeout = 0.5 }
      stop()
      assert.is_nil(res)
      assert.equal("timeout", err.condition)
    end)
  end)

  describe("against tls_responder.py", function()
    local port, stop
    lazy_setup(function()
      local port_file = dir .. "/responder.port"
      stop = start_process({ "python3", "spec/support/tls_responder.py", server_pair.cert, server_pair.key, port_file })
      port = read_port(port_file)
    end)
    lazy_teardown(function() if stop then stop() end end)

    local function get(path, opts)
      local o = { url = url(port, path), cafile = ca.cert, timeout = 10 }
      for k, v in pairs(opts or {}) do o[k] = v end
      return http.request(o)
    end

    local big = {}
    for i = 0, 255 do big[#big + 1] = string.char(i) end
    big = table.concat(big):rep(4096)

    it("reads a body delimited by the end of the connection when TLS close_notify ends it", function()
      local res = assert(get("/close-delimited"))
      assert.equal(#big, #res.body)
      assert.is_true(res.body == big)
      res = assert(get("/http10"))
      assert.equal("HTTP/1.0", res.version)
      assert.equal("old style", res.body)
    end)

    it("refuses a connection-delimited body cut without close_notify, and a short body", function()
      local res, err = get("/truncated")
      assert.is_nil(res)
      assert.equal("bad-response", err.condition)
      assert.matches("close_notify", err.text)
      res, err = get("/short")
      assert.is_nil(res)
      assert.equal("bad-response", err.condition)
      assert.matches("before the response ended", err.text)
    end)

    it("decodes a chunked body, and refuses one above max_body while it arrives", function()
      local res = assert(get("/chunked"))
      assert.is_true(res.body == big)
      assert.equal("chunked", res.headers["transfer-encoding"])
      local _, err = get("/chunked", { max_body = 500000 })
      assert.equal("too-large", err.condition)
      _, err = get("/close-delimited", { max_body = 1000 })
      assert.equal("too-large", err.condition)
    end)

    it("skips an interim response and joins repeated headers", function()
      local res = assert(get("/interim"))
      assert.equal(200, res.status)
      assert.equal("final", res.body)
      assert.equal("a=1, b=2", res.headers["set-cookie"])
    end)

    it("takes a 304 as complete at the end of its head, whatever Content-Length says", function()
      local res = assert(get("/not-modified"))
      assert.equal(304, res.status)
      assert.equal("", res.body)
      assert.equal("1234", res.headers["content-length"])
    end)

    it("sends a GET again on a new connection when the server closed the kept one under it, not a POST", function()
      http.close_idle()
      local res = assert(get("/keep-then-drop"))
      local first = tonumber(res.body:match("^connection (%d+)$"))
      local before = http.pool_stats()
      -- the responder reads this request on the kept connection, then closes it unanswered
      res = assert(get("/keep-then-drop"))
      assert.equal("connection " .. (first + 1), res.body)
      local after = http.pool_stats()
      assert.equal(1, after.reused - before.reused)
      assert.equal(1, after.opened - before.opened)
      local _, err = get("/keep-then-drop", { method = "POST", body = "twice?" })
      assert.matches("not sent twice", err.text)
      assert.matches("^POST https://", err.text)
      assert.equal(0, http.pool_stats().idle)
    end)

    it("lets a kept connection go before the server's Keep-Alive timeout", function()
      http.close_idle()
      assert.equal("ok", assert(get("/keep-alive-timeout")).body)
      assert.equal(1, http.pool_stats().idle)
      task.sleep(0.2)
      assert.equal(1, http.pool_stats().idle)
      task.sleep(0.5) -- timeout=1: kept for half of it
      assert.equal(0, http.pool_stats().idle)
    end)

    it("reports malformed and missing responses as bad-response, silence as timeout", function()
      local _, err = get("/malformed")
      assert.equal("bad-response", err.condition)
      _, err = get("/nothing")
      assert.equal("bad-response", err.condition)
      assert.matches("without a response", err.text)
      _, err = get("/silent", { timeout = 0.3 })
      assert.equal("timeout", err.condition)
    end)
  end)

  describe("against nginx #e2e", function()
    local port, stop, page
    lazy_setup(function()
      local nginx = fs.stat("/usr/sbin/nginx") and "/usr/sbin/nginx" or "nginx"
      local root = dir .. "/nginx"
      assert(proc.run({ "mkdir", "-p", root .. "/www", root .. "/logs" }))
      local parts = {}
      for i = 1, 30000 do parts[i] = ("line %05d of a static feed\n"):format(i) end
      page = table.concat(parts)
      assert(fs.write(root .. "/www/feed.xml", page))
      assert(fs.write(root .. "/www/part.txt", "included"))
      assert(fs.write(root .. "/www/page.shtml", "before <!--# include file=\"part.txt\" --> after\n"))
      local r = assert(proc.run({ "python3", "-c",
        "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])" }))
      port = tonumber(r.stdout)
      assert(fs.write(root .. "/nginx.conf", ([[
daemon off;
master_process off;
pid %s/nginx.pid;
error_log %s/logs/error.log warn;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path %s/body;
    proxy_temp_path %s/proxy;
    fastcgi_temp_path %s/fastcgi;
    uwsgi_temp_path %s/uwsgi;
    scgi_temp_path %s/scgi;
    default_type text/plain;
    server {
        listen 127.0.0.1:%d ssl;
        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_protocols TLSv1.2 TLSv1.3;
        root %s/www;
        location ~ \.shtml$ { ssi on; ssi_types text/plain; }
    }
}
]]):format(root, root, root, root, root, root, root, port, server_pair.cert, server_pair.key, root)))
      stop = start_process({ nginx, "-p", root, "-c", root .. "/nginx.conf", "-e", root .. "/logs/error.log" })
      wait_listening(port)
    end)
    lazy_teardown(function() if stop then stop() end end)

    it("fetches a static file with Content-Length", function()
      local res = assert(http.request{ url = url(port, "/feed.xml"), cafile = ca.cert })
      assert.equal(200, res.status)
      assert.equal(tostring(#page), res.headers["content-length"])
      assert.is_true(res.body == page)
      res = assert(http.request{ url = url(port, "/missing"), cafile = ca.cert })
      assert.equal(404, res.status)
      assert.equal("Not Found", res.reason)
    end)

    it("fetches a chunked page (server-side includes)", function()
      local res = assert(http.request{ url = url(port, "/page.shtml"), cafile = ca.cert })
      assert.equal(200, res.status)
      assert.equal("before included after\n", res.body, require("sacm.pretty").format(res.headers))
      assert.equal("chunked", res.headers["transfer-encoding"])
    end)

    it("answers 304 to a conditional GET with no body", function()
      local res = assert(http.request{ url = url(port, "/feed.xml"), cafile = ca.cert })
      res = assert(http.request{ url = url(port, "/feed.xml"), cafile = ca.cert,
        headers = { ["If-None-Match"] = res.headers.etag } })
      assert.equal(304, res.status)
      assert.equal("", res.body)
    end)
  end)

  describe("URLs", function()
    it("refuses what is not an https URL with a host as bad-url", function()
      for _, u in ipairs({ "http://localhost/", "ftp://x/", "localhost:443/", "https:///path", "https://user:pw@host/",
                           "https://host:99999/", "https://host:x/", "https://[nothex]/", "https://ho st/",
                           "https://host/\r\nX: y", "https://bad_%41/" }) do
        local res, err = http.request{ url = u }
        assert.is_nil(res, u)
        assert.equal("bad-url", err.condition, u)
      end
    end)

    it("raises on programmer errors", function()
      assert.has_error(function() http.request{ url = "https://x/", bogus = 1 } end)
      assert.has_error(function() http.request{ url = "https://x/", headers = { ["Bad Name"] = "v" } } end)
      assert.has_error(function() http.request{ url = "https://x/", headers = { Host = "y" } } end)
      assert.has_error(function() http.request{ url = "https://x/", headers = { X = "a\r\nB: c" } } end)
      assert.has_error(function() http.request{ url = "https://x/", method = "get" } end)
      assert.has_error(function() http.request{ url = "https://x/", method = "HEAD", body = "x" } end)
      assert.has_error(function() http.request{ url = "https://x/", max_body = -1 } end)
    end)

    it("reports a missing CA file as tls-config and an unknown name as a resolver error", function()
      local _, err = http.request{ url = "https://localhost:1/", cafile = dir .. "/nope.pem" }
      assert.equal("tls-config", err.condition)
      _, err = http.request{ url = "https://no-such-host.invalid/", cafile = ca.cert }
      assert.matches("^EAI_", err.condition)
      assert.matches("no%-such%-host%.invalid", err.text)
    end)
  end)
end)
