-- bench/fleet.lua [ENDPOINTS]: a simulated fleet (default 1,000 endpoints) assessed once per
-- configuration, through a real grid on a private ejabberd (one node, or the two-node cluster of
-- support.ejabberd_cluster) started from examples/servers/ejabberd.yml.
--
-- The endpoints are bench/fleet_sim.lua processes (the real collector role, 250 identities per
-- process, fixture sshd posture); the evaluators are examples/grid/evaluator.lua processes sharing
-- the fleet (shard = true) with the ssh policy (21 rules); the repository runs in this process on
-- SQLite or on a private PostgreSQL (support.postgres). One round = every endpoint collects once
-- (scheduled posture, no correlation id) and is judged once. Per configuration it measures:
--   wall      seconds from the round's start until the last result set is stored
--   p50, p99  per endpoint, seconds from the round's start to its result set stored
--   cpu_ms    the XMPP server's CPU (all nodes, utime + stime from /proc) per endpoint, ms
--   rows/s    repository rows written in the round (posture, posture attributes, results, result
--             sets) over the span from the first posture to the last result set stored
-- and prints one `CONFIG name key=value ...` line each, for bench/fleet.sh.
package.path = "spec/?.lua;" .. package.path
local fs = require "sacm.fs"
local proc = require "sacm.proc"
local time = require "sacm.time"
local task = require "sacm.task"
local config = require "sacm.grid.config"
local grid = require "support.grid"
local tmp = require "support.tmp"
local repository = require "sacm.roles.repository"

local N = math.tointeger(tonumber(arg[1] or "1000"))
local PER_SIM = 250
local bin = os.getenv("SACMRUN_BIN") or "./sacmrun"
local dir = tmp.dir("fleet")
local policies = dir .. "/policies"
assert(fs.mkdir(policies))
assert(fs.write(policies .. "/ssh.lua", assert(fs.read("policies/ssh.lua"))))
local fixture = assert(os.getenv("PWD"), "PWD") .. "/spec/fixtures/collect/sshd_config"
local ticks = tonumber(assert(proc.run({ "getconf", "CLK_TCK" })).stdout) or 100

local function say(fmt, ...) io.stderr:write(("fleet: " .. fmt .. "\n"):format(...)) end

local function cpu_of(pid)
  local stat = fs.read("/proc/" .. pid .. "/stat")
  if not stat then return 0 end
  local fields = {}
  for f in stat:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = f end
  return (tonumber(fields[12]) + tonumber(fields[13])) / ticks
end

local function users()
  local u = { repository = "pw", orchestrator = "pw", evaluator = "pw" }
  for i = 1, N do u[("collector-sim-%05d"):format(i)] = "pw" end
  return u
end

