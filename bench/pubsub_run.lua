--- bench/pubsub_run.lua: runs the three clients of the `pubsub` benchmark against one private
-- Prosody and writes what each run printed, one line per run, to a file. bench/pubsub.sh calls it
-- and turns the lines into tables; run it by hand only to look at raw numbers.
--
--   ./sacmrun bench/pubsub_run.lua OUT REF_BINARY
--
-- The server is the test suite's (spec/support/prosody.lua): a fresh directory, a test CA, c2s on
-- 127.0.0.1 only, a pubsub component where only the publisher account may create nodes. It is
-- started once, so all three clients meet the same warmed-up server, and stopped at the end (also
-- on failure or Ctrl-C: support.prosody registers a shutdown handler).
--
-- Each round runs every client once per window; the order of the clients rotates from round to
-- round so that a slow spell of the machine does not land on one of them only. Around each run the
-- server's own CPU time is read from /proc/PID/stat, so the table can show what Prosody spent per
-- item, the ceiling of every client. Each output line is the client's line plus
--   round=R order=K server_cpu_s=S
--
-- Environment: ITEMS (10000), WINDOWS ("1 16"), ROUNDS (3), PYTHON (/usr/bin/python3),
-- PUBSUB_DEADLINE (300, seconds per client run).
package.path = "spec/?.lua;" .. package.path
local prosody = require "support.prosody"
local proc = require "sacm.proc"
local fs = require "sacm.fs"

local out_file, ref = ...
if not out_file or not ref then
  io.stderr:write("usage: sacmrun bench/pubsub_run.lua OUT REF_BINARY\n")
  os.exit(2)
end

local function env_int(name, default)
  local v = math.tointeger(tonumber(os.getenv(name) or ""))
  return v and v > 0 and v or default
end

local items = env_int("ITEMS", 10000)
local rounds = env_int("ROUNDS", 3)
local deadline = env_int("PUBSUB_DEADLINE", 300)
local windows = {}
for w in (os.getenv("WINDOWS") or "1 16"):gmatch("%d+") do windows[#windows + 1] = math.tointeger(tonumber(w)) end
local python = os.getenv("PYTHON") or "/usr/bin/python3"

-- The clients, each given the same arguments after its own command.
local clients = {
  { name = "sacmrun", argv = { "./sacmrun", "bench/pubsub.lua" } },
  { name = "c", argv = { ref } },
  { name = "slixmpp", argv = { python, "bench/pubsub_slixmpp.py" } },
}
-- For counting instructions rather than time (docs/performance.md says how):
-- PUBSUB_CLIENTS="sacmrun c" runs only those; PUBSUB_WRAP="valgrind --tool=callgrind ..." goes
-- before each client's command.
local only = os.getenv("PUBSUB_CLIENTS")
if only then
  local kept = {}
  for _, c in ipairs(clients) do
    if (" " .. only .. " "):find(" " .. c.name .. " ", 1, true) then kept[#kept + 1] = c end
  end
  clients = kept
end
local wrap = {}
for word in (os.getenv("PUBSUB_WRAP") or ""):gmatch("%S+") do wrap[#wrap + 1] = word end

-- utime + stime of a process in seconds (fields 14 and 15 of /proc/PID/stat, in clock ticks;
-- the field after the parenthesised command name is the third).
local TICKS = 100 -- sysconf(_SC_CLK_TCK) on Linux
local function cpu_of(pid)
  local text = fs.read("/proc/" .. pid .. "/stat")
  if not text then return nil end
  local rest = text:match("%) (.*)$")
  local fields = {}
  for f in rest:gmatch("%S+") do fields[#fields + 1] = f end
  return (tonumber(fields[12]) + tonumber(fields[13])) / TICKS
end

local server <close> = prosody.start({
  admins = { "publisher" },
  users = { publisher = "pw-publisher", subscriber = "pw-subscriber" },
})
local out = assert(io.open(out_file, "w"))
io.stderr:write(("pubsub: Prosody on %s port %d; %d items, windows %s, %d rounds\n"):format(
  server.host, server.port, items, table.concat(windows, " "), rounds))

local failures = 0
for round = 1, rounds do
  for _, window in ipairs(windows) do
    for k = 1, #clients do
      local client = clients[(k + round - 2) % #clients + 1]
      local node = ("bench-%s-w%d-r%d"):format(client.name, window, round)
      local argv = { table.unpack(wrap) }
      for _, a in ipairs(client.argv) do argv[#argv + 1] = a end
      for _, a in ipairs({ server.host, server.port, server.domain, server.pubsub, server.ca_file,
        server:jid("publisher") .. "/bench", "pw-publisher", server:jid("subscriber") .. "/bench", "pw-subscriber",
        node, items, window }) do
        argv[#argv + 1] = a
      end
      local before = cpu_of(server.pid)
      local r, err = proc.run(argv, { timeout = deadline + 30, env = { PUBSUB_DEADLINE = tostring(deadline),
        PUBSUB_CONNECT_TIMEOUT = os.getenv("PUBSUB_CONNECT_TIMEOUT") } })
      local after = cpu_of(server.pid)
      local line = r and r.ok and r.stdout:match("(impl=[^\n]*)")
      if line then
        line = ("%s round=%d order=%d server_cpu_s=%.2f"):format(line, round, k, after - before)
        out:write(line, "\n")
        out:flush()
        io.stderr:write("  ", line, "\n")
      else
        failures = failures + 1
        io.stderr:write(("pubsub: %s (window %d, round %d) failed: %s\n%s"):format(client.name, window, round,
          r and ("exit " .. tostring(r.code or r.signal)) or tostring(err), r and (r.stdout .. r.stderr) or ""))
      end
    end
  end
end
out:close()
server:stop()
if failures > 0 then os.exit(1) end
