-- bench/hostile_forms.lua ROUNDS: how long a collector role takes to refuse hostile command forms
-- (5,000 fields, a 200 KB value, 3,000 values, nested junk, ...: spec/support/hostile_forms.lua),
-- next to the same role's command handler opening a session (a benign request, the reference).
-- One private Prosody (spec/support/prosody.lua), and a repository, an orchestrator and a collector
-- role in this process, as spec/grid_commands_spec.lua sets them up. Each round submits every case
-- once and opens one session; times are the role's handler from receiving the stanza to
-- answering it, in this process (the server's relaying of a 200 KB stanza is not the role's).
--
-- Prints one line per case and, at the end, key/value lines for bench/hostile_forms.sh:
--   open_median_ms, hostile_median_ms, hostile_p99_ms, hostile_max_ms, slowest_case, ratio
package.path = "spec/?.lua;bench/lib/?.lua;" .. package.path
local prosody = require "support.prosody"
local grid = require "support.grid"
local tmp = require "support.tmp"
local hostile = require "support.hostile_forms"
local proto = require "sacm.grid.protocol"
local collector = require "sacm.roles.collector"
local orchestrator = require "sacm.roles.orchestrator"
local repository = require "sacm.roles.repository"
local stats = require "stats"

local rounds = math.tointeger(tonumber(arg[1] or "20"))
assert(rounds and rounds >= 1, "usage: hostile_forms.lua ROUNDS")

local server <close> = prosody.start({ users = { orchestrator = "pw", collector = "pw", repository = "pw" },
  shipped = true })
local dir = tmp.dir("hostile-forms")
local g = grid.new(server, dir)
g:start(repository, "repository", { database = dir .. "/grid.db" }) -- it creates the grid's nodes
local orch = g:start(orchestrator, "orchestrator")
-- every round starts sessions; the per-peer rate limit is what another bench would measure
local coll = g:start(collector, "collector", { kinds = { "os" },
  rate_limits = { collect = { rate = 1000, burst = 1000 } } })
assert(orch:discover({ collectors = 1, evaluators = 0, timeout = 15 }))

local cases = hostile.collect_cases()
local per_case, all, opens = {}, {}, {}
for round = 1, rounds do
  local _, took, sid = hostile.open(orch.conn, coll.member.conn, proto.CMD.collect)
  opens[#opens + 1] = took * 1e3
  hostile.cancel(orch.conn, coll.member.conn, proto.CMD.collect, sid)
  for i = 1, #cases do
    -- the order turns each round, so no case always follows the same one
    local case = cases[(i + round - 2) % #cases + 1]
    local err, t = hostile.submit(orch.conn, coll.member.conn, proto.CMD.collect, case[2])
    if err.condition ~= "bad-request" or not err.text:match(case[3]) then
      error(("%s: answered %s, not the expected bad-request"):format(case[1], tostring(err)))
    end
    per_case[case[1]] = per_case[case[1]] or {}
    table.insert(per_case[case[1]], t * 1e3)
    all[#all + 1] = t * 1e3
  end
end

local slowest_case, slowest_median = nil, -1
for _, case in ipairs(cases) do
  local times = per_case[case[1]]
  local m = stats.median(times)
  print(("case %-24s median %7.2f ms  max %7.2f ms"):format(case[1], m, stats.max(times)))
  if m > slowest_median then slowest_case, slowest_median = case[1], m end
end
local open_median = stats.median(opens)
print(("open_median_ms %.3f"):format(open_median))
print(("hostile_median_ms %.3f"):format(stats.median(all)))
print(("hostile_p99_ms %.3f"):format(stats.percentile(all, 0.99)))
print(("hostile_max_ms %.3f"):format(stats.max(all)))
print(("slowest_case %s"):format(slowest_case))
print(("slowest_case_median_ms %.3f"):format(slowest_median))
print(("ratio %.2f"):format(slowest_median / open_median))
print(("samples %d"):format(#all))

g:close_roles()
tmp.remove(dir)
