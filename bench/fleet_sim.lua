-- A simulated fleet: many collector identities in one sacmrun process, each the real collector
-- role (sacm.roles.collector) with its own account, its own endpoint id and fixture posture.
--
--   sacmrun bench/fleet_sim.lua GRID-CONFIG COUNT [FIRST] CONTROL-FILE
--
-- GRID-CONFIG: a grid config (sacm.grid.config) whose collector section gives the connection
-- settings, the password every simulated account shares, the kinds and their options (fixture
-- files: e.g. sshd with sshd_path = false and config_path = a fixture sshd_config) and
-- `fleet_prefix` (default "collector-sim"). Identity i (FIRST <= i < FIRST + COUNT) is the account
-- <prefix>-<i, 5 digits>@<domain>/sim and speaks for endpoint sim-<i, 5 digits>.
--
-- Rounds are driven through CONTROL-FILE: when it holds a number greater than the last round
-- run, every identity collects once (as its schedule would: posture without a correlation id).
-- The simulator appends to CONTROL-FILE.log "online N" once all identities joined, and "round R
-- T" (T: seconds the round took to publish) after each round. It runs until SIGINT/SIGTERM.
--
-- Keep COUNT at 300 or below: each identity holds an XMPP socket and an HTTPS connection, and
-- libstrophe waits on its sockets with select(), which handles descriptors below 1024 only;
-- run several processes for a larger fleet.
local config = require "sacm.grid.config"
local collector = require "sacm.roles.collector"
local task = require "sacm.task"
local timer = require "sacm.timer"
local time = require "sacm.time"
local fs = require "sacm.fs"

local M = {}
M.MAX_IDENTITIES = 300
M.JOIN_AT_ONCE = 10 -- identities connecting at a time: a login storm would only queue at the server
M.JOIN_TRIES = 5    -- a login that times out on a loaded server is tried again

local usage = "usage: fleet_sim.lua GRID-CONFIG COUNT [FIRST] CONTROL-FILE"
local conf_path, count = assert(arg[1], usage), tonumber(arg[2])
local first, control = tonumber(arg[3]), arg[4]
if not first then first, control = 1, arg[3] end
assert(count and count >= 1 and control, usage)
if count > M.MAX_IDENTITIES then
  io.stderr:write(("fleet_sim: %d identities would need sockets above 1023, which libstrophe's select() "
    .. "cannot wait on; run several processes of at most %d\n"):format(count, M.MAX_IDENTITIES))
  os.exit(2)
end

local cfg = assert(config.load(conf_path))
config.log_level(cfg, "collector")
local base = config.role_options(cfg, "collector")
local prefix = base.fleet_prefix or "collector-sim"
base.fleet_prefix = nil

local function note(line)
  local f = assert(io.open(control .. ".log", "a"))
  f:write(line, "\n")
  f:close()
end

local collectors, closing = {}, false
sacm.on_shutdown(function()
  closing = true
  for _, c in ipairs(collectors) do c:close() end
end)

-- joining in waves keeps the server's login queue short
local ids = {}
for i = first, first + count - 1 do ids[#ids + 1] = i end
for wave = 1, #ids, M.JOIN_AT_ONCE do
  local jobs = {}
  for k = wave, math.min(wave + M.JOIN_AT_ONCE - 1, #ids) do
    local i = ids[k]
    jobs[#jobs + 1] = task.spawn({ name = "join " .. i }, function()
      local o = {}
      for key, v in pairs(base) do o[key] = v end
      o.jid = ("%s-%05d@%s/sim"):format(prefix, i, cfg.domain)
      o.endpoint = ("sim-%05d"):format(i)
      o.heartbeat = false
      o.connect_timeout = o.connect_timeout or 60
      for try = 1, M.JOIN_TRIES do
        local c, err = collector.start(o)
        if c then return c end
        io.stderr:write(("fleet_sim: %s could not join (try %d of %d): %s\n"):format(o.jid, try, M.JOIN_TRIES,
          tostring(err)))
        if try == M.JOIN_TRIES or closing then error(err, 0) end
        task.sleep(try)
      end
    end)
  end
  for _, r in ipairs(task.all(jobs)) do
    if not r.ok then error(r.err, 0) end
    collectors[#collectors + 1] = r.value
  end
  if closing then return end
end
note("online " .. #collectors)

local last = 0
local function poll()
  local text = fs.read(control)
  local want = tonumber(text and text:match("%d+"))
  if not want or want <= last or closing then return end
  for round = last + 1, want do
    last = round
    local t0 = time.monotonic()
    local jobs = {}
    for _, c in ipairs(collectors) do
      jobs[#jobs + 1] = task.spawn({ name = "collect" }, function() return c:collect(nil, nil) end)
    end
    task.all(jobs)
    note(("round %d %.3f"):format(round, time.monotonic() - t0))
  end
end
local busy = false
timer.every(0.1, function()
  if busy then return end
  busy = true
  local ok, err = pcall(poll)
  busy = false
  if not ok then io.stderr:write("fleet_sim: ", tostring(err), "\n") end
end)
