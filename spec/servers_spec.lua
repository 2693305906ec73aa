-- The XMPP server configurations shipped to users (examples/servers/) run as shipped: Prosody and
-- ejabberd start from exactly those files (spec/support/*.lua, shipped = true), with only their
-- deployment values substituted, and enforce the grid's provisioning model there: only the
-- repository creates pubsub nodes, and its affiliations decide who publishes (publisher) and who
-- receives (member) on a whitelist node. The harnesses' substitution fails loudly when a shipped
-- file no longer matches it.
local prosody = require "support.prosody"
local ejabberd = require "support.ejabberd"
local harness = require "support.harness"
local tmp = require "support.tmp"
local xmpp = require "sacm.xmpp"
local xml = require "sacm.xml"
local st = require "sacm.xmpp.stanza"
local fs = require "sacm.fs"
local pubsub = require "sacm.xmpp.pubsub"

local NS_RESULT = "urn:example:sacm:servers-spec"
local GRID_NODE = { access_model = "whitelist", publish_model = "publishers", persist_items = false }
local USERS = { repository = "pw-repository", collector = "pw-collector", evaluator = "pw-evaluator" }

-- What differs between the two servers (measured on Prosody 0.12.3 and ejabberd 23.01).
local SERVERS = {
  {
    name = "Prosody", module = prosody,
    -- subscribing to a whitelist node without an affiliation
    closed = { condition = "forbidden" },
    -- an owner setting its own affiliation to member: Prosody applies it, so the account (an
    -- admin of the service even) can no longer manage the node
    self_demotion = "applied",
  },
  {
    name = "ejabberd", module = ejabberd,
    closed = { condition = "not-allowed", pubsub_condition = "closed-node" },
    self_demotion = "ignored",
  },
}

local function result(n)
  return xml.element("result", { xmlns = NS_RESULT, seq = tostring(n) }):text("compliant")
end

local function refused(condition, ok, err)
  assert.is_nil(ok)
  assert.is_not_nil(err)
  assert.equal(condition, err.condition, tostring(err))
end

-- The lines of a file, without the header line the harness puts first.
local function lines_of(text)
  local lines = {}
  for line in text:gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
  return lines
end

describe("shipped server configs #e2e", function()
  for _, s in ipairs(SERVERS) do
    describe(s.name .. " from " .. s.module.SHIPPED_FILE, function()
      local server
      local opened = {}

      local function connect(user)
        local conn = assert(xmpp.connect({
          jid = server:jid(user) .. "/spec", password = USERS[user],
          host = server.host, port = server.port, cafile = server.ca_file,
        }))
        opened[#opened + 1] = conn
        return conn, pubsub.service(conn, server.pubsub)
      end

      lazy_setup(function()
        server = s.module.start({ shipped = true, users = USERS })
      end)
      lazy_teardown(function()
        if server then server:stop() end
      end)
      -- a failed assertion must not leave a connection reconnecting into the next test
      after_each(function()
        for _, conn in ipairs(opened) do conn:close() end
        opened = {}
      end)

      it("runs the shipped file with only its DEPLOY lines changed, on loopback only", function()
        local shipped = lines_of(assert(fs.read(s.module.SHIPPED_FILE)))
        local running = lines_of(assert(fs.read(server.config_file)))
        assert.truthy(running[1]:find("as shipped, its DEPLOY values substituted", 1, true), running[1])
        -- the lines the harness adds (Prosody: run_as_root, daemonize) come right after the header
        local added = {}
        local first = 2
        while running[first] ~= shipped[1] do
          added[#added + 1] = running[first]:match("^(%S+)")
          first = first + 1
          assert(first <= #running, "the shipped file's first line is not in the running config")
        end
        assert.same(s.module == prosody and { "run_as_root", "daemonize" } or {}, added)
        assert.equal(#shipped, #running - first + 1)
        local changed = 0
        for i, line in ipairs(shipped) do
          local now = running[first + i - 1]
          if now ~= line then
            changed = changed + 1
            assert.truthy(line:find("DEPLOY:", 1, true), ("line %d was changed but is no DEPLOY line: %s"):format(i, line))
          end
        end
        assert.is_true(changed >= 8)
        for _, l in ipairs(harness.listeners(server.pid)) do assert.equal("127.0.0.1", l.address) end
        assert.same({ "collector", "evaluator", "repository" }, server:users())
      end)

      it("lets only the repository create nodes; its affiliations decide who publishes and who receives", function()
        local repository, repo_svc = connect("repository")
        local _, collector_svc = connect("collector")
        local evaluator, evaluator_svc = connect("evaluator")
        local node = "results"

        assert.equal(node, assert(repo_svc:create(node, GRID_NODE)))
        local config = assert(repo_svc:get_config(node))
        assert.equal("whitelist", config.access_model)
        assert.equal("publishers", config.publish_model)
        assert.is_false(config.persist_items)

        -- no other account may create a node, named or instant
        refused("forbidden", collector_svc:create("rogue", GRID_NODE))
        refused("forbidden", collector_svc:create(nil))
        refused("forbidden", evaluator_svc:create("rogue"))

        -- before the repository affiliates them: no publishing, no subscribing, no managing
        refused("forbidden", collector_svc:publish(node, nil, result(0)))
        local sub, err = evaluator_svc:subscribe(node)
        refused(s.closed.condition, sub, err)
        assert.equal(s.closed.pubsub_condition, err.pubsub_condition)
        refused("forbidden", collector_svc:set_affiliations(node, { [server:jid("evaluator")] = "publisher" }))
        refused("forbidden", collector_svc:node_affiliations(node))

        assert.is_true(repo_svc:set_affiliations(node, {
          { jid = server:jid("collector"), affiliation = "publisher" },
          { jid = server:jid("evaluator"), affiliation = "member" },
        }))
        assert.same({
          { jid = server:jid("collector"), affiliation = "publisher" },
          { jid = server:jid("evaluator"), affiliation = "member" },
          { jid = server:jid("repository"), affiliation = "owner" },
        }, assert(repo_svc:node_affiliations(node)))

        -- a member may subscribe; the publisher's item reaches it
        local events <close> = evaluator_svc:events(node)
        sub = assert(evaluator_svc:subscribe(node))
        assert.equal("subscribed", sub.state)
        local id = assert(collector_svc:publish(node, nil, result(1)))
        local ev = assert(events:get(5))
        assert.equal("items", ev.type)
        assert.equal(server.pubsub, ev.from)
        assert.equal(id, ev.items[1].id)
        local payload = ev.items[1].payload
        assert.equal(NS_RESULT, payload.ns)
        assert.equal("1", payload.attr.seq)
        assert.equal("compliant", payload:get_text())

        -- a member may not publish, nor manage the node
        refused("forbidden", evaluator_svc:publish(node, nil, result(2)))
        refused("forbidden", evaluator_svc:configure(node, { access_model = "open" }))
        refused("forbidden", evaluator_svc:delete(node))
        assert.equal(0, #events)

        -- the publisher's next item arrives too, and nothing else was delivered in between
        id = assert(collector_svc:publish(node, nil, result(3)))
        ev = assert(events:get(5))
        assert.equal(id, ev.items[1].id)
        assert.equal("3", ev.items[1].payload.attr.seq)

        -- removing the affiliation ends publishing
        assert.is_true(repo_svc:set_affiliations(node, { [server:jid("collector")] = "none" }))
        refused("forbidden", collector_svc:publish(node, nil, result(4)))
        assert.is_true(repo_svc:delete(node))
        assert(repository:ping())
        assert(evaluator:ping())
      end)

      it("pins what an owner demoting itself does: " .. s.self_demotion, function()
        -- sacm.xmpp.pubsub refuses to send this (set_affiliations raises); a raw request shows why
        local repository, repo_svc = connect("repository")
        assert(repo_svc:create("demoted", GRID_NODE))
        local iq = st.iq({ type = "set", to = server.pubsub })
          :tag("pubsub", { xmlns = pubsub.NS_OWNER }):tag("affiliations", { node = "demoted" })
            :tag("affiliation", { jid = server:jid("repository"), affiliation = "member" }):reset()
        assert(repository:iq(iq))
        local affs, err = repo_svc:node_affiliations("demoted")
        if s.self_demotion == "applied" then
          refused("forbidden", affs, err)
          refused("forbidden", repo_svc:delete("demoted"))
        else
          assert.same({ { jid = server:jid("repository"), affiliation = "owner" } }, affs)
          assert.is_true(repo_svc:delete("demoted"))
        end
      end)

      it("leaves every account its own PEP: the creation rule is about the grid's pubsub service", function()
        -- publishing to a PEP node of one's own creates it (XEP-0163); neither server's rule stops that
        local collector = connect("collector")
        local pep = pubsub.service(collector, server:jid("collector"))
        assert(pep:publish("urn:example:sacm:pep", nil, result(1)))
        refused("forbidden", pubsub.service(collector, server.pubsub):create("urn:example:sacm:pep"))
      end)

      if s.module == ejabberd then
        it("logs in with a client certificate (SASL EXTERNAL) on the shipped second listener", function()
          local pair = server:client_cert(server:jid("collector"))
          local conn, err = xmpp.connect({
            client_cert = pair.cert, client_key = pair.key, resource = "cert",
            host = server.host, port = server.cert_port, cafile = server.ca_file,
          })
          assert.is_not_nil(conn, tostring(err))
          opened[#opened + 1] = conn
          assert.equal(server:jid("collector") .. "/cert", conn.jid)
          -- the same account, so the same rights: still no node creation
          refused("forbidden", pubsub.service(conn, server.pubsub):create("rogue"))
        end)
      end
    end)
  end

  describe("substitution", function()
    local dir
    before_each(function() dir = tmp.dir("servers-spec") end)
    after_each(function() tmp.remove(dir) end)

    -- A copy of the shipped file with one edit; starting from it must raise with `want`.
    local function start_edited(module, edit, want)
      local text = assert(fs.read(module.SHIPPED_FILE))
      local edited = edit(text)
      assert.are_not.equal(text, edited, "the edit changed nothing")
      local file = dir .. "/edited"
      assert(fs.write(file, edited))
      local ok, err = pcall(module.start, { shipped = file })
      assert.is_false(ok, "started from a file that does not match the harness")
      for _, text_wanted in ipairs(want) do
        assert.truthy(tostring(err):find(text_wanted, 1, true), tostring(err))
      end
    end

    it("raises when an expected line is missing, doubled or still holds a deployment value", function()
      start_edited(prosody, function(t) return (t:gsub("c2s_ports = { 5222 }", "c2s_ports = { 5269 }")) end,
        { "does not match the harness", "0 line(s) read `c2s_ports = { 5222 }` (the c2s port), expected 1" })
      start_edited(prosody, function(t) return t .. 'VirtualHost "grid.example"\n' end,
        { '2 line(s) read `VirtualHost "grid.example"` (the domain), expected 1' })
      start_edited(prosody, function(t)
        return (t:gsub('storage = "internal"', 'storage = "internal"\nsql = { driver = "SQLite3", database = "/var/lib/prosody/grid.sqlite" }'))
      end, { "still holds the deployment value `/var/`", "(add a rule for it)" })
      start_edited(ejabberd, function(t) return (t:gsub('ip: "0.0.0.0"', 'ip: "::"', 1)) end,
        { "1 line(s) read `ip: \"0.0.0.0\"` (the c2s listeners' address), expected 2" })
      start_edited(ejabberd, function(t)
        return (t:gsub("acme:\n", 'ca_file: "/etc/ssl/certs/ca-certificates.crt"\nacme:\n'))
      end, { "still holds the deployment value `/etc/`" })
    end)

    it("takes any domain, the shipped one too", function()
      -- the check for leftover deployment values skips the lines the rules wrote
      local server <close> = prosody.start({ shipped = true, domain = "grid.example", users = USERS })
      assert.equal("pubsub.grid.example", server.pubsub)
      local conn <close> = assert(xmpp.connect({
        jid = "repository@grid.example/spec", password = USERS.repository,
        host = server.host, port = server.port, cafile = server.ca_file,
      }))
      assert(pubsub.service(conn, server.pubsub):create("results", GRID_NODE))
    end)

    it("refuses options that would change the shipped file", function()
      assert.has_error(function() prosody.start({ shipped = true, admins = { "collector" } }) end,
        "prosody.start: option admins changes the configuration, but shipped mode runs the shipped file "
          .. "as it is (only its deployment values substituted); drop admins, or start without shipped")
      assert.has_error(function() ejabberd.start({ shipped = true, extra_config = "x: 1" }) end,
        "ejabberd.start: option extra_config changes the configuration, but shipped mode runs the shipped "
          .. "file as it is (only its deployment values substituted); drop extra_config, or start without shipped")
    end)
  end)
end)
