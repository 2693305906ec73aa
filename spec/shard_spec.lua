-- Evaluators that share the fleet (sacm.grid.shard): rendezvous hashing, judgment ids, and three
-- evaluator processes judging 60 simulated endpoints (bench/fleet_sim.lua, the real collector
-- role) through a private Prosody, one evaluator killed with SIGKILL in the middle of a round.
local prosody = require "support.prosody"
local tmp = require "support.tmp"
local grid = require "support.grid"
local fs = require "sacm.fs"
local proc = require "sacm.proc"
local task = require "sacm.task"
local config = require "sacm.grid.config"
local payload = require "sacm.grid.payload"
local proto = require "sacm.grid.protocol"
local shard = require "sacm.grid.shard"
local repository = require "sacm.roles.repository"
local orchestrator = require "sacm.roles.orchestrator"

local wait_until = require("support.wait").until_true

describe("sacm.grid.shard", function()
  local members = { "evaluator@grid.example/e1", "evaluator@grid.example/e2", "evaluator@grid.example/e3" }

  it("gives each endpoint one owner, spread over the members", function()
    local per = {}
    for i = 1, 3000 do
      local o = shard.owner(members, "endpoint-" .. i)
      per[o] = (per[o] or 0) + 1
    end
    for _, m in ipairs(members) do
      assert.is_true(per[m] > 800 and per[m] < 1200, m .. " owns " .. tostring(per[m]) .. " of 3000")
    end
    assert.is_nil(shard.owner({}, "endpoint-1"))
  end)

  it("moves only the endpoints of a member that leaves, and keeps owners in every subset", function()
    local without = { members[1], members[3] }
    for i = 1, 2000 do
      local e = "endpoint-" .. i
      local o = shard.owner(members, e)
      if o ~= members[2] then assert.equal(o, shard.owner(without, e)) end
      assert.equal(o, shard.owner({ o }, e))
      -- a subset holding the owner agrees with the whole set: views that differ by members not yet
      -- seen never make two live evaluators each think the other judges an endpoint
      assert.equal(o, shard.owner({ o, members[1] }, e))
    end
  end)

  it("names a judgment by what was judged, the same wherever it is made", function()
    local pols = { { id = "ssh", version = "abc" }, { id = "kernel", version = "def" } }
    local a = shard.judgment_id("web1", { "p2", "p1" }, pols)
    assert.equal(a, shard.judgment_id("web1", { "p1", "p2" }, { pols[2], pols[1] }))
    assert.is_true(proto.valid_id(a))
    assert.matches("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-8%x%x%x%-[89ab]%x%x%x%-%x+$", a)
    assert.not_equal(a, shard.judgment_id("web2", { "p1", "p2" }, pols))
    assert.not_equal(a, shard.judgment_id("web1", { "p1", "p3" }, pols))
    assert.not_equal(a, shard.judgment_id("web1", { "p1", "p2" }, { { id = "ssh", version = "abd" } }))
    assert.not_equal(a, shard.judgment_id("web1", { "p1", "p2" }, pols, "kinds=sshd"))
    assert.not_equal(shard.result_id(a, "ssh r1"), shard.result_id(a, "ssh r2"))
  end)
end)

