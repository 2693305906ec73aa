-- bench/connect.lua REF_BINARY N ROUNDS: N logins in a row (TLS verified against the server's CA
-- file, SASL SCRAM, bind) to a private Prosody (spec/support/prosody.lua), by sacm.xmpp in this
-- process and by bench/connect_ref.c (plain libstrophe), taking turns for ROUNDS rounds.
-- Prints one line per client and round, then key/value lines for bench/connect.sh:
--   sacmrun_cpu_ms, sacmrun_wall_ms, c_cpu_ms, c_wall_ms (medians of the rounds' medians), ratio
package.path = "spec/?.lua;bench/lib/?.lua;" .. package.path
local prosody = require "support.prosody"
local xmpp = require "sacm.xmpp"
local proc = require "sacm.proc"
local time = require "sacm.time"
local median = require("stats").median

local ref = arg[1]
local n = math.tointeger(tonumber(arg[2] or "20"))
local rounds = math.tointeger(tonumber(arg[3] or "3"))
assert(ref and n and n >= 1 and rounds and rounds >= 1, "usage: connect.lua REF_BINARY N ROUNDS")

local server <close> = prosody.start({ users = { bench = "bench-pw" } })

local function sacmrun_round()
  local cpu, wall = {}, {}
  for i = 1, n do
    local c0, w0 = os.clock(), time.monotonic()
    local conn, err = xmpp.connect({ jid = server:jid("bench") .. "/s" .. i, password = "bench-pw",
      host = server.host, port = server.port, cafile = server.ca_file, reconnect = false })
    if not conn then error("sacmrun login " .. i .. " failed: " .. tostring(err)) end
    cpu[i], wall[i] = (os.clock() - c0) * 1e3, (time.monotonic() - w0) * 1e3
    conn:close()
  end
  return median(cpu), median(wall)
end

local function c_round()
  local r = assert(proc.run({ ref, server.host, server.port, server:jid("bench") .. "/c", "bench-pw",
    server.ca_file, n }, { timeout = 120 }))
  if r.code ~= 0 then error("connect_ref failed: " .. r.stderr) end
  local cpu, wall = r.stdout:match("cpu_ms_median=([%d.]+) wall_ms_median=([%d.]+)")
  return tonumber(cpu), tonumber(wall)
end

local got = { sacmrun = { cpu = {}, wall = {} }, c = { cpu = {}, wall = {} } }
for round = 1, rounds do
  local order = round % 2 == 1 and { "sacmrun", "c" } or { "c", "sacmrun" }
  for _, impl in ipairs(order) do
    local cpu, wall
    if impl == "sacmrun" then cpu, wall = sacmrun_round() else cpu, wall = c_round() end
    table.insert(got[impl].cpu, cpu)
    table.insert(got[impl].wall, wall)
    print(("impl=%s round=%d connects=%d cpu_ms_median=%.2f wall_ms_median=%.2f"):format(impl, round, n, cpu, wall))
  end
end
local s_cpu, s_wall = median(got.sacmrun.cpu), median(got.sacmrun.wall)
local c_cpu, c_wall = median(got.c.cpu), median(got.c.wall)
print(("sacmrun_cpu_ms %.2f"):format(s_cpu))
print(("sacmrun_wall_ms %.2f"):format(s_wall))
print(("c_cpu_ms %.2f"):format(c_cpu))
print(("c_wall_ms %.2f"):format(c_wall))
print(("ratio %.2f"):format(s_cpu / c_cpu))
print(("wall_ratio %.2f"):format(s_wall / c_wall))
