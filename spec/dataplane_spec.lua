-- The grid's data plane (docs/protocol.md, section 5) on real servers: small notifications on
-- transient nodes, content uploaded to the repository over HTTPS (XEP-0363 slots), references
-- fetched with their digest checked, store and forward through the producers' spools, and a grid
-- that provisions itself: only the repository may create nodes, and it admits each component.
local prosody = require "support.prosody"
local ejabberd = require "support.ejabberd"
local grid = require "support.grid"
local tmp = require "support.tmp"
local fs = require "sacm.fs"
local xml = require "sacm.xml"
local task = require "sacm.task"
local proto = require "sacm.grid.protocol"
local report = require "sacm.report"
local collector = require "sacm.roles.collector"
local evaluator = require "sacm.roles.evaluator"
local repository = require "sacm.roles.repository"
local orchestrator = require "sacm.roles.orchestrator"
local wait_until = require("support.wait").until_true

local ACCOUNTS = { "orchestrator", "collector", "collector2", "evaluator", "repository" }

-- One policy: pass when the packages posture lists the synthetic packages, so a rule can only
-- pass when the 1 MB posture really arrived.
local PACKAGES_POLICY = [[
return {
  id = "dataplane", title = "Data plane test policy", description = "spec/dataplane_spec.lua",
  rules = {
    { id = "dataplane-packages", title = "The packages posture arrived whole", severity = "low",
      rationale = "a test", requires = { "packages" },
      check = function(p)
        local n = 0
        for _, item in ipairs(p.packages.items) do
          if item.name:find("^synthetic%-package%-") then n = n + 1 end
        end
        return n == p.packages.attributes.count and n > 0 and "pass" or "fail", n .. " synthetic packages"
      end },
    { id = "dataplane-os", title = "The os posture arrived", severity = "info", rationale = "a test",
      requires = { "os" },
      check = function(p) return p.os.attributes.hostname and "pass" or "fail", "hostname" end },
  },
}
]]

