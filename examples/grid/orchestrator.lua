-- One assessment of the grid: sacmrun examples/grid/orchestrator.lua grid.conf [report.json|.html|.xml]
-- Finds collectors and evaluators, collects, evaluates, prints the report (its last line the
-- totals per result) and, if asked, writes it as JSON. Exits 0 when the assessment ran (whatever
-- the results), 1 when it could not or covered less than it asked for (a collector or evaluator
-- failed or timed out, results missing: the report's INCOMPLETE lines say which).
local config = require "sacm.grid.config"
local orchestrator = require "sacm.roles.orchestrator"
local report = require "sacm.report"

local cfg = assert(config.load(assert(arg[1], "usage: orchestrator.lua GRID-CONFIG [REPORT.json]")))
local opts = config.role_options(cfg, "orchestrator")
local o <close> = assert(orchestrator.start(opts))

local found, err = o:discover({ collectors = opts.collectors or 1, evaluators = opts.evaluators or 1,
  timeout = opts.discover_timeout or 15 })
if not found then
  io.stderr:write("orchestrator: ", tostring(err), "\n")
  sacm.exit(1)
end
for _, role in ipairs({ "collector", "evaluator", "repository" }) do
  for _, c in ipairs(found[role]) do
    io.stderr:write(("found %s %s%s\n"):format(role, c.jid,
      #c.kinds > 0 and (" (" .. table.concat(c.kinds, ", ") .. ")") or
      #c.policies > 0 and (" (policies " .. table.concat(c.policies, ", ") .. ")") or ""))
  end
end

local assessment, aerr = o:assess({ timeout = opts.assess_timeout or 120 })
if not assessment then
  io.stderr:write("orchestrator: assessment failed: ", tostring(aerr), "\n")
  sacm.exit(1)
end
if arg[2] then -- the report's format follows the file's name: .html, .xml (JUnit), else JSON
  local render = arg[2]:match("%.html?$") and report.html or arg[2]:match("%.xml$") and report.junit or report.json
  assert(sacm.fs.write(arg[2], render(assessment)))
end
print(report.text(assessment))
if #assessment.incomplete > 0 then
  io.stderr:write("orchestrator: the assessment is incomplete: ", table.concat(assessment.incomplete, "; "), "\n")
  sacm.exit(1)
end
