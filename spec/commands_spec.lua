-- sacm.xmpp.commands end to end: XEP-0050 ad-hoc commands between two accounts on a real, private
-- Prosody. alice/responder offers the commands; bob/requester and alice/requester run them.
local prosody = require "support.prosody"
local xmpp = require "sacm.xmpp"
local st = require "sacm.xmpp.stanza"
local task = require "sacm.task"
local errors = require "sacm.error"
local disco = require "sacm.xmpp.disco"
local commands = require "sacm.xmpp.commands"

local NS = commands.NS

-- the XEP-0050 application condition of an error reply
local function app_condition(err)
  local e = err and err.stanza and err.stanza:child("error")
  if not e then return nil end
  for child in e:children() do
    if child.ns == NS then return child.name end
  end
end

local wait_until = require("support.wait").until_true

describe("sacm.xmpp.commands provider API", function()
  -- a stand-in connection: enough for registering, not for talking
  local function fake_conn()
    return { jid = "svc@grid.example/r", on = function() return { remove = function() end } end }
  end

  it("is one provider per connection, whose options can be updated", function()
    local conn = fake_conn()
    local p = commands.provider(conn)
    assert.equal(300, p.options.idle_timeout)
    assert.equal(p, commands.provider(conn, { idle_timeout = 5 }))
    assert.equal(5, p.options.idle_timeout)
    assert.are_not.equal(p, commands.provider(fake_conn()))
    assert.has_error(function() commands.provider(conn, { idle = 5 }) end, "commands.provider: unknown option 'idle'")
    assert.has_error(function() commands.provider(conn, { max_sessions = 0 }) end)
    assert.has_error(function() commands.provider({}) end)
  end)

  it("checks command specs and keeps the order commands were added in", function()
    local p = commands.provider(fake_conn())
    assert.has_error(function() p:add("", { run = print }) end)
    assert.has_error(function() p:add("a", {}) end, "command a: run must be a function")
    assert.has_error(function() p:add("a", { run = print, allowed = "everyone" }) end)
    assert.has_error(function() p:add("a", { run = print, form = "x" }) end)
    assert.has_error(function() p:add("a", { run = print, idle_timeout = -1 }) end)
    p:add("b", { run = print }):add("a", { run = print, name = "A" }):add("b", { run = print, name = "B2" })
    assert.same({ "b", "a" }, p.order)
    assert.equal("B2", p.commands.b.name)
    assert.equal("a", p.commands.b.node == "b" and p.commands.a.node)
    assert.is_true(p:remove("b"))
    assert.is_false(p:remove("b"))
    assert.same({ "a" }, p.order)
    assert.is_true(disco.provider(p.conn):has_node("a"))
    assert.is_true(disco.provider(p.conn):has_feature(NS))
    p:close()
    assert.is_false(disco.provider(p.conn):has_node("a"))
  end)
end)

