-- This host assessed by a policy directory, without a grid, written as XCCDF 1.2 for OpenSCAP's
-- tools: sacmrun examples/assess-xccdf.lua [POLICY-DIR] [OUT.xml] [xccdf|arf]
-- (defaults: the shipped policies, results.xml, XCCDF 1.2). Then, for instance:
--   oscap xccdf validate results.xml && oscap xccdf generate report results.xml > report.html
-- or, for ARF 1.1: oscap ds rds-validate arf.xml && oscap xccdf generate report arf.xml > report.html
local policy = require "sacm.policy"
local collect = require "sacm.collect"
local xccdf = require "sacm.xccdf"
local build = require "sacm._build"

local dir = arg[1] or (build.share_dir .. "/policies")
local out = arg[2] or "results.xml"
local format = arg[3] or "xccdf"
if format ~= "xccdf" and format ~= "arf" then
  io.stderr:write(("assess-xccdf: the format is xccdf or arf, not '%s'\n"):format(format))
  sacm.exit(2)
  return
end

local engine = policy.engine({ dir = dir })
local report = assert(engine:load_all())
for _, r in ipairs(report.rejected) do io.stderr:write("rejected: ", r.error, "\n") end

local t0 = os.time()
-- every kind at once, as a collector would; a kind that does not apply here is reported so,
-- and its rules come out notapplicable rather than notchecked
local posture = {}
for kind, r in pairs(collect.run_all(collect.kinds(), { timeout = 20 })) do
  if r.data then
    posture[kind] = r.data
  elseif r.error.condition == "not-applicable" then
    posture[kind] = { applicable = false, reason = r.error.text }
  else
    posture[kind] = r.error
  end
end
local results = engine:evaluate(posture)
local os_facts = posture.os and posture.os.attributes or {}
local write = format == "arf" and require("sacm.xccdf.arf").report or xccdf.document
local doc = write({
  rules = engine:rules(), results = results, policies = engine:policies(), start_time = t0,
  target = { hostname = os_facts.hostname, facts = os_facts },
  benchmark = { id = "sacmrun", title = "sacmrun policies (" .. dir .. ")" },
})
assert(sacm.fs.write(out, doc))
local counts = {}
for _, r in ipairs(results) do counts[r.result] = (counts[r.result] or 0) + 1 end
io.stderr:write(("%s: %d rules, pass=%d fail=%d error=%d notapplicable=%d notchecked=%d\n"):format(out, #results,
  counts.pass or 0, counts.fail or 0, counts.error or 0, counts.notapplicable or 0, counts.notchecked or 0))