-- Accounts through the HTTP API of the first node, a few at a time (each is a curl process).
local function register_all(node, list)
  local names = {}
  for name in pairs(list) do names[#names + 1] = name end
  table.sort(names)
  for i = 1, #names, 32 do
    local jobs = {}
    for k = i, math.min(i + 31, #names) do
      jobs[#jobs + 1] = task.spawn(function() return node:register(names[k], list[names[k]]) end)
    end
    for _, r in ipairs(task.all(jobs)) do assert(r.ok, r.err) end
  end
end

local function percentile(sorted, p)
  if #sorted == 0 then return 0 end
  return sorted[math.max(1, math.ceil(#sorted * p))]
end

-- A grid on `server` (a node or a cluster): sims stay up across the configurations run on it.
local function on_server(server, pids, runs)
  local g = grid.new(server, dir)
  -- a cluster's c2s addresses (a method of this branch's harness, a field of main's)
  local servers = server.servers
  if type(servers) == "function" then servers = server:servers() end
  -- spread the connections: every other process lists the nodes the other way round
  local function servers_for(i)
    if not servers then return nil end
    if i % 2 == 0 then return { servers[2], servers[1] } end
    return servers
  end
  local function conf(name, role, fields, i)
    local cfg = { domain = server.domain, host = not servers and server.host or nil,
      port = not servers and server.port or nil, cafile = server.ca_file,
      -- no orchestrator: scheduled collection needs none (and 1,000 components would verify
      -- their caps with it too)
      servers = servers_for(i), orchestrators = {},
      repository = { jid = server:jid("repository") } }
    fields.password = "pw"
    cfg[role] = fields
    local path = dir .. "/" .. name .. ".conf"
    assert(config.write(path, cfg))
    return path
  end
  local fleet_started = false
  local sims, control = {}, dir .. "/rounds-" .. tostring(server.port)
  local sim_conf = conf("sim-" .. server.port, "collector", { kinds = { "sshd" }, heartbeat = false,
    options = { sshd = { sshd_path = false, config_path = fixture } } }, 1)
  local sim_conf2 = conf("sim2-" .. server.port, "collector", { kinds = { "sshd" }, heartbeat = false,
    options = { sshd = { sshd_path = false, config_path = fixture } } }, 2)
  local function sims_log(s) return fs.read(control .. "-" .. s .. ".log") or "" end
  -- the fleet joins once the first repository has made the grid's nodes, and stays for every run
  local function start_fleet()
    fleet_started = true
    local t_join = time.monotonic()
    for s = 0, (N - 1) // PER_SIM do
      local first, count = s * PER_SIM + 1, math.min(PER_SIM, N - s * PER_SIM)
      sims[#sims + 1] = assert(proc.spawn({ bin, "bench/fleet_sim.lua", s % 2 == 0 and sim_conf or sim_conf2,
        tostring(count), tostring(first), control .. "-" .. s }))
    end
    local deadline = time.monotonic() + 900
    for s = 1, #sims do
      while not sims_log(s - 1):find("online ", 1, true) do
        assert(not sims[s].result, "a fleet simulator exited: " .. tostring(sims[s].result and sims[s].result.stderr))
        assert(time.monotonic() < deadline, "the simulated fleet did not come online")
        task.sleep(0.5)
      end
    end
    say("%d simulated endpoints online after %.1f s", N, time.monotonic() - t_join)
  end
  local round = 0
  for _, run in ipairs(runs) do
    round = round + 1
    local database = dir .. "/" .. run.name .. ".db"
    local pgserver
    if run.backend == "pg" then
      pgserver = require("support.postgres").start()
      database = pgserver:url()
    end
    local repo = assert(repository.start(g:options("repository", { database = database, servers = servers,
      host = not servers and server.host or false, port = not servers and server.port or false })))
    if not fleet_started then start_fleet() end
    local evals, logs = {}, {}
    for i = 1, run.evaluators do
      local path = conf(run.name .. "-evaluator" .. i, "evaluator", { jid = server:jid("evaluator") .. "/e" .. i,
        policies = policies, shard = true, heartbeat = false }, i)
      logs[i] = dir .. "/" .. run.name .. "-evaluator" .. i .. ".log"
      evals[i] = assert(proc.spawn({ "/bin/sh", "-c", 'exec "$0" "$@" 2>"$LOG"', bin, "examples/grid/evaluator.lua",
        path }, { env = { LOG = logs[i] } }))
    end
    -- ready: every evaluator subscribed and counting the others, every collector admitted by
    -- this repository (it verifies each one's caps: one disco#info per collector)
    local t_ready, wait_deadline = time.monotonic(), time.monotonic() + 900
    local function ready()
      for i = 1, run.evaluators do
        local text = fs.read(logs[i]) or ""
        if not text:find("evaluating with", 1, true) then return false end
        if run.evaluators > 1 and not text:find(("shard default: %d member"):format(run.evaluators), 1, true) then
          return false
        end
      end
      local admitted = 0
      for _, roles in pairs(repo.members) do
        if roles.collector then admitted = admitted + 1 end
      end
      return admitted >= N and repo.members[server:jid("evaluator")] ~= nil
    end
    while not ready() do
      assert(time.monotonic() < wait_deadline, run.name .. ": the grid was not ready within 900 s")
      task.sleep(0.5)
    end
    say("%s: evaluators ready and %d collectors admitted after %.1f s", run.name, N, time.monotonic() - t_ready)
    local c0 = 0
    for _, pid in ipairs(pids()) do c0 = c0 + cpu_of(pid) end
    local t0 = time.now()
    for s = 0, #sims - 1 do assert(fs.write(control .. "-" .. s, tostring(round))) end
    local db = repo.store.db
    local function sets() return db:first("SELECT count(*) AS n FROM result_set").n end
    local deadline2 = time.monotonic() + 900
    while sets() < N do
      assert(time.monotonic() < deadline2, run.name .. ": not every endpoint judged within 900 s")
      task.sleep(0.2)
    end
    local c1 = 0
    for _, pid in ipairs(pids()) do c1 = c1 + cpu_of(pid) end
    local lat = {}
    for _, r in ipairs(db:query("SELECT received FROM result_set")) do lat[#lat + 1] = r.received - t0 end
    table.sort(lat)
    local rows = 0
    for _, t in ipairs({ "posture", "posture_attribute", "result", "result_set" }) do
      rows = rows + db:first("SELECT count(*) AS n FROM " .. t).n
    end
    local first_in = db:first("SELECT min(received) AS t FROM posture").t
    local last_in = db:first("SELECT max(received) AS t FROM result_set").t
    local wall = last_in - t0
    print(("CONFIG %s backend=%s nodes=%d evaluators=%d endpoints=%d wall=%.2f p50=%.2f p99=%.2f cpu_ms=%.2f "
      .. "rows=%d rows_per_s=%.0f"):format(run.name, run.backend, run.nodes, run.evaluators, #lat, wall,
      percentile(lat, 0.5), percentile(lat, 0.99), (c1 - c0) * 1000 / N, rows, rows / (last_in - first_in)))
    io.stdout:flush()
    for _, e in ipairs(evals) do e:stop(10) end
    repo:close()
    if pgserver then pgserver:stop() end
  end
  for _, s in ipairs(sims) do s:stop(20) end
end

local one = { { name = "sqlite-1node-1eval", backend = "sqlite", nodes = 1, evaluators = 1 },
  { name = "sqlite-1node-3eval", backend = "sqlite", nodes = 1, evaluators = 3 },
  { name = "pg-1node-1eval", backend = "pg", nodes = 1, evaluators = 1 } }
local two = { { name = "sqlite-2node-1eval", backend = "sqlite", nodes = 2, evaluators = 1 } }

say("load average at start: %s", (fs.read("/proc/loadavg") or "?"):match("^(%S+ %S+ %S+)"))
local t = time.monotonic()
local server = require("support.ejabberd").start({ shipped = true })
register_all(server, users())
say("ejabberd and %d accounts ready in %.1f s", N + 3, time.monotonic() - t)
on_server(server, function() return { server.pid } end, one)
server:stop()

t = time.monotonic()
local c = require("support.ejabberd_cluster").start({ nodes = 2, shipped = true })
register_all(c.nodes[1], users())
say("two-node cluster and %d accounts ready in %.1f s", N + 3, time.monotonic() - t)
on_server(c, function() return { c.nodes[1].pid, c.nodes[2].pid } end, two)
c:stop()
say("load average at the end: %s", (fs.read("/proc/loadavg") or "?"):match("^(%S+ %S+ %S+)"))
tmp.remove(dir)
