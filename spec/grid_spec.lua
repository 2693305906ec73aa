-- The SACM grid end to end through a real, private Prosody: collector, evaluator, repository and
-- orchestrator as they run in production (the roles in this process, and the repository also as
-- a separate process that gets killed), against real posture of this host.
local prosody = require "support.prosody"
local tmp = require "support.tmp"
local fs = require "sacm.fs"
local proc = require "sacm.proc"
local task = require "sacm.task"
local time = require "sacm.time"
local crypto = require "sacm.crypto"
local proto = require "sacm.grid.protocol"
local payload = require "sacm.grid.payload"
local report = require "sacm.report"
local collector = require "sacm.roles.collector"
local evaluator = require "sacm.roles.evaluator"
local repository = require "sacm.roles.repository"
local orchestrator = require "sacm.roles.orchestrator"

local ROLES = { "orchestrator", "collector", "collector2", "evaluator", "repository" }

local wait_until = require("support.wait").until_true
local grid = require "support.grid"

-- A policy file whose one rule passes when the os posture has a hostname; `tag` goes into the
-- evidence so a test sees which version answered.
local function os_policy(tag)
  return ([[
return {
  id = "grid-test", title = "Grid test policy", description = "used by spec/grid_spec.lua",
  rules = {
    { id = "grid-test-hostname", title = "The endpoint has a hostname", severity = "low",
      rationale = "a test", requires = { "os" },
      check = function(p)
        if p.os.attributes.hostname then return "pass", "%s " .. p.os.attributes.hostname end
        return "fail", "no hostname"
      end },
    { id = "grid-test-forwarding", title = "IP forwarding is known", severity = "info",
      rationale = "a test", requires = { "sysctl" },
      check = function(p)
        return p.sysctl.attributes["net.ipv4.ip_forward"] and "pass" or "notchecked", "%s"
      end },
  },
}
]]):format(tag, tag)
end

