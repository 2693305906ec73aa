-- The XMPP stack end to end against a second, independent server: a real, private ejabberd 23.01
-- on loopback (spec/support/ejabberd.lua). One server for the whole file (it takes ~1.5 s to start
-- and ~1 s to stop); the last test kills and restarts it.
local ejabberd = require "support.ejabberd"
local harness = require "support.harness"
local xmpp = require "sacm.xmpp"
local xml = require "sacm.xml"
local st = require "sacm.xmpp.stanza"
local task = require "sacm.task"
local sync = require "sacm.sync"
local fs = require "sacm.fs"
local disco = require "sacm.xmpp.disco"
local pubsub = require "sacm.xmpp.pubsub"

local NS_ECHO = "urn:example:sacm:echo"
local NS_POSTURE = "urn:example:sacm:posture"
-- Small enough that a client whose XEP-0198 'h' misses a few dozen stanzas is thrown out, large
-- enough for the bursts below (20 concurrent requests) from a client that counts right.
local MAX_ACK_QUEUE = 40

describe("sacm.xmpp against ejabberd #e2e", function()
  local server
  local opened = {}

  local function connect(user, extra)
    local opts = {
      jid = server:jid(user) .. "/spec", password = user .. "-secret",
      host = server.host, port = server.port, cafile = server.ca_file, max_backoff = 0.5,
    }
    for k, v in pairs(extra or {}) do opts[k] = v end
    local conn, err = xmpp.connect(opts)
    opened[#opened + 1] = conn
    return conn, err
  end

  -- a failed assertion must not leave a connection reconnecting into the next test
  after_each(function()
    for _, conn in ipairs(opened) do conn:close() end
    opened = {}
  end)

  -- What ejabberd logged since `from` (a byte offset of its log).
  local function log_since(from) return server:log():sub(from + 1) end

  -- Whether ejabberd logs `text` (plain) after `from` within `timeout` seconds: its file logger
  -- writes with a delay.
  local function logs(from, text, timeout)
    local deadline = require("sacm.time").monotonic() + (timeout or 5)
    repeat
      if log_since(from):find(text, 1, true) then return true end
      task.sleep(0.05)
    until require("sacm.time").monotonic() > deadline
    return false
  end

  lazy_setup(function()
    server = ejabberd.start({
      users = { alice = "alice-secret", bob = "bob-secret" },
      max_ack_queue = MAX_ACK_QUEUE,
    })
  end)
  lazy_teardown(function()
    if server then server:stop() end
  end)

  it("runs privately: a 0700 directory, loopback listeners only, no Erlang distribution", function()
    assert.equal(tonumber("700", 8), assert(fs.stat(server.dir)).mode & tonumber("777", 8))
    local ports = {}
    for _, l in ipairs(harness.listeners(server.pid)) do
      assert.equal("127.0.0.1", l.address)
      ports[#ports + 1] = l.port
    end
    table.sort(ports)
    local want = { server.port, server.cert_port, server.http_port }
    table.sort(want)
    assert.same(want, ports) -- in particular no epmd/distribution port
    assert.same({ "alice", "bob" }, server:users())
    assert.has_error(function() server:register("alice", "again") end)
  end)

  it("logs in over verified TLS with SCRAM, and refuses a wrong password", function()
    local conn, err = connect("alice")
    assert.is_not_nil(conn, tostring(err))
    assert.equal(server:jid("alice") .. "/spec", conn.jid)
    assert.is_true(conn.c:secured())
    conn:close()
    local none, err2 = connect("alice", { password = "wrong" })
    assert.is_nil(none)
    assert.equal("not-authorized", err2.condition)
    assert.matches("^not%-authorized: the server refused the credentials of " .. server:jid("alice"):gsub("%p", "%%%0")
      .. " %(SASL [%w-]+: [^)]+%); check the JID and password$", tostring(err2))
    local untrusted, err3 = connect("alice", { cafile = "/etc/ssl/certs/ca-certificates.crt" })
    assert.is_nil(untrusted)
    assert.equal("tls-verification-failed", err3.condition)
    assert.matches("did not verify against the CA file /etc/ssl/certs/ca%-certificates%.crt: "
      .. "unable to get local issuer certificate", tostring(err3))
  end)

  it("logs in with SASL EXTERNAL and a client certificate's xmppAddr, and refuses an untrusted one", function()
    local pair = server:client_cert(server:jid("carol"))
    local conn, err = xmpp.connect({
      client_cert = pair.cert, client_key = pair.key, resource = "cert",
      host = server.host, port = server.cert_port, cafile = server.ca_file,
    })
    assert.is_not_nil(conn, tostring(err))
    assert.equal(server:jid("carol") .. "/cert", conn.jid)
    assert(conn:ping(nil, 5))
    conn:close()
    local bad = server:client_cert(server:jid("mallory"), { untrusted = true })
    local none, err2 = xmpp.connect({
      client_cert = bad.cert, client_key = bad.key,
      host = server.host, port = server.cert_port, cafile = server.ca_file, reconnect = false,
    })
    assert.is_nil(none)
    assert.is_not_nil(err2)
  end)

  it("routes iq requests to handlers and back, 20 at once over two connections", function()
    local a, b = assert(connect("alice")), assert(connect("bob"))
    for _, conn in ipairs({ a, b }) do
      conn:on("iq", { type = "get", ns = NS_ECHO }, function(s)
        local q = s:child("query")
        if q.attr.fail then return nil, require("sacm.error").new("item-not-found", "no " .. q.attr.fail) end
        return xml.element("query", { xmlns = NS_ECHO, said = q.attr.say })
      end)
    end
    local reply = assert(b:iq(st.iq({ type = "get", to = a.jid }):tag("query", { xmlns = NS_ECHO, say = "hi" })))
    assert.equal("hi", reply:child("query").attr.said)
    local none, err = b:iq(st.iq({ type = "get", to = a.jid }):tag("query", { xmlns = NS_ECHO, fail = "such thing" }))
    assert.is_nil(none)
    assert.equal("item-not-found", err.condition)
    assert.equal("no such thing", err.text)

    local jobs = {}
    for i = 1, 20 do
      local from, to = (i % 2 == 0) and a or b, (i % 2 == 0) and b or a
      jobs[i] = task.spawn(function()
        local r, e = from:iq(st.iq({ type = "get", to = to.jid }):tag("query", { xmlns = NS_ECHO, say = tostring(i) }), 10)
        return r and r:child("query").attr.said, e
      end)
    end
    for i, r in ipairs(task.all(jobs, 15)) do
      assert.is_true(r.ok, tostring(r.err))
      assert.equal(tostring(i), r.value, "request " .. i .. ": " .. tostring(r.values and r.values[2]))
    end
    a:close(); b:close()
  end)

  it("discovers the server's and the pubsub service's features", function()
    local conn = assert(connect("alice"))
    local info = assert(disco.info(conn, server.domain))
    assert.is_true(disco.has_feature(info, "urn:xmpp:ping"))
    assert.is_true(disco.has_feature(info, "http://jabber.org/protocol/disco#info"))
    local items = assert(disco.items(conn, server.domain))
    local listed = {}
    for _, item in ipairs(items) do listed[item.jid] = true end
    assert.is_true(listed[server.pubsub], "disco#items lists " .. server.pubsub)
    local ps = assert(disco.info(conn, server.pubsub))
    assert.is_true(disco.has_feature(ps, "http://jabber.org/protocol/pubsub"))
    local service = false
    for _, id in ipairs(ps.identities) do service = service or (id.category == "pubsub" and id.type == "service") end
    assert.is_true(service)
    conn:close()
  end)

  it("runs a pubsub node's life cycle with notifications to another connection", function()
    local owner, bob = assert(connect("alice")), assert(connect("bob"))
    local svc, bob_svc = pubsub.service(owner, server.pubsub), pubsub.service(bob, server.pubsub)
    assert.equal("reports", assert(svc:create("reports", {
      access_model = "open", max_items = 10,
      ["pubsub#notify_retract"] = true, ["pubsub#notify_delete"] = true,
    })))
    local config = assert(svc:get_config("reports"))
    assert.equal("open", config.access_model)
    assert.equal(10, config.max_items)

    local events = bob_svc:events("reports")
    local sub = assert(bob_svc:subscribe("reports"))
    assert.equal("subscribed", sub.state)

    local payload = xml.element("posture", { xmlns = NS_POSTURE, host = "web1" })
    assert.equal("r1", assert(svc:publish("reports", "r1", payload)))
    local ev = assert(events:get(5))
    assert.equal("items", ev.type)
    assert.equal("r1", ev.items[1].id)
    assert.is_true(xml.equal(payload, ev.items[1].payload))
    assert.equal("r2", assert(svc:publish("reports", "r2", xml.element("posture", { xmlns = NS_POSTURE, host = "web2" }))))
    assert.equal("r2", assert(events:get(5)).items[1].id)

    local items = assert(bob_svc:items("reports"))
    assert.equal(2, #items)
    assert.equal("web2", assert(svc:items("reports", { ids = { "r2" } }))[1].payload.attr.host)

    assert.is_true(svc:retract("reports", "r1", true))
    ev = assert(events:get(5))
    assert.equal("retract", ev.type)
    assert.same({ "r1" }, ev.retracts)

    assert.is_true(svc:purge("reports"))
    assert.equal("purge", assert(events:get(5)).type)
    assert.same({}, assert(svc:items("reports")))

    assert.is_true(svc:delete("reports"))
    assert.equal("delete", assert(events:get(5)).type)
    local gone, err = svc:items("reports")
    assert.is_nil(gone)
    assert.equal("item-not-found", err.condition)
    events:close()
    owner:close(); bob:close()
  end)

  it("counts every inbound stanza for XEP-0198 acks, and resumes the stream after a drop", function()
    local log_from = #server:log()
    local conn = assert(connect("alice", { resource = "sm" }))
    local events = sync.queue()
    conn:on("status", function(event) events:put(event) end)
    local got = sync.queue()
    conn:on("message", function(m) got:put(m:child("body"):get_text()) end)
    -- More inbound stanzas than ejabberd keeps unacknowledged (MAX_ACK_QUEUE): iq results, and
    -- messages. If 'h' skipped any kind, ejabberd would close the stream ("Too many unacked
    -- stanzas"); if it counted too many, it would close it too ("acknowledged more stanzas").
    for i = 1, 3 * MAX_ACK_QUEUE do
      assert(conn:ping(nil, 5), "ping " .. i)
      if i % 3 == 0 then
        assert(conn:send(st.message({ to = conn.jid, type = "chat" }):tag("body"):text(tostring(i)):up()))
        assert.equal(tostring(i), got:get(5))
      end
    end
    assert.equal(0, events:len())
    assert.equal("connected", conn.state)
    local log = log_since(log_from)
    assert.is_nil(log:find("Too many unacked", 1, true))
    assert.is_nil(log:find("acknowledged more", 1, true))

    -- a network drop: ejabberd keeps the session for resumption, and the client resumes it
    conn.c:abort()
    assert.equal("disconnected", events:get(10))
    assert.equal("reconnected", events:get(10))
    assert(conn:ping(nil, 5))
    assert.is_true(logs(log_from, "Resumed session for " .. server:jid("alice") .. "/sm"),
      "ejabberd resumed the session")
    assert.matches("waiting %d+ seconds for stream resumption", log_since(log_from))

    -- and the check is real: acknowledging stanzas never sent ends the stream
    assert(conn.c:send("<a xmlns='urn:xmpp:sm:3' h='1000000'/>"))
    assert.equal("disconnected", events:get(10))
    assert.is_true(logs(log_from, "acknowledged 1000000 stanzas"))
    assert.equal("reconnected", events:get(10))
    conn:close()
  end)

  it("comes back by itself after the server is killed and restarted, losing no published item", function()
    local conn = assert(connect("alice", { resource = "restart" }))
    local svc = pubsub.service(conn, server.pubsub)
    assert(svc:create("durable", { persist_items = true, max_items = 100 }))
    local events = sync.queue()
    conn:on("status", function(event) events:put(event) end)
    local function publish(n)
      return task.spawn(function()
        return conn:iq(st.iq({ type = "set", to = server.pubsub })
          :tag("pubsub", { xmlns = "http://jabber.org/protocol/pubsub" })
          :tag("publish", { node = "durable" })
          :tag("item", { id = "i" .. n })
          :add(xml.element("posture", { xmlns = NS_POSTURE, seq = tostring(n) })):reset(),
          { timeout = 30, resend = true })
      end)
    end
    local jobs = {}
    for n = 1, 10 do jobs[#jobs + 1] = publish(n) end
    for n = 1, 10 do assert(jobs[n]:await(10)) end
    -- ejabberd's Mnesia tables lose what was committed in the last ~1-2 s before a SIGKILL
    -- (measured; accounts and items alike): that is the server's durability, not the client's.
    task.sleep(ejabberd.DURABILITY_WINDOW)

    server:kill()
    assert.equal("disconnected", events:get(10))
    for n = 11, 20 do jobs[#jobs + 1] = publish(n) end -- published while the server is down
    server:restart()
    assert.equal("reconnected", events:get(30))

    for n, job in ipairs(jobs) do
      local reply, err = job:await(30)
      assert.is_not_nil(reply, "publish " .. n .. ": " .. tostring(err))
    end
    local items = assert(svc:items("durable"))
    local have = {}
    for _, item in ipairs(items) do have[item.id] = true end
    local lost = {}
    for n = 1, 20 do if not have["i" .. n] then lost[#lost + 1] = "i" .. n end end
    assert.same({}, lost)
    conn:close()
  end)
end)
