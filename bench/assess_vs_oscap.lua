-- bench/assess-vs-oscap.sh's sacmrun side, and its preparation.
--
--   sacmrun bench/assess_vs_oscap.lua prepare OUTDIR   the derived SSG data stream (Debian 11's
--       platform check pointed at this Debian, sacm.collect.oscap.adapt) and the SSG rule ids the
--       baseline maps to OVAL definitions (one a line), for the oscap side
--   sacmrun bench/assess_vs_oscap.lua assess OUT.xml    this host assessed by sacmrun: the kinds
--       the mapped rules need collected, their policies judged, the results written as XCCDF
--       (oscap writes its results too)
local policy = require "sacm.policy"
local collect = require "sacm.collect"
local oscap = require "sacm.collect.oscap"
local oval = require "sacm.xccdf.oval"
local xccdf = require "sacm.xccdf"
local fs = require "sacm.fs"

local OVAL = oscap.SSG_DIR .. "/ssg-debian11-oval.xml"
local DS = oscap.SSG_DIR .. "/ssg-debian11-ds.xml"
-- the two rules spec/agreement_spec.lua leaves out, left out here on both sides alike
local SKIP = { ["accounts-unique-name"] = true, ["files-no-world-writable"] = true }

local mode, out = arg[1], arg[2]
local engine = policy.engine({ dir = "policies" })
assert(engine:load_all())
local ds = assert(fs.read(DS))
-- the pairs whose SSG rule is in the data stream's Benchmark too (a few OVAL definitions have none)
local mapped = {}
for _, p in ipairs(oval.mapped(engine:rules(), assert(fs.read(OVAL)), SKIP)) do
  if ds:find('id="' .. p.ssg .. '"', 1, true) then mapped[#mapped + 1] = p end
end

if mode == "prepare" then
  local major = oscap.debian_major(fs.read("/etc/os-release"), fs.read("/etc/debian_version")) or "12"
  local derived = major ~= "11" and assert(oscap.adapt(ds, major)) or ds
  assert(fs.write(out .. "/ds.xml", derived))
  local lines, seen = {}, {}
  for _, p in ipairs(mapped) do
    if not seen[p.ssg] then seen[p.ssg] = true; lines[#lines + 1] = p.ssg end
  end
  assert(fs.write(out .. "/rules.txt", table.concat(lines, "\n") .. "\n"))
  local rules = {}
  for _, p in ipairs(mapped) do rules[p.rule_id] = true end
  local n = 0
  for _ in pairs(rules) do n = n + 1 end
  print(("%d sacmrun rules, %d SSG rules, %d pairs"):format(n, #lines, #mapped))
elseif mode == "assess" then
  local kinds, policies, seen, pseen = {}, {}, {}, {}
  local wanted = {}
  for _, p in ipairs(mapped) do wanted[p.rule_id] = true end
  for _, r in ipairs(engine:rules()) do
    if wanted[r.rule_id] then
      for _, k in ipairs(r.requires) do
        if not seen[k] then seen[k] = true; kinds[#kinds + 1] = k end
      end
      if not pseen[r.policy_id] then pseen[r.policy_id] = true; policies[#policies + 1] = r.policy_id end
    end
  end
  local posture = {}
  for kind, r in pairs(collect.run_all(kinds, { timeout = 60 })) do
    if r.data then posture[kind] = r.data
    elseif r.error.condition == "not-applicable" then posture[kind] = { applicable = false, reason = r.error.text }
    else posture[kind] = r.error end
  end
  local results = engine:evaluate(posture, nil, { policies = policies })
  local rules = {}
  for _, r in ipairs(engine:rules()) do if pseen[r.policy_id] then rules[#rules + 1] = r end end
  assert(fs.write(out, xccdf.document({ rules = rules, results = results, policies = engine:policies(),
    target = { hostname = posture.os and posture.os.attributes.hostname or "localhost" } })))
else
  io.stderr:write("usage: sacmrun bench/assess_vs_oscap.lua prepare OUTDIR | assess OUT.xml\n")
  sacm.exit(2)
end
