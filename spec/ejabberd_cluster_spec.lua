-- A grid on a two-node ejabberd cluster (support.ejabberd_cluster, the shipped configuration on
-- both nodes): roles given both nodes' addresses fail over when the node they are on is killed
-- (SIGKILL) in the middle of an assessment, and the assessment completes through the other.
local cluster = require "support.ejabberd_cluster"
local tmp = require "support.tmp"
local grid = require "support.grid"
local fs = require "sacm.fs"
local member = require "sacm.grid.member"
local config = require "sacm.grid.config"
local collector = require "sacm.roles.collector"
local evaluator = require "sacm.roles.evaluator"
local repository = require "sacm.roles.repository"
local orchestrator = require "sacm.roles.orchestrator"

local wait_until = require("support.wait").until_true

describe("grid roles on an ejabberd cluster #e2e", function()
  local c, dir, g

  lazy_setup(function()
    local users = {}
    for _, r in ipairs({ "orchestrator", "collector", "evaluator", "repository" }) do users[r] = "pw" end
    c = cluster.start({ users = users, shipped = true })
    dir = tmp.dir("cluster")
    g = grid.new(c, dir)
  end)

  lazy_teardown(function()
    if g then g:close_roles() end
    if c then c:stop() end
    if dir then tmp.remove(dir) end
  end)

  it("runs two nodes that share accounts", function()
    assert.same({ "n1@localhost", "n2@localhost" }, c:running_nodes())
    assert.same({ "collector", "evaluator", "orchestrator", "repository" }, c.nodes[2]:users())
  end)

  it("completes an assessment through node 2 when node 1 is killed in the middle of it", function()
    local n1, n2 = c:servers()[1], c:servers()[2]
    -- the repository and the orchestrator on node 2, the collector and the evaluator on node 1;
    -- each knows both nodes
    local repo = g:start(repository, "repository", { database = dir .. "/grid.db", servers = { n2, n1 } })
    local orch = g:start(orchestrator, "orchestrator", { servers = { n2, n1 } })
    local online, killed = {}, false
    orch:on_status(function(st)
      if st.type == "online" then online[st.component] = true end
      if st.type == "collection-started" and not killed then
        killed = true
        c.nodes[1]:kill()
      end
    end)
    local policies = dir .. "/policies"
    assert(fs.mkdir(policies))
    assert(fs.write(policies .. "/ssh.lua", assert(fs.read("policies/ssh.lua"))))
    local eval = g:start(evaluator, "evaluator", { policies = policies, servers = { n1, n2 } })
    local coll = g:start(collector, "collector", { kinds = { "sshd" }, servers = { n1, n2 },
      options = { sshd = { sshd_path = false, config_path = os.getenv("PWD") .. "/spec/fixtures/collect/sshd_config" } } })
    assert.equal(c.nodes[1].port, eval.member.conn.port)
    assert.equal(c.nodes[2].port, repo.member.conn.port)
    assert(orch:discover({ collectors = 1, evaluators = 1, timeout = 30 }))
    -- admitted to the nodes (a member's first status waits for that)
    wait_until(function() return online[coll.member.conn.jid] and online[eval.member.conn.jid] end, 30,
      "the collector and the evaluator admitted")
    local a = assert(orch:assess({ timeout = 90 }))
    assert.is_true(killed)
    assert.same({}, a.incomplete)
    assert.is_true(#a.results > 0)
    assert.equal(#a.results, a.evaluation.expected)
    -- both moved to node 2, and the repository holds the results
    assert.equal(c.nodes[2].port, eval.member.conn.port)
    assert.equal(c.nodes[2].port, coll.member.conn.port)
    wait_until(function()
      local row = repo.store.db:first("SELECT count(*) AS n FROM result WHERE correlation = ?", { a.correlation })
      return row.n == #a.results
    end, 30, "the results stored")
  end)

  it("reads several servers from the grid config and says which entry is wrong", function()
    local path = dir .. "/bad.conf"
    assert(config.write(path, { domain = c.domain, servers = { c:servers()[1], "node2" } }))
    local cfg, err = config.load(path)
    assert.is_nil(cfg)
    assert.equal(path .. ': servers[2] ("node2") is not host:port, e.g. "xmpp1.grid.example:5222"', err.text)
    assert.same({ { host = "127.0.0.1", port = 5222 }, { host = "::1", port = 5223 } },
      member.parse_servers({ "127.0.0.1:5222", "[::1]:5223" }))
  end)
end)

describe("an ejabberd cluster on PostgreSQL #e2e", function()
  local pgserver, c, dir, g

  lazy_setup(function()
    pgserver = require("support.postgres").start()
    local users = {}
    for _, r in ipairs({ "orchestrator", "collector", "evaluator", "repository" }) do users[r] = "pw" end
    c = cluster.start({ users = users, shipped = true, postgres = pgserver })
    dir = tmp.dir("cluster-pg")
    g = grid.new(c, dir)
  end)

  lazy_teardown(function()
    if g then g:close_roles() end
    if c then c:stop() end
    if pgserver then pgserver:stop() end
    if dir then tmp.remove(dir) end
  end)

  it("keeps accounts and the grid's pubsub nodes in PostgreSQL and runs an assessment", function()
    local pg = require "sacm.pg"
    local db <close> = assert(pg.connect(pgserver:conninfo("ejabberd")))
    local rows = assert(db:query("SELECT username, server_host FROM users ORDER BY username"))
    local names = {}
    for i, r in ipairs(rows) do
      names[i] = r.username
      assert.equal(c.domain, r.server_host)
    end
    assert.same({ "collector", "evaluator", "orchestrator", "repository" }, names)
    local servers = c:servers()
    g:start(repository, "repository", { database = dir .. "/grid.db", servers = servers })
    local orch = g:start(orchestrator, "orchestrator", { servers = { servers[2], servers[1] } })
    local online = {}
    orch:on_status(function(st) if st.type == "online" then online[st.component] = true end end)
    local policies = dir .. "/policies"
    assert(fs.mkdir(policies))
    assert(fs.write(policies .. "/ssh.lua", assert(fs.read("policies/ssh.lua"))))
    local eval = g:start(evaluator, "evaluator", { policies = policies, servers = servers })
    local coll = g:start(collector, "collector", { kinds = { "sshd" }, servers = { servers[2], servers[1] },
      options = { sshd = { sshd_path = false, config_path = os.getenv("PWD") .. "/spec/fixtures/collect/sshd_config" } } })
    assert(orch:discover({ collectors = 1, evaluators = 1, timeout = 30 }))
    wait_until(function() return online[coll.member.conn.jid] and online[eval.member.conn.jid] end, 30,
      "the collector and the evaluator admitted")
    local a = assert(orch:assess({ timeout = 60 }))
    assert.same({}, a.incomplete)
    assert.is_true(#a.results > 0)
    -- the grid's nodes live in PostgreSQL, not in Mnesia
    local nodes = {}
    for _, r in ipairs(assert(db:query("SELECT node FROM pubsub_node ORDER BY node"))) do nodes[#nodes + 1] = r.node end
    assert.same({ "sacm/posture", "sacm/results", "sacm/status" }, nodes)
  end)
end)
