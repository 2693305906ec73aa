--- sacm.report.junit: an assessment as JUnit XML, the format CI servers (Jenkins, GitLab, GitHub
-- Actions reporters) read test results in.
--
-- One <testsuite> per endpoint (named by its hostname), one <testcase> per rule: classname the
-- policy, name the rule id. A fail is a <failure>, an error an <error>, notapplicable and
-- notchecked are <skipped> (with the reason); the evidence is the element's text. The suite's
-- properties carry the endpoint id and the assessment's correlation.
local xml = require "sacm.xml"
local time = require "sacm.time"
local report = require "sacm.report"

local M = {}

local function evidence_text(r)
  return table.concat(r.evidence or {}, "\n")
end

local function testcase(r)
  local el = xml.element("testcase", { classname = r.policy_id or "policy", name = r.rule_id,
    time = ("%.6f"):format(r.duration or 0) })
  local message = ("%s (%s): %s"):format(r.result, r.severity or "-", r.title or r.rule_id)
  if r.result == "fail" then
    el:tag("failure", { message = message, type = r.severity or "fail" }):text(evidence_text(r)):up()
  elseif r.result == "error" then
    el:tag("error", { message = message, type = "error" }):text(evidence_text(r)):up()
  elseif r.result == "notapplicable" or r.result == "notchecked" then
    el:tag("skipped", { message = r.result .. ((r.evidence and r.evidence[1]) and (": " .. r.evidence[1]) or "") }):up()
  end
  return el
end

--- render(assessment) -> JUnit XML text.
---@param a sacm.report.Assessment
---@return string xml
function M.render(a)
  local root = xml.element("testsuites", { name = "sacmrun assessment " .. (a.correlation or "") })
  local all = report.totals(a.results)
  root.attr.tests, root.attr.failures, root.attr.errors = tostring(all.total), tostring(all.fail), tostring(all.error)
  for _, g in ipairs(report.by_endpoint(a.results or {})) do
    local t = report.totals(g.results)
    local suite = root:tag("testsuite", { name = g.hostname or g.endpoint, tests = tostring(t.total),
      failures = tostring(t.fail), errors = tostring(t.error), skipped = tostring(t.notapplicable + t.notchecked),
      timestamp = a.started and time.format(a.started) or nil })
    suite:tag("properties")
    suite:tag("property", { name = "endpoint", value = g.endpoint }):up()
    if a.correlation then suite:tag("property", { name = "correlation", value = a.correlation }):up() end
    suite:up()
    for _, r in ipairs(g.results) do suite:add(testcase(r)) end
    suite:up()
  end
  -- what the assessment did not cover fails the run visibly, not silently
  if a.incomplete and #a.incomplete > 0 then
    local suite = root:tag("testsuite", { name = "assessment", tests = tostring(#a.incomplete), failures = "0",
      errors = tostring(#a.incomplete) })
    for i, why in ipairs(a.incomplete) do
      suite:tag("testcase", { classname = "assessment", name = "coverage-" .. i })
        :tag("error", { message = why, type = "incomplete" }):text(why):up():up()
    end
    suite:up()
  end
  return '<?xml version="1.0" encoding="UTF-8"?>\n' .. xml.serialize(root, { indent = "  " }) .. "\n"
end

return M