local function each_server(name, start_server, opts)
  describe("the data plane on " .. name .. " #e2e", function()
    local server, dir, g, packages_count

    local function start(mod, role, extra) return g:start(mod, role, extra) end

    lazy_setup(function()
      dir = tmp.dir("dataplane")
      server = start_server()
      g = grid.new(server, dir)
      assert(fs.mkdir(dir .. "/policies"))
      assert(fs.write(dir .. "/policies/dataplane.lua", PACKAGES_POLICY))
      packages_count = grid.dpkg_status(dir .. "/status", 1024 * 1024)
    end)

    lazy_teardown(function()
      if g then g:close_roles() end
      if server then server:stop() end
      if dir then tmp.remove(dir) end
    end)

    local orch, repo, eval, coll

    it("provisions itself: the repository makes the nodes and admits each role", function()
      repo = start(repository, "repository", { database = dir .. "/grid.db" })
      orch = start(orchestrator, "orchestrator")
      eval = start(evaluator, "evaluator", { policies = dir .. "/policies", spool = dir .. "/evaluator-spool.db" })
      coll = start(collector, "collector", { kinds = { "os", "packages" }, spool = dir .. "/collector-spool.db",
        options = { packages = { dpkg_status = dir .. "/status" } } })
      assert(orch:discover({ collectors = 1, evaluators = 1, repositories = 1, timeout = 15 }))
      local by = wait_until(function()
        local affs = assert(repo.member.pubsub:node_affiliations(proto.NODE.posture))
        local t = {}
        for _, a in ipairs(affs) do t[a.jid] = a.affiliation end
        return t[server:jid("collector")] and t[server:jid("evaluator")] and t[server:jid("orchestrator")] and t
      end, 10, "the repository admitting the components")
      assert.equal("publisher", by[server:jid("collector")])
      assert.equal("member", by[server:jid("evaluator")])
      assert.equal("member", by[server:jid("orchestrator")])
      assert.equal("owner", by[server:jid("repository")])
      -- the collector may not create nodes of its own, nor publish results
      local ok, err = coll.member.pubsub:create("sacm/forged", proto.NODE_CONFIG)
      assert.is_nil(ok)
      assert.is_truthy(err.condition == "forbidden" or err.condition == "not-allowed", tostring(err))
      ok, err = coll.member:publish("results", "forged", xml.element("x", { xmlns = "urn:example" }))
      assert.is_nil(ok)
      assert.is_truthy(err.condition == "forbidden" or err.condition == "not-allowed", tostring(err))
      -- an evaluator may not announce posture, an orchestrator neither posture nor results
      ok, err = eval.member:publish("posture", "forged", xml.element("x", { xmlns = "urn:example" }))
      assert.is_nil(ok)
      assert.is_truthy(err.condition == "forbidden" or err.condition == "not-allowed", tostring(err))
      for _, node in ipairs { "posture", "results" } do
        ok, err = orch.member:publish(node, "forged", xml.element("x", { xmlns = "urn:example" }))
        assert.is_nil(ok)
        assert.is_truthy(err.condition == "forbidden" or err.condition == "not-allowed", tostring(err))
      end
    end)

    it("delivers a 1 MB posture through the repository and evaluates it", function()
      local a = assert(orch:assess({ timeout = 60 }))
      local by_kind = {}
      for _, p in ipairs(a.posture) do by_kind[p.kind] = p end
      -- the packages notification is a reference, the os posture travels inline
      assert.is_truthy(by_kind.packages.ref, "packages posture should be announced by reference")
      assert.is_true(by_kind.packages.ref.size > 1000000)
      assert.is_truthy(by_kind.os.data)
      local results = {}
      for _, r in ipairs(a.results) do results[r.rule_id] = r end
      assert.equal("pass", results["dataplane-packages"].result)
      assert.equal(("%d synthetic packages"):format(packages_count), results["dataplane-packages"].evidence[1])
      assert.equal("pass", results["dataplane-os"].result)
      -- stored once, served back by the repository exactly as announced
      local row = assert(repo.store.db:first("SELECT count(*) AS n FROM posture WHERE id = ?", { by_kind.packages.id }))
      assert.equal(1, row.n)
      local text = assert(eval.fetcher:fetch(by_kind.packages.ref))
      assert.equal(by_kind.packages.ref.size, #text)
    end)

    it("shows a kind whose upload the repository refused as an error with the reason", function()
      -- a repository that accepts at most 64 KB: the 1 MB packages posture cannot be stored
      repo.uploads.max_size = 64 * 1024
      local a = assert(orch:assess({ timeout = 60 }))
      repo.uploads.max_size = proto.UPLOAD_MAX
      local results = {}
      for _, r in ipairs(a.results) do results[r.rule_id] = r end
      assert.equal("error", results["dataplane-packages"].result)
      assert.matches("upload%-refused", results["dataplane-packages"].evidence[1])
      assert.matches("more than the 65536 this repository accepts", results["dataplane-packages"].evidence[1])
      local text = report.text(a)
      assert.matches("upload%-refused", text)
      assert.equal("failed", a.collection.collectors[coll.member.conn.jid].state)
    end)

    it("stores every posture exactly once when the repository stops during 50 collections", function()
      local ids, seen = {}, {}
      local watch = orch.member.pubsub:on_event(proto.NODE.posture, function(ev)
        for _, item in ipairs(ev.items or {}) do
          if not seen[item.id] then seen[item.id] = true; ids[#ids + 1] = item.id end
        end
      end)
      local small = start(collector, "collector2", { kinds = { "os" }, endpoint = "restart-endpoint",
        spool = dir .. "/collector2-spool.db", delivery_wait = 0.5 })
      local jobs, during
      jobs = {}
      for i = 1, 50 do
        if i == 10 then repo:close() end
        if i == 20 then
          -- an assessment while the repository is down says so, with the reason
          eval.delivery_wait = 0.5
          during = assert(orch:assess({ collectors = { small.member.conn.jid }, kinds = { "os" }, timeout = 30 }))
          eval.delivery_wait = evaluator.DELIVERY_WAIT
        end
        if i == 35 then repo = start(repository, "repository", { database = dir .. "/grid.db" }) end
        jobs[#jobs + 1] = task.spawn(function() return small:collect({ "os" }) end)
        task.sleep(0.05)
      end
      task.all(jobs)
      local os_result
      for _, r in ipairs(during.results) do
        if r.rule_id == "dataplane-os" then os_result = r end
      end
      assert.equal("error", os_result.result)
      assert.matches("not%-delivered: posture not delivered yet: .*repository", os_result.evidence[1])
      assert.matches("not%-delivered", report.text(during))
      local spooled = 0
      for _, j in ipairs(jobs) do spooled = spooled + select(2, j:result()).spooled end
      assert.is_true(spooled > 0, "no collection saw the repository down")
      wait_until(function() return small.delivery:stats().spooled == 0 end, 60, "the spool draining")
      watch.remove()
      local stored = assert(repo.store.db:query(
        "SELECT id, count(*) AS n FROM posture WHERE endpoint = 'restart-endpoint' GROUP BY id"))
      assert.equal(51, #stored) -- the 50 collections and the assessment's
      for _, id in ipairs(ids) do
        assert.is_truthy(repo.store.db:first("SELECT 1 AS one FROM posture WHERE id = ?", { id }), id)
      end
      for _, r in ipairs(stored) do assert.equal(1, r.n) end
      small:close()
    end)

    it("delivers what a collector spooled before it was restarted", function()
      repo:close()
      local spool_file = dir .. "/restarted-spool.db"
      local first = start(collector, "collector2", { kinds = { "os" }, endpoint = "spool-endpoint",
        spool = spool_file, delivery_wait = 0.3 })
      local summary = first:collect({ "os" })
      assert.equal(1, summary.spooled)
      first:close() -- with the posture still in its spool file
      local st = assert(fs.stat(spool_file))
      assert.equal(0, st.mode & 0x3f, "the spool must be readable by its owner only")
      repo = start(repository, "repository", { database = dir .. "/grid.db" })
      local second = start(collector, "collector2", { kinds = { "os" }, endpoint = "spool-endpoint",
        spool = spool_file })
      wait_until(function() return second.delivery:stats().spooled == 0 end, 30, "the spool draining after the restart")
      local row = assert(repo.store.db:first("SELECT count(*) AS n FROM posture WHERE endpoint = 'spool-endpoint'"))
      assert.equal(1, row.n)
      assert.equal(0, assert(fs.stat(dir .. "/grid.db")).mode & 0x3f, "the database must be readable by its owner only")
      second:close()
    end)

    if opts and opts.kill_server then
      it("stores every posture exactly once when the XMPP server is SIGKILLed and restarted mid-run", function()
        local small = start(collector, "collector2", { kinds = { "os" }, endpoint = "server-kill-endpoint",
          spool = dir .. "/collector2-kill-spool.db", delivery_wait = 0.5 })
        local jobs = {}
        for i = 1, 30 do
          if i == 10 then server:kill() end
          if i == 20 then server:restart() end
          jobs[#jobs + 1] = task.spawn(function() return small:collect({ "os" }) end)
          task.sleep(0.1)
        end
        task.all(jobs)
        wait_until(function() return small.delivery:stats().spooled == 0 end, 60, "the spool draining")
        local stored = assert(repo.store.db:query(
          "SELECT id, count(*) AS n FROM posture WHERE endpoint = 'server-kill-endpoint' GROUP BY id"))
        assert.equal(30, #stored)
        for _, r in ipairs(stored) do assert.equal(1, r.n) end
        -- and the grid works again: an assessment through the restarted server
        local a = assert(orch:assess({ kinds = { "os" }, timeout = 60 }))
        assert.is_true(#a.results > 0)
        small:close()
      end)
    end
  end)
end

each_server("Prosody", function()
  local users = {}
  for _, a in ipairs(ACCOUNTS) do users[a] = "pw" end
  return prosody.start({ users = users, shipped = true })
end, { kill_server = true })

each_server("ejabberd", function()
  local users = {}
  for _, a in ipairs(ACCOUNTS) do users[a] = "pw" end
  return ejabberd.start({ users = users, shipped = true })
end)
