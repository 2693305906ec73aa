--- bench/collector_rss.lua: the sacmrun side of bench/collector.sh. Does what one role's process
-- does at its peak and prints that process's peak resident memory (VmHWM, kB) as `hwm_kb=N`.
--
--   ./sacmrun bench/collector_rss.lua bare        the runtime and nothing else
--   ./sacmrun bench/collector_rss.lua collect     a full collection of every kind (collect.run_all)
--   ./sacmrun bench/collector_rss.lua collector   the same with what a collector role has loaded
--                                                 besides: the TLS stack (sacm.crypto, sacm.xmpp)
--   ./sacmrun bench/collector_rss.lua evaluator   the policy engine with examples' policies loaded
-- Exits 1 (reason on stderr) if a collection fails in a way other than not applying here.
local task = require "sacm.task"
local errors = require "sacm.error"

local what = ... or "bare"

local function hwm()
  local f = assert(io.open("/proc/self/status"))
  local kb = f:read("a"):match("VmHWM:%s*(%d+) kB")
  f:close()
  return kb
end

local function collect_all()
  local collect = require "sacm.collect"
  local results = collect.run_all()
  local n = 0
  for kind, r in pairs(results) do
    if r.error and not errors.is_condition(r.error, "not-applicable") then
      io.stderr:write("collector_rss.lua: ", kind, ": ", errors.message(r.error), "\n")
      os.exit(1)
    end
    n = n + 1
  end
  return n
end

task.spawn(function()
  local detail = ""
  if what == "collect" then
    detail = " kinds=" .. collect_all()
  elseif what == "collector" then
    require "sacm.crypto"
    require "sacm.xmpp"
    require("sacm.crypto").uuid()
    detail = " kinds=" .. collect_all()
  elseif what == "evaluator" then
    local policy = require "sacm.policy"
    local engine = policy.engine({ dir = "policies" })
    assert(engine:load_all())
    detail = " rules=" .. #engine:rules()
    engine:close()
  elseif what ~= "bare" then
    io.stderr:write("collector_rss.lua: bare, collect, collector or evaluator, not ", tostring(what), "\n")
    os.exit(2)
  end
  print(("what=%s hwm_kb=%s%s"):format(what, hwm(), detail))
end)