describe("evaluators sharing a fleet of 60 simulated endpoints #e2e", function()
  local N, bin = 60, os.getenv("SACMRUN_BIN") or "./sacmrun"
  local server, dir, g, repo, orch
  local evaluators, sim = {}, nil

  lazy_setup(function()
    local users = { repository = "pw", orchestrator = "pw", evaluator = "pw" }
    for i = 1, N do users[("collector-sim-%05d"):format(i)] = "pw" end
    server = prosody.start({ users = users, shipped = true })
    dir = tmp.dir("shard")
    g = grid.new(server, dir)
  end)

  lazy_teardown(function()
    if sim then sim:stop(10) end
    for i, e in ipairs(evaluators) do
      local r = e:stop(10)
      if os.getenv("SHARD_SPEC_LOG") then io.stderr:write("---- evaluator ", i, "\n", r.stderr or "", "\n") end
    end
    if g then g:close_roles() end
    if server then server:stop() end
    if dir then tmp.remove(dir) end
  end)

  -- result sets per endpoint, and the posture each judged
  local function judged()
    local out = {}
    for _, row in ipairs(assert(repo.store.db:query("SELECT endpoint, xml FROM result_set"))) do
      local set = assert(payload.parse_result_set(assert(require("sacm.xml").parse(row.xml))))
      local e = out[row.endpoint] or { sets = 0, posture = {} }
      out[row.endpoint] = e
      e.sets = e.sets + 1
      local p = set.results[1].posture_ids[1]
      e.posture[p] = (e.posture[p] or 0) + 1
    end
    return out
  end
  local function total_sets()
    return assert(repo.store.db:first("SELECT count(*) AS n FROM result_set")).n
  end

  it("judges every endpoint exactly once per round while an evaluator is killed mid-round", function()
    repo = g:start(repository, "repository", { database = dir .. "/grid.db" })
    orch = g:start(orchestrator, "orchestrator")
    local policies = dir .. "/policies"
    assert(fs.mkdir(policies))
    assert(fs.write(policies .. "/ssh.lua", assert(fs.read("policies/ssh.lua"))))
    local fixture = assert(os.getenv("PWD"), "PWD") .. "/spec/fixtures/collect/sshd_config"
    local function conf(name, section)
      local o = g:options("evaluator")
      local cfg = { domain = server.domain, host = server.host, port = server.port, cafile = server.ca_file,
        orchestrators = { server:jid("orchestrator") }, repository = { jid = server:jid("repository") }, }
      cfg[section.role] = section.fields
      cfg[section.role].password = o.password
      local path = dir .. "/" .. name .. ".conf"
      assert(config.write(path, cfg))
      return path
    end
    for i = 1, 3 do
      local path = conf("evaluator" .. i, { role = "evaluator", fields = { jid = server:jid("evaluator") .. "/e" .. i,
        policies = policies, shard = true, heartbeat = false, max_backoff = 0.5, delivery_backoff = 0.5 } })
      evaluators[i] = assert(proc.spawn({ bin, "examples/grid/evaluator.lua", path }))
    end
    assert(orch:discover({ evaluators = 3, collectors = 0, timeout = 60 }))
    for _, e in ipairs(orch:components("evaluator")) do
      assert.is_true(e.info.features[shard.feature("default")] == true, e.jid .. " advertises the default group")
    end

    local control = dir .. "/rounds"
    local sim_conf = conf("sim", { role = "collector", fields = { kinds = { "sshd" }, max_backoff = 0.5,
      delivery_backoff = 0.5, options = { sshd = { sshd_path = false, config_path = fixture } } } })
    sim = assert(proc.spawn({ bin, "bench/fleet_sim.lua", sim_conf, tostring(N), control }))
    local function sim_log() return fs.read(control .. ".log") or "" end
    wait_until(function() return sim_log():find("online " .. N, 1, true) end, 120, "the simulated fleet online")

    local function round(r)
      assert(fs.write(control, tostring(r)))
    end
    round(1)
    wait_until(function() return total_sets() >= N end, 60, "round 1 judged")
    round(2)
    -- the kill lands inside round 2: some of its endpoints judged, others not yet
    wait_until(function() return total_sets() >= N + 5 end, 60, "round 2 under way")
    assert.is_true(evaluators[2]:kill("SIGKILL"))
    assert(evaluators[2]:wait(10))
    wait_until(function() return total_sets() >= 2 * N end, 60, "round 2 judged by the two left")
    wait_until(function() return sim_log():find("round 2 ", 1, true) end, 60, "round 2 published")
    round(3)
    wait_until(function() return total_sets() >= 3 * N end, 60, "round 3 judged")
    -- what the takeover judged again is already stored under the same ids: give late
    -- duplicates (there must be none) time to arrive
    task.sleep(shard.PROBE_INTERVAL + shard.PROBE_TIMEOUT + 2)
    local j = judged()
    local n = 0
    for i = 1, N do
      local e = ("sim-%05d"):format(i)
      local got = j[e]
      assert(got, e .. " was never judged")
      n = n + 1
      assert.equal(3, got.sets, e .. " judged " .. got.sets .. " times in 3 rounds")
      local rounds = 0
      for _, c in pairs(got.posture) do
        rounds = rounds + 1
        assert.equal(1, c, e .. ": one posture judged twice")
      end
      assert.equal(3, rounds, e .. ": judged posture of " .. rounds .. " rounds")
    end
    assert.equal(N, n)
    assert.equal(3 * N, total_sets())
  end)
end)
