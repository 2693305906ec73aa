-- The grid on a two-node ejabberd cluster (spec/support/ejabberd_cluster.lua, the shipped
-- examples/servers/ejabberd.yml on each node): every role is given both nodes (the servers
-- option), and the node they all use is SIGKILLed in the middle of an assessment; the roles move
-- to the other node and the assessment completes, with every result in the repository.
local cluster = require "support.ejabberd_cluster"
local grid = require "support.grid"
local tmp = require "support.tmp"
local fs = require "sacm.fs"
local task = require "sacm.task"
local proto = require "sacm.grid.protocol"
local collector = require "sacm.roles.collector"
local evaluator = require "sacm.roles.evaluator"
local repository = require "sacm.roles.repository"
local orchestrator = require "sacm.roles.orchestrator"
local wait_until = require("support.wait").until_true

local POLICY = [[
return {
  id = "cluster", title = "Cluster test policy", description = "spec/cluster_spec.lua",
  rules = {
    { id = "cluster-os", title = "The os posture arrived", severity = "info", rationale = "a test",
      requires = { "os" }, check = function(p) return p.os.attributes.hostname and "pass" or "fail", "hostname" end },
    { id = "cluster-users", title = "The users posture arrived", severity = "info", rationale = "a test",
      requires = { "users" }, check = function(p) return #p.users.items > 0 and "pass" or "fail", "users" end },
  },
}
]]

describe("the grid on a two-node ejabberd cluster #e2e", function()
  local c, dir, g
  local ACCOUNTS = { "orchestrator", "collector", "collector2", "evaluator", "repository" }

  lazy_setup(function()
    local users = {}
    for _, a in ipairs(ACCOUNTS) do users[a] = "pw" end
    c = cluster.start({ nodes = 2, shipped = true, users = users })
    dir = tmp.dir("cluster")
    g = grid.new(c, dir)
    assert(fs.mkdir(dir .. "/policies"))
    assert(fs.write(dir .. "/policies/cluster.lua", POLICY))
  end)

  lazy_teardown(function()
    if g then g:close_roles() end
    if c then c:stop() end
    if dir then tmp.remove(dir) end
  end)

  it("forms one cluster from the shipped configuration", function()
    assert.same({ "n1@localhost", "n2@localhost" }, c:members())
    -- accounts registered through the first node exist on the second
    local users = c.nodes[2]:users()
    for _, a in ipairs(ACCOUNTS) do assert.truthy(table.concat(users, " "):find(a, 1, true), a) end
  end)

  it("completes an assessment when the node every role uses is killed in the middle of it", function()
    local repo = g:start(repository, "repository", { database = dir .. "/grid.db" })
    local eval = g:start(evaluator, "evaluator", { policies = dir .. "/policies", spool = dir .. "/e-spool.db" })
    local coll = g:start(collector, "collector", { kinds = { "os", "users" }, endpoint = "web1",
      spool = dir .. "/c1-spool.db" })
    local coll2 = g:start(collector, "collector2", { kinds = { "os", "users" }, endpoint = "db1",
      spool = dir .. "/c2-spool.db" })
    local orch = g:start(orchestrator, "orchestrator")
    assert(orch:discover({ collectors = 2, evaluators = 1, repositories = 1, timeout = 30 }))
    for _, role in ipairs({ repo, eval, coll, coll2, orch }) do
      assert.equal(c.servers[1], role.member.conn.host .. ":" .. role.member.conn.port)
    end

    -- the first posture notification of the assessment is the moment: node 1 goes down
    local killed
    local watch = orch.member.pubsub:on_event(proto.NODE.posture, function()
      if not killed then
        killed = true
        task.spawn(function() c.nodes[1]:kill() end)
      end
    end)
    local a, err = orch:assess({ timeout = 120 })
    watch.remove()
    assert.is_true(killed, "node 1 was to be killed mid-assessment")
    assert.truthy(a, tostring(err))
    assert.same({}, a.incomplete)
    for _, role in ipairs({ repo, eval, coll, coll2, orch }) do
      assert.equal(c.servers[2], role.member.conn.host .. ":" .. role.member.conn.port)
    end
    -- both endpoints judged, every rule, and the repository holds each result once
    local by = {}
    for _, r in ipairs(a.results) do by[r.endpoint .. " " .. r.rule_id] = r.result end
    for _, endpoint in ipairs({ "web1", "db1" }) do
      assert.equal("pass", by[endpoint .. " cluster-os"], endpoint)
      assert.equal("pass", by[endpoint .. " cluster-users"], endpoint)
    end
    wait_until(function()
      local row = repo.store.db:first("SELECT count(*) AS n FROM result WHERE correlation = ?", { a.correlation })
      return row and row.n == 4
    end, 30, "the repository storing the four results")
  end)
end)
