-- bench/sustained.lua SERVER N: N consecutive assessments of two endpoints through a real grid on
-- a private SERVER ("prosody" or "ejabberd"), measuring the XMPP server's CPU per assessment.
--
-- The repository, the evaluator and two collectors run as their own sacmrun processes from grid
-- config files (examples/grid/*.lua), as in a deployment; this script is the orchestrator. One
-- collector collects this host; the other a synthetic dpkg status file of about 1 MB, so every
-- assessment moves a 1 MB posture. Continuous monitoring holds only if the server's cost per
-- assessment does not grow with the grid's history: the output compares the first and the last 20.
--
-- Prints one line per assessment and, at the end, key/value lines for bench/sustained.sh:
--   first20_cpu_ms, last20_cpu_ms, ratio, first20_wall_ms, last20_wall_ms, results, failures
package.path = "spec/?.lua;" .. package.path
local fs = require "sacm.fs"
local proc = require "sacm.proc"
local time = require "sacm.time"
local task = require "sacm.task"
local grid = require "support.grid"
local tmp = require "support.tmp"
local orchestrator = require "sacm.roles.orchestrator"

local which, n = arg[1], math.tointeger(tonumber(arg[2] or "200"))
assert(which == "prosody" or which == "ejabberd", "usage: sustained.lua prosody|ejabberd [N]")
local window = math.min(20, n // 2)

local ACCOUNTS = { "orchestrator", "repository", "evaluator", "collector", "collector2" }
local users = {}
for _, a in ipairs(ACCOUNTS) do users[a] = "pw" end
local server
if which == "prosody" then
  server = require("support.prosody").start({ users = users, shipped = true })
else
  server = require("support.ejabberd").start({ users = users, shipped = true })
end
local dir = tmp.dir("sustained")
local g = grid.new(server, dir)
grid.dpkg_status(dir .. "/status", 1024 * 1024)

-- One grid config per collector: the config file has one collector section.
local function config(collector_section)
  local base = {
    domain = server.domain, host = server.host, port = server.port, cafile = server.ca_file,
    orchestrators = { server:jid("orchestrator") },
    evaluator = { jid = server:jid("evaluator") .. "/bench", password = "pw", policies = "policies",
      spool = dir .. "/evaluator-spool.db", heartbeat = false },
    repository = { jid = server:jid("repository") .. "/bench", password = "pw", database = dir .. "/grid.db",
      heartbeat = false, upload = { listen = { host = "127.0.0.1", port = 0, cert = g.https.cert, key = g.https.key } } },
    collector = collector_section,
  }
  return base
end
local function write_config(name, cfg)
  local path = dir .. "/" .. name .. ".conf"
  assert(require("sacm.grid.config").write(path, cfg))
  return path
end
local host_conf = write_config("host", config({ jid = server:jid("collector") .. "/bench", password = "pw",
  spool = dir .. "/collector-spool.db", heartbeat = false,
  options = { files = { paths = { "/etc/passwd", "/etc/shadow", "/etc/ssh" } } } }))
local synthetic_conf = write_config("synthetic", config({ jid = server:jid("collector2") .. "/bench", password = "pw",
  spool = dir .. "/collector2-spool.db", heartbeat = false, endpoint = "synthetic-1mb-endpoint",
  kinds = { "os", "packages" }, options = { packages = { dpkg_status = dir .. "/status" } } }))

local bin = os.getenv("SACMRUN_BIN") or "./sacmrun"
local processes = {}
local function spawn(script, conf)
  local p = assert(proc.spawn({ bin, "examples/grid/" .. script .. ".lua", conf }, { max_output = 8 * 1024 * 1024 }))
  processes[#processes + 1] = { name = script, p = p }
end
local function stop_all()
  for i = #processes, 1, -1 do processes[i].p:stop(5) end
  processes = {}
  server:stop()
  tmp.remove(dir)
end
sacm.on_shutdown(stop_all)

spawn("repository", host_conf)
spawn("evaluator", host_conf)
spawn("collector", host_conf)
spawn("collector", synthetic_conf)

local o = assert(orchestrator.start({ jid = server:jid("orchestrator") .. "/bench", password = "pw",
  host = server.host, port = server.port, cafile = server.ca_file, repository = server:jid("repository"),
  heartbeat = false }))
assert(o:discover({ collectors = 2, evaluators = 1, repositories = 1, timeout = 60 }))

-- CPU seconds the server's process has used (utime + stime of /proc/PID/stat).
local ticks = tonumber(assert(proc.run({ "getconf", "CLK_TCK" })).stdout) or 100
local function server_cpu()
  local stat = assert(fs.read("/proc/" .. server.pid .. "/stat"))
  local fields = {}
  for f in stat:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = f end
  return (tonumber(fields[12]) + tonumber(fields[13])) / ticks
end

local cpu, wall, failures, results = {}, {}, 0, 0
for i = 1, n do
  local c0, t0 = server_cpu(), time.monotonic()
  local a, err = o:assess({ timeout = 120 })
  local c1, t1 = server_cpu(), time.monotonic()
  cpu[i], wall[i] = (c1 - c0) * 1000, (t1 - t0) * 1000
  local endpoints = {}
  if a then
    for _, r in ipairs(a.results) do endpoints[r.endpoint] = true end
    results = results + #a.results
  end
  local covered = 0
  for _ in pairs(endpoints) do covered = covered + 1 end
  if not a or covered < 2 or #a.results < a.evaluation.expected then
    failures = failures + 1
    io.stderr:write(("assessment %d incomplete: %s\n"):format(i, a and ("%d endpoints, %d/%d results"):format(covered,
      #a.results, a.evaluation.expected) or tostring(err)))
  end
  print(("assessment %d: server cpu %.1f ms, wall %.0f ms, %d results"):format(i, cpu[i], wall[i], a and #a.results or 0))
  task.yield()
end

local function mean(list, from, to)
  local s = 0
  for i = from, to do s = s + list[i] end
  return s / (to - from + 1)
end
local first_cpu, last_cpu = mean(cpu, 1, window), mean(cpu, n - window + 1, n)
print(("first%d_cpu_ms %.2f"):format(window, first_cpu))
print(("last%d_cpu_ms %.2f"):format(window, last_cpu))
print(("first_wall_ms %.1f"):format(mean(wall, 1, window)))
print(("last_wall_ms %.1f"):format(mean(wall, n - window + 1, n)))
print(("ratio %.3f"):format(last_cpu / first_cpu))
print(("results %d"):format(results))
print(("failures %d"):format(failures))
print(("window %d"):format(window))
o:close()
stop_all()
sacm.exit(failures == 0 and 0 or 1)