describe("the SACM grid over Prosody #e2e", function()
  local server, dir, policies

  local g

  local function start(mod, role, extra) return g:start(mod, role, extra) end

  lazy_setup(function()
    local users = {}
    for _, r in ipairs(ROLES) do users[r] = "pw" end
    -- only the repository may create nodes: it provisions the grid (docs/protocol.md, 4)
    server = prosody.start({ users = users, shipped = true })
    dir = tmp.dir("grid")
    g = grid.new(server, dir)
    policies = dir .. "/policies"
    assert(fs.mkdir(policies))
    assert(fs.write(policies .. "/grid-test.lua", os_policy("v1")))
  end)

  lazy_teardown(function()
    if g then g:close_roles() end
    if server then server:stop() end
    if dir then tmp.remove(dir) end
  end)

  local orch, coll, eval, repo -- luacheck: ignore 231 (coll runs; nothing asks it)

  it("discovers the components by their caps and runs an assessment end to end", function()
    repo = start(repository, "repository", { database = dir .. "/grid.db" })
    orch = start(orchestrator, "orchestrator")
    -- these cases ask for evaluations in quick succession (15 in a few seconds when the
    -- repository is killed): more than the default per-peer rate limit allows an orchestrator,
    -- which grid_commands_spec shows on its own
    eval = start(evaluator, "evaluator", { policies = policies, rate_limits = { evaluate = { rate = 50, burst = 100 } } })
    coll = start(collector, "collector", { kinds = { "os", "sysctl", "users" } })

    local found = assert(orch:discover({ collectors = 1, evaluators = 1, repositories = 1, timeout = 10 }))
    assert.equal(server:jid("collector") .. "/spec", found.collector[1].jid)
    assert.same({ "os", "sysctl", "users" }, found.collector[1].kinds)
    assert.same({ "grid-test" }, found.evaluator[1].policies)

    local a = assert(orch:assess({ timeout = 30 }))
    assert.equal("done", a.collection.collectors[server:jid("collector") .. "/spec"].state)
    assert.equal(3, #a.posture)
    assert.equal(2, #a.results)
    local version = crypto.hex(crypto.sha256(assert(fs.read(policies .. "/grid-test.lua"))))
    local hostname = assert(proc.run({ "hostname" })).stdout:match("%S+")
    for _, r in ipairs(a.results) do
      assert.equal(a.correlation, r.correlation)
      assert.equal(version, r.policy_version)
      assert.equal("pass", r.result)
      assert.equal(server:jid("evaluator") .. "/spec", r.evaluator)
      assert.equal(hostname, r.hostname)
    end
    local text = report.text(a)
    assert.matches("totals: pass=2 fail=0 error=0 notapplicable=0 notchecked=0$", text)
    for _, r in ipairs(a.results) do
      if r.rule_id == "grid-test-hostname" then assert.equal("v1 " .. hostname, r.evidence[1]) end
    end

    -- the repository stored all of it, and serves it back
    local page = wait_until(function()
      local p = assert(repo:query({ type = "results", correlation = a.correlation }))
      return #p.rows == 2 and p
    end, 10, "results stored")
    local stored = assert(repo:get(page.rows[1].id))
    assert.equal(page.rows[1].id, payload.parse_result(stored).id)
    -- and over XMPP, with paging
    local s = assert(orch:command(repo.member.conn.jid, "query",
      { type = "posture", correlation = a.correlation, max = "2" }))
    assert.equal("2", s.values.count)
    assert.is_truthy(s.values.next ~= "")
    local s2 = assert(orch:command(repo.member.conn.jid, "query",
      { type = "posture", correlation = a.correlation, max = "2", after = s.values.next }))
    assert.equal("1", s2.values.count)
    local got = assert(orch:command(repo.member.conn.jid, "get", { id = a.posture[1].id }))
    assert.equal(a.posture[1].id, payload.parse_posture(got.element:child("posture", proto.NS_POSTURE)).id)
  end)

  it("switches to an edited policy while evaluations stream in, losing and mixing none", function()
    local collection = assert(orch:collect({ kinds = { "os", "sysctl" }, timeout = 20 }))
    local new_version = crypto.hex(crypto.sha256(os_policy("v2")))
    local runs = {}
    local function newest_is_new()
      local last = runs[#runs]
      return last and #last.results > 0 and last.results[1].policy_version == new_version
    end
    local editor = task.spawn(function()
      wait_until(function() return #runs >= 3 end, 20, "first evaluations")
      assert(fs.write(policies .. "/grid-test.lua", os_policy("v2")))
    end)
    local deadline = time.monotonic() + 20
    repeat
      runs[#runs + 1] = assert(orch:evaluate({ correlation = collection.correlation, timeout = 10 }))
    until (#runs > 3 and newest_is_new()) or time.monotonic() > deadline
    editor:await()
    assert.is_true(newest_is_new(), "the edited policy never took effect")
    -- every evaluation was complete (both rules, all results arrived) and used one version;
    -- once the new version answered, the old one never did again
    local switched = false
    for _, run in ipairs(runs) do
      assert.equal(2, run.expected)
      assert.equal(2, #run.results)
      local v = run.results[1].policy_version
      assert.equal(v, run.results[2].policy_version)
      if switched then assert.equal(new_version, v) end
      if v == new_version then
        switched = true
        for _, r in ipairs(run.results) do
          if r.rule_id == "grid-test-hostname" then assert.matches("^v2 ", r.evidence[1]) end
        end
      end
    end
  end)

  it("keeps running and says error when a policy is broken, endless or a memory bomb", function()
    local statuses = {}
    orch:on_status(function(st) statuses[#statuses + 1] = st end)
    -- a syntax error: rejected, reported, and the working version stays
    local before = #eval.engine:rules()
    assert(fs.write(policies .. "/broken.lua", "return { id = 'broken', rules = { { id = 'x' check } }"))
    local rejected = wait_until(function()
      for _, st in ipairs(statuses) do
        if st.type == "policy-rejected" and st.fields.file and st.fields.file:match("broken%.lua$") then return st end
      end
    end, 5, "a policy-rejected status")
    assert.matches("broken%.lua:1:", rejected.text)
    assert.equal(before, #eval.engine:rules())
    assert(fs.remove(policies .. "/broken.lua"))

    assert(fs.write(policies .. "/hostile.lua", [[
return {
  id = "hostile", title = "Hostile rules",
  rules = {
    { id = "hostile-loop", title = "never returns", severity = "low", rationale = "test", requires = { "os" },
      check = function() while true do end end },
    { id = "hostile-memory", title = "allocates without bound", severity = "low", rationale = "test",
      requires = { "os" },
      check = function() local t = {} for i = 1, math.maxinteger do t[i] = ("x"):rep(1024) .. i end end },
    { id = "hostile-escape", title = "tries to reach the host", severity = "low", rationale = "test",
      requires = { "os" },
      check = function() return io.open("/etc/shadow") and "pass" or "fail" end },
  },
}
]]))
    -- the hostile file goes whatever happens, or later cases would judge its rules too
    finally(function()
      if fs.exists(policies .. "/hostile.lua") then fs.remove(policies .. "/hostile.lua") end
    end)
    wait_until(function() return #eval.engine:rules() == before + 3 end, 5, "hostile policy loaded")
    local collection = assert(orch:collect({ kinds = { "os", "sysctl" }, timeout = 20 }))
    -- the results are to be read here, not announced as pending because an upload on a busy
    -- machine took longer than the evaluator waits for it by default
    local wait_before = eval.delivery_wait
    eval.delivery_wait = 30
    local run = assert(orch:evaluate({ correlation = collection.correlation, timeout = 60 }))
    eval.delivery_wait = wait_before
    local by_rule = {}
    for _, r in ipairs(run.results) do by_rule[r.rule_id] = r end
    for _, id in ipairs({ "hostile-loop", "hostile-memory", "hostile-escape" }) do
      assert.truthy(by_rule[id], ("%s: no result (%d of %d results read)"):format(id, #run.results, run.expected))
      assert.equal("error", by_rule[id].result, id)
      assert.is_true(#by_rule[id].evidence > 0)
    end
    assert.equal("pass", by_rule["grid-test-hostname"].result)
    -- and the evaluator still answers
    local s = assert(orch:command(eval.member.conn.jid, "status"))
    assert.equal("evaluator", s.values.role)
    assert(fs.remove(policies .. "/hostile.lua"))
    wait_until(function() return #eval.engine:rules() == before end, 5, "hostile policy removed")
  end)

  it("discovers a second collector that joins later", function()
    local second = start(collector, "collector2", { kinds = { "os" }, endpoint = "second-endpoint" })
    local found = assert(orch:discover({ collectors = 2, timeout = 10 }))
    local jids = {}
    for _, c in ipairs(found.collector) do jids[#jids + 1] = c.jid end
    table.sort(jids)
    assert.same({ server:jid("collector2") .. "/spec", server:jid("collector") .. "/spec" }, jids)
    local a = assert(orch:assess({ kinds = { "os" }, timeout = 30 }))
    local endpoints = {}
    for _, p in ipairs(a.posture) do endpoints[p.endpoint] = true end
    assert.is_true(endpoints["second-endpoint"])
    assert.equal(2, #a.collection.posture)
    second:close()
    wait_until(function() return #orch:components("collector") == 1 end, 10, "the second collector leaving")
  end)

  it("loses no result when the repository is killed and restarted mid-run", function()
    -- the repository as its own process, from a grid config file, killed with SIGKILL while
    -- evaluations go on: the evaluator keeps the results in its spool and delivers them later
    repo:close()
    local conf = dir .. "/grid.conf"
    local db = dir .. "/killed.db"
    assert(fs.write(conf, ([[return { domain = %q, host = %q, port = %d, cafile = %q,
      orchestrators = { %q },
      repository = { jid = %q, password = "pw", database = %q, heartbeat = false,
        upload = { listen = { host = "127.0.0.1", port = 0, cert = %q, key = %q } } } }]]):format(
      server.domain, server.host, server.port, server.ca_file, server:jid("orchestrator"),
      server:jid("repository") .. "/proc", db, g.https.cert, g.https.key), { mode = 384 }))
    local bin = os.getenv("SACMRUN_BIN") or "./sacmrun"
    local function start_repo()
      local p = assert(proc.spawn({ bin, "examples/grid/repository.lua", conf }))
      wait_until(function() return eval.member:repository_jid() end, 15, "the repository online")
      return p
    end
    local p = start_repo()
    local collection = assert(orch:collect({ kinds = { "os", "sysctl" }, timeout = 20 }))
    local ids = {}
    local function evaluate_some(n)
      for _ = 1, n do
        local run = assert(orch:evaluate({ correlation = collection.correlation, timeout = 3 }))
        for _, r in ipairs(run.results) do ids[#ids + 1] = r.id end
        run.ids = nil
      end
    end
    evaluate_some(5)
    p:kill("SIGKILL")
    assert(p:wait(5))
    eval.delivery_wait = 0.2
    for _ = 1, 5 do -- evaluated while the repository is down: the results wait in the spool
      assert(orch:command(eval.member.conn.jid, "evaluate", { correlation = collection.correlation }))
    end
    assert.is_true(eval.delivery:stats().spooled >= 5)
    p = start_repo()
    eval.delivery_wait = 20
    evaluate_some(5)
    wait_until(function() return eval.delivery:stats().spooled == 0 end, 30, "the evaluator's spool draining")
    local check = assert(repository.open(db))
    local missing = {}
    for _, id in ipairs(ids) do
      if not check.db:first("SELECT 1 AS one FROM result WHERE id = ?", { id }) then missing[#missing + 1] = id end
    end
    assert.same({}, missing)
    -- 15 evaluations of two rules, each result once
    local n = check.db:first("SELECT count(*) AS n, count(DISTINCT id) AS d FROM result WHERE correlation = ?",
      { collection.correlation })
    assert.equal(30, n.n)
    assert.equal(30, n.d)
    check:close()
    local r = p:stop(5)
    assert.is_truthy(r)
  end)
end)