describe("sacm.xmpp.commands #e2e", function()
  local server, responder, bob, alice2, provider
  local log = {} -- what the commands' code saw

  local function connect(user, resource)
    return assert(xmpp.connect({
      jid = server:jid(user) .. "/" .. resource, password = user .. "-secret",
      host = server.host, port = server.port, cafile = server.ca_file,
    }))
  end

  setup(function()
    server = prosody.start()
    for _, user in ipairs({ "alice", "bob" }) do server:register(user, user .. "-secret") end
    responder = connect("alice", "responder")
    bob = connect("bob", "requester")
    alice2 = connect("alice", "requester")
    provider = commands.provider(responder)

    provider:add("ping", { name = "Ping", allowed = true, run = function() return "pong" end })

    provider:add("echo", {
      name = "Echo", allowed = true,
      form = { title = "Echo", fields = { { var = "text", label = "Text", required = true } } },
      run = function(_, values)
        return { title = "Echoed", fields = { { var = "text", value = values.text:upper() } } }
      end,
    })

    -- two stages: what is offered in stage 2 depends on the answer to stage 1
    provider:add("wizard", {
      name = "Collect posture", allowed = true, prev = true,
      run = function(session)
        local first = session:ask({
          title = "Target", form_type = "urn:example:sacm:collect",
          fields = {
            { var = "host", type = "jid-single", label = "Endpoint", required = true },
            { var = "depth", type = "list-single", options = { "1", "2", "3" }, value = "1" },
          },
        })
        session:note("target " .. first.host)
        local kinds = {}
        for i = 1, tonumber(first.depth) do kinds[i] = "kind" .. i end
        local second = session:ask({
          title = "What to collect from " .. first.host,
          fields = {
            { var = "kinds", type = "list-multi", options = kinds, required = true },
            { var = "deep", type = "boolean" },
          },
        }, { last = true })
        return {
          title = "Queued",
          fields = {
            { var = "host", type = "jid-single", value = first.host },
            { var = "kinds", type = "list-multi", values = second.kinds },
            { var = "deep", type = "boolean", value = second.deep },
            { var = "requester", value = session.from },
          },
        }
      end,
    })

    provider:add("slow", {
      name = "Times out", allowed = true, idle_timeout = 0.3,
      run = function(session)
        local _ <close> = setmetatable({}, { __close = function() log.slow_closed = session.id end })
        session:ask({ fields = { { var = "x" } } })
        return "never reached in the timeout spec"
      end,
    })

    provider:add("busy", {
      name = "Works a while", allowed = true,
      run = function(session)
        session:ask({ fields = { { var = "x" } } })
        local ok, err = pcall(task.sleep, 0.5)
        log.busy = ok and "finished" or err.condition
        if not ok then error(err, 0) end
        return "done"
      end,
    })

    provider:add("limited", {
      name = "Two at a time", allowed = true, max_sessions = 2,
      run = function(session) session:ask({ fields = { { var = "x" } } }) end,
    })

    provider:add("admin", {
      name = "Admins only", allowed = { "alice@localhost" },
      run = function(session) return "hello " .. session.from end,
    })

    provider:add("own", { name = "Default rule", run = function() return "ok" end })

    provider:add("refuse", {
      allowed = true,
      run = function() return nil, errors.new("not-allowed", "collection is paused") end,
    })

    provider:add("crash", { allowed = true, run = function() error("a bug in the command") end })
  end)

  teardown(function()
    provider:close()
    for _, c in ipairs({ responder, bob, alice2 }) do c:close() end
    server:stop()
  end)

  after_each(function()
    -- no session outlives its spec
    wait_until(function() return #provider:sessions() == 0 end, 2)
  end)

  describe("discovery", function()
    it("lists the commands a requester may run, via disco#items", function()
      local list = assert(commands.list(bob, responder.jid))
      local nodes = {}
      for _, c in ipairs(list) do
        nodes[#nodes + 1] = c.node
        assert.equal(responder.jid, c.jid)
      end
      assert.same({ "ping", "echo", "wizard", "slow", "busy", "limited", "refuse", "crash" }, nodes)
      assert.equal("Ping", list[1].name)
      -- our own account also sees the admin and default-rule commands
      local own = assert(commands.list(alice2, responder.jid))
      assert.equal(#nodes + 2, #own)
    end)

    it("advertises the feature and describes each command node", function()
      local info = assert(disco.info(bob, responder.jid))
      assert.is_true(disco.has_feature(info, NS))
      info = assert(disco.info(bob, responder.jid, "wizard"))
      assert.same({ { category = "automation", type = "command-node", name = "Collect posture" } }, info.identities)
      assert.is_true(disco.has_feature(info, NS))
      assert.is_true(disco.has_feature(info, "jabber:x:data"))
      local none, err = disco.info(bob, responder.jid, "admin")
      assert.is_nil(none)
      assert.equal("forbidden", err.condition)
    end)
  end)

  describe("execution", function()
    it("runs a one-stage command", function()
      local r = assert(commands.execute(bob, responder.jid, "ping"))
      assert.equal("completed", r.status)
      assert.is_string(r.sessionid)
      assert.same({ { type = "info", text = "pong" } }, r.notes)
      assert.is_nil(r.form)
    end)

    it("runs a command with one form and returns the parsed result", function()
      local r = assert(commands.execute(bob, responder.jid, "echo", { text = "hello" }))
      assert.equal("completed", r.status)
      assert.equal("result", r.result.type)
      assert.equal("Echoed", r.result.title)
      assert.same({ text = "HELLO" }, r.values)
    end)

    it("runs two stages, the second built from the first", function()
      local seen = {}
      local r = assert(commands.execute(bob, responder.jid, "wizard", function(form, session)
        seen[#seen + 1] = { title = form.title, actions = session.actions, notes = session.notes, form = form }
        if #seen == 1 then return { host = "web1@grid.example", depth = "2" } end
        return { kinds = { "kind2" }, deep = true }
      end))
      assert.equal(2, #seen)
      assert.equal("Target", seen[1].title)
      assert.equal("urn:example:sacm:collect", seen[1].form.form_type)
      assert.same({ execute = "next", next = true }, seen[1].actions)
      assert.equal("What to collect from web1@grid.example", seen[2].title)
      assert.same({ { value = "kind1" }, { value = "kind2" } }, seen[2].form.fields[1].options)
      assert.same({ execute = "complete", complete = true, prev = true }, seen[2].actions)
      assert.same({ { type = "info", text = "target web1@grid.example" } }, seen[2].notes)
      assert.equal("completed", r.status)
      assert.same({ host = "web1@grid.example", kinds = { "kind2" }, deep = true, requester = bob.jid }, r.values)
      assert.equal("jid-single", r.result.fields[1].type)
    end)

    it("fills every stage from one table, or one table per stage", function()
      local r = assert(commands.execute(bob, responder.jid, "wizard",
        { host = "db1@grid.example", depth = "3", kinds = { "kind3", "kind1" } }))
      assert.same({ host = "db1@grid.example", kinds = { "kind3", "kind1" }, deep = false, requester = bob.jid },
        r.values)
      r = assert(commands.execute(bob, responder.jid, "wizard", { { host = "x@grid" }, { kinds = { "kind1" } } }))
      assert.same({ "kind1" }, r.values.kinds)
    end)

    it("goes back a stage with prev, showing the earlier answer", function()
      local s = assert(commands.start(bob, responder.jid, "wizard"))
      assert(s:submit({ host = "first@grid", depth = "1" }))
      assert.equal("What to collect from first@grid", s.form.title)
      assert(s:prev())
      assert.equal("executing", s.status)
      assert.equal("Target", s.form.title)
      assert.same({ host = "first@grid", depth = "1" }, s.form.values)
      assert.same({ execute = "next", next = true }, s.actions)
      assert(s:next({ host = "second@grid", depth = "3" }))
      assert.equal("What to collect from second@grid", s.form.title)
      assert.equal(3, #s.form.fields[1].options)
      assert(s:complete({ kinds = { "kind3" } }))
      assert.equal("completed", s.status)
      assert.equal("second@grid", s.values.host)
      -- there is nothing before the first stage
      s = assert(commands.start(bob, responder.jid, "wizard"))
      local ok, err = s:prev()
      assert.is_nil(ok)
      assert.equal("bad-request", err.condition)
      assert.equal("bad-action", err.app_condition)
      assert(s:cancel())
    end)

    it("refuses an invalid answer with bad-payload and takes a corrected one", function()
      local s = assert(commands.start(bob, responder.jid, "wizard"))
      local ok, err = s:submit({ host = "not a jid@", depth = "9" })
      assert.is_nil(ok)
      assert.equal("bad-request", err.condition)
      assert.equal("bad-payload", err.app_condition)
      assert.matches("host: not a valid JID", err.text, 1, true)
      assert.matches("depth: '9' is not one of the options", err.text, 1, true)
      assert.equal("executing", s.status)
      assert.equal("Target", s.form.title)
      ok, err = s:submit({ depth = "2" })
      assert.is_nil(ok)
      assert.matches("host: required", err.text, 1, true)
      assert(s:submit({ host = "ok@grid", depth = "2" }))
      assert.equal("What to collect from ok@grid", s.form.title)
      assert(s:submit({ kinds = { "kind1" } }))
      assert.equal("completed", s.status)
      -- execute() gives up on a refused answer and cancels the session
      local r
      r, err = commands.execute(bob, responder.jid, "echo", {})
      assert.is_nil(r)
      assert.equal("bad-payload", err.app_condition)
    end)

    it("cancels mid-session; the session is gone afterwards", function()
      local s = assert(commands.start(bob, responder.jid, "wizard"))
      assert(s:submit({ host = "h@grid" }))
      assert.equal(1, #provider:sessions())
      local server_side = provider:sessions()[1]
      assert(s:cancel())
      assert.equal("canceled", s.status)
      assert.is_true(s:done())
      assert.equal(0, #provider:sessions())
      wait_until(function() return server_side.task:done() end, 5)
      assert.equal("cancelled", server_side.task.status)
      -- the old session id is unknown now
      s.status = "executing"
      local ok, err = s:submit({ kinds = { "kind1" } })
      assert.is_nil(ok)
      assert.equal("bad-request", err.condition)
      assert.equal("bad-sessionid", err.app_condition)
      -- execute() cancels when the values function returns nil
      local r = assert(commands.execute(bob, responder.jid, "wizard", function() return nil end))
      assert.equal("canceled", r.status)
    end)

    it("expires an idle session and cancels its task", function()
      log.slow_closed = nil
      local s = assert(commands.start(bob, responder.jid, "slow"))
      assert.equal("executing", s.status)
      assert.equal(1, #provider:sessions())
      task.sleep(0.5)
      assert.equal(s.sessionid, log.slow_closed, "the command's <close> cleanup ran")
      assert.equal(0, #provider:sessions())
      local ok, err = s:submit({ x = "late" })
      assert.is_nil(ok)
      assert.equal("bad-request", err.condition)
      assert.equal("bad-sessionid", err.app_condition)
    end)

    it("answers a request while the previous one is processed with unexpected-request; cancel still works", function()
      log.busy = nil
      local s = assert(commands.start(bob, responder.jid, "busy"))
      local pending = task.spawn(function() return s:submit({ x = "go" }) end)
      task.sleep(0.1)
      local iq = st.iq({ type = "set", to = responder.jid })
        :tag("command", { xmlns = NS, node = "busy", sessionid = s.sessionid, action = "next" }):up()
      local reply, err = bob:iq(iq)
      assert.is_nil(reply)
      assert.equal("unexpected-request", err.condition)
      iq = st.iq({ type = "set", to = responder.jid })
        :tag("command", { xmlns = NS, node = "busy", sessionid = s.sessionid, action = "cancel" }):up()
      reply = assert(bob:iq(iq))
      assert.equal("canceled", reply:find("{" .. NS .. "}command@status"))
      local r = assert(pending:await())
      assert.equal("canceled", r.status)
      assert.equal("cancelled", log.busy)
    end)
  end)

  describe("refusals", function()
    it("refuses a requester that is not allowed with forbidden", function()
      local r, err = commands.execute(bob, responder.jid, "admin")
      assert.is_nil(r)
      assert.equal("forbidden", err.condition)
      r, err = commands.execute(bob, responder.jid, "own")
      assert.is_nil(r)
      assert.equal("forbidden", err.condition)
      -- the account itself may (the default rule: our own account only)
      r = assert(commands.execute(alice2, responder.jid, "admin"))
      assert.same({ { type = "info", text = "hello " .. alice2.jid } }, r.notes)
      assert.equal("completed", assert(commands.execute(alice2, responder.jid, "own")).status)
    end)

    it("answers an unknown node with item-not-found", function()
      local r, err = commands.execute(bob, responder.jid, "no-such-command")
      assert.is_nil(r)
      assert.equal("item-not-found", err.condition)
    end)

    it("answers an unknown session, or someone else's, with bad-request <bad-sessionid/>", function()
      local iq = st.iq({ type = "set", to = responder.jid })
        :tag("command", { xmlns = NS, node = "wizard", sessionid = "no-such-session", action = "next" }):up()
      local reply, err = bob:iq(iq)
      assert.is_nil(reply)
      assert.equal("bad-request", err.condition)
      assert.equal("bad-sessionid", app_condition(err))
      -- a session belongs to the full JID that started it
      local s = assert(commands.start(alice2, responder.jid, "wizard"))
      iq = st.iq({ type = "set", to = responder.jid })
        :tag("command", { xmlns = NS, node = "wizard", sessionid = s.sessionid, action = "cancel" }):up()
      reply, err = bob:iq(iq)
      assert.is_nil(reply)
      assert.equal("bad-sessionid", app_condition(err))
      assert.equal(1, #provider:sessions())
      -- and to its node
      iq = st.iq({ type = "set", to = responder.jid })
        :tag("command", { xmlns = NS, node = "echo", sessionid = s.sessionid, action = "cancel" }):up()
      reply, err = alice2:iq(iq)
      assert.is_nil(reply)
      assert.equal("bad-sessionid", app_condition(err))
      assert(s:cancel())
    end)

    it("rejects malformed requests", function()
      local function ask(attr)
        attr.xmlns = NS
        local reply, err = bob:iq(st.iq({ type = "set", to = responder.jid }):tag("command", attr):up())
        assert.is_nil(reply)
        return err
      end
      local err = ask({ node = "ping", action = "dance" })
      assert.equal("bad-request", err.condition)
      assert.equal("malformed-action", app_condition(err))
      err = ask({ node = "ping", action = "next" })
      assert.equal("bad-action", app_condition(err))
      err = ask({ node = "ping", action = "cancel" })
      assert.equal("bad-sessionid", app_condition(err))
      err = ask({ action = "execute" })
      assert.equal("bad-request", err.condition)
    end)

    it("limits open sessions per requester with resource-constraint", function()
      local a = assert(commands.start(bob, responder.jid, "limited"))
      local b = assert(commands.start(bob, responder.jid, "limited"))
      local c, err = commands.start(bob, responder.jid, "limited")
      assert.is_nil(c)
      assert.equal("resource-constraint", err.condition)
      -- another requester has its own allowance
      local d = assert(commands.start(alice2, responder.jid, "limited"))
      assert(a:cancel())
      c = assert(commands.start(bob, responder.jid, "limited"))
      for _, s in ipairs({ b, c, d }) do assert(s:cancel()) end
    end)

    it("turns nil, err from a command into that error, and a raised error into internal-server-error", function()
      local r, err = commands.execute(bob, responder.jid, "refuse")
      assert.is_nil(r)
      assert.equal("not-allowed", err.condition)
      assert.equal("collection is paused", err.text)
      r, err = commands.execute(bob, responder.jid, "crash")
      assert.is_nil(r)
      assert.equal("internal-server-error", err.condition)
      assert.is_nil(err.text:find("a bug", 1, true), "internals are not sent to the requester")
    end)
  end)

  describe("concurrency", function()
    it("runs 10 interleaved sessions from two requesters to the right results", function()
      local jobs, expected = {}, {}
      for i = 1, 10 do
        local conn = i % 2 == 0 and bob or alice2
        local host = ("host%d@grid.example"):format(i)
        local depth = tostring(i % 3 + 1)
        local kinds = { "kind" .. depth }
        expected[i] = { host = host, kinds = kinds, deep = i % 2 == 0, requester = conn.jid }
        jobs[i] = task.spawn(function()
          return commands.execute(conn, responder.jid, "wizard", function(form)
            task.sleep(0.001 * (i % 4)) -- interleave the stages of different sessions
            if form.title == "Target" then return { host = host, depth = depth } end
            assert.equal("What to collect from " .. host, form.title)
            return { kinds = kinds, deep = i % 2 == 0 }
          end)
        end)
      end
      wait_until(function() return #provider:sessions() >= 5 end, 5)
      local results = task.all(jobs, 20)
      local ids = {}
      for i, r in ipairs(results) do
        assert.is_true(r.ok, tostring(r.err))
        local session = r.value
        assert.is_not_nil(session, tostring(r.values[2]))
        assert.equal("completed", session.status)
        assert.same(expected[i], session.values)
        assert.is_nil(ids[session.sessionid], "session ids are unique")
        ids[session.sessionid] = true
      end
    end)
  end)
end)
