--- sacm.report: an assessment's results for people (text, HTML) and for programs (JSON, JUnit).
--
--   local report = require "sacm.report"
--   print(report.text(assessment))               -- per endpoint and rule, failures first; totals last
--   fs.write("report.json", report.json(assessment))   -- docs/report.schema.json
--   fs.write("report.xml", report.junit(assessment))   -- for CI servers
--   fs.write("report.html", report.html(assessment))   -- one self-contained page
--
-- An assessment is what orchestrator:assess() returns, or any table with `results` (parsed result
-- payloads) and optionally `correlation`, `collection`, `started`, `finished`.
local json = require "sacm.json"
local time = require "sacm.time"
local proto = require "sacm.grid.protocol"

-- what orchestrator:assess returns (docs/api/roles.md)
---@alias sacm.report.Assessment table

local M = {}

local ORDER = { fail = 1, error = 2, notchecked = 3, pass = 4, notapplicable = 5 }
local SEVERITY_ORDER = { high = 1, medium = 2, low = 3, info = 4 }

--- report.totals(results) -> {pass = n, fail = n, error = n, notapplicable = n, notchecked = n, total = n}
---@param results sacm.policy.Result[]
---@return {pass: integer, fail: integer, error: integer, notapplicable: integer, notchecked: integer, total: integer}
function M.totals(results)
  local t = { total = 0 }
  for _, r in ipairs(proto.RESULTS) do t[r] = 0 end
  for _, r in ipairs(results or {}) do
    t[r.result] = (t[r.result] or 0) + 1
    t.total = t.total + 1
  end
  return t
end

--- report.totals_line(totals) -> "totals: pass=3 fail=1 error=0 notapplicable=2 notchecked=0"
---@param t table<string, integer> as totals() returns
---@return string line
function M.totals_line(t)
  local parts = {}
  for i, r in ipairs(proto.RESULTS) do parts[i] = ("%s=%d"):format(r, t[r] or 0) end
  return "totals: " .. table.concat(parts, " ")
end

--- report.posture_age(result, assessment) -> seconds between the collection of the oldest posture
-- the result judged and the start of the assessment (nil when unknown; 0 or less: collected by it)
---@param r sacm.policy.Result
---@param a sacm.report.Assessment
---@return number? seconds
function M.posture_age(r, a)
  if not r.posture_collected then return nil end
  local ref = a and a.started or r.evaluated
  return ref and (ref - r.posture_collected) or nil
end

local function age_text(seconds)
  if seconds < 120 then return ("%d s"):format(math.floor(seconds)) end
  if seconds < 7200 then return ("%d min"):format(math.floor(seconds / 60)) end
  if seconds < 172800 then return ("%.1f h"):format(seconds / 3600) end
  return ("%.1f days"):format(seconds / 86400)
end
M.age_text = age_text

-- Results grouped by endpoint (sorted by hostname), each list sorted failures first, then by severity.
local function by_endpoint(results)
  local groups, order = {}, {}
  for _, r in ipairs(results) do
    local g = groups[r.endpoint]
    if not g then
      g = { endpoint = r.endpoint, hostname = r.hostname, results = {} }
      groups[r.endpoint] = g
      order[#order + 1] = g
    end
    g.results[#g.results + 1] = r
  end
  table.sort(order, function(a, b) return (a.hostname or a.endpoint) < (b.hostname or b.endpoint) end)
  for _, g in ipairs(order) do
    table.sort(g.results, function(a, b)
      local oa, ob = ORDER[a.result] or 9, ORDER[b.result] or 9
      if oa ~= ob then return oa < ob end
      local sa, sb = SEVERITY_ORDER[a.severity] or 9, SEVERITY_ORDER[b.severity] or 9
      if sa ~= sb then return sa < sb end
      return a.rule_id < b.rule_id
    end)
  end
  return order
end
M.by_endpoint = by_endpoint

--- report.text(assessment [, {evidence = true, color = false}]) -> string; the last line is the totals.
---@param a sacm.report.Assessment
---@param opts? {evidence?: boolean, stale?: number}
---@return string text
function M.text(a, opts)
  opts = opts or {}
  local show_evidence = opts.evidence ~= false
  local out = {}
  local function line(fmt, ...) out[#out + 1] = fmt:format(...) end
  local results = a.results or {}
  line("SACM assessment %s%s", a.correlation or "", a.finished and ("  (" .. time.format(a.finished) .. ")") or "")
  if a.collection then
    local ids = {}
    for jid in pairs(a.collection.collectors or {}) do ids[#ids + 1] = jid end
    table.sort(ids)
    for _, jid in ipairs(ids) do
      local c = a.collection.collectors[jid]
      line("  collector %s: %s%s", jid, c.state, c.error and (" (" .. tostring(c.error) .. ")") or "")
    end
  end
  for _, why in ipairs(a.incomplete or {}) do line("  INCOMPLETE: %s", why) end
  local width = 4
  for _, r in ipairs(results) do width = math.max(width, #r.rule_id) end
  for _, g in ipairs(by_endpoint(results)) do
    local t = M.totals(g.results)
    line("")
    line("endpoint %s%s: %d rules, %d fail, %d error", g.hostname or g.endpoint,
      g.hostname and (" [" .. g.endpoint .. "]") or "", t.total, t.fail, t.error)
    for _, r in ipairs(g.results) do
      line("  %-13s %-6s %-" .. width .. "s  %s", r.result:upper(), r.severity or "-", r.rule_id, r.title or "")
      local age = M.posture_age(r, a)
      if age and age > (opts.stale or 60) then -- judged on posture this assessment did not collect
        line("  %-13s %-6s %-" .. width .. "s    (posture collected %s before this assessment)", "", "", "", age_text(age))
      end
      if show_evidence and r.result ~= "pass" then
        for i, e in ipairs(r.evidence or {}) do
          if i > 5 then
            line("  %-13s %-6s %-" .. width .. "s    ... %d more", "", "", "", #r.evidence - 5)
            break
          end
          line("  %-13s %-6s %-" .. width .. "s    %s", "", "", "", e)
        end
      end
    end
  end
  line("")
  line("%s", M.totals_line(M.totals(results)))
  return table.concat(out, "\n")
end

M.SCHEMA = "https://sacmrun.example/schema/report-1.json"

--- report.data(assessment) -> the report as plain Lua data, as report.json writes it
-- (docs/report.schema.json): the Lua result field names, times as XEP-0082 strings.
---@param a sacm.report.Assessment
---@return table data as docs/report.schema.json describes
function M.data(a)
  local endpoints = {}
  for _, g in ipairs(by_endpoint(a.results or {})) do
    local list = {}
    for i, r in ipairs(g.results) do
      local age = M.posture_age(r, a)
      list[i] = { id = r.id, rule_id = r.rule_id, policy_id = r.policy_id, policy_version = r.policy_version,
        result = r.result, severity = r.severity, title = r.title, evidence = json.as_array(r.evidence or {}),
        evaluated = r.evaluated and time.format(r.evaluated, 3), evaluator = r.evaluator,
        correlation = r.correlation, posture_ids = json.as_array(r.posture_ids or {}),
        posture_collected = r.posture_collected and time.format(r.posture_collected, 3),
        posture_age = age and math.floor(age * 1000 + 0.5) / 1000 }
    end
    endpoints[#endpoints + 1] = { endpoint = g.endpoint, hostname = g.hostname, totals = M.totals(g.results),
      results = json.as_array(list) }
  end
  return {
    schema = M.SCHEMA, correlation = a.correlation,
    started = a.started and time.format(a.started, 3), finished = a.finished and time.format(a.finished, 3),
    totals = M.totals(a.results), endpoints = json.as_array(endpoints),
    incomplete = json.as_array(a.incomplete or {}),
  }
end

--- report.json(assessment [, {indent = "  "}]) -> JSON text of report.data(assessment).
---@param a sacm.report.Assessment
---@param opts? {indent?: string}
---@return string json
function M.json(a, opts)
  return json.encode(M.data(a), { indent = opts and opts.indent or "  " })
end

--- report.junit(assessment) -> JUnit XML (see sacm.report.junit).
---@param a sacm.report.Assessment
---@param opts? table
---@return string xml JUnit
function M.junit(a, opts) return require("sacm.report.junit").render(a, opts) end

--- report.html(assessment) -> a self-contained HTML page (see sacm.report.html).
---@param a sacm.report.Assessment
---@param opts? {title?: string}
---@return string html
function M.html(a, opts) return require("sacm.report.html").render(a, opts) end

return M
