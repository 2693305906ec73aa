--- sacm.xccdf.export: an assessment of the grid (result payloads, sacm.grid.payload) written as
-- XCCDF 1.2 or ARF 1.1: one TestResult (ARF: one asset and report) per endpoint, the Benchmark
-- holding every rule that was judged.
--
--   local text = export.render("arf", assessment.results, { rules = engine:rules(), policies = engine:policies() })
--   local results = export.results_of(store, correlation)   -- a stored assessment, for the same
--
-- Result payloads carry a rule's id, policy, policy version, title and severity, not its
-- rationale or references; those come from opts.rules (a policy engine's rules) for each rule
-- whose policy version is the one the result names, so a Benchmark never describes a rule by
-- another text than the one that judged it. Used by sacm-assess --format xccdf|arf and by the
-- repository's ROLIE provider (docs/rolie.md).
local xccdf = require "sacm.xccdf"
local arf = require "sacm.xccdf.arf"
local payload = require "sacm.grid.payload"
local errors = require "sacm.error"

local M = {}

M.FORMATS = { xccdf = true, arf = true }
M.MAX_RESULTS = 20000 -- results of one exported assessment (a few hundred rules x endpoints)

--- parts(results, opts) -> xccdf options (rules, parts, policies, benchmark), ready for
-- xccdf.document or arf.report. results: parsed result payloads.
function M.options(results, opts)
  opts = opts or {}
  local known = {}
  for _, r in ipairs(opts.rules or {}) do known[r.rule_id] = r end
  local rules, seen, parts, by_endpoint = {}, {}, {}, {}
  for _, r in ipairs(results) do
    if not seen[r.rule_id] then
      seen[r.rule_id] = true
      local k = known[r.rule_id]
      if k and k.policy_id == r.policy_id and k.policy_version == r.policy_version then
        rules[#rules + 1] = k
      else
        rules[#rules + 1] = { rule_id = r.rule_id, policy_id = r.policy_id, policy_version = r.policy_version,
          title = r.title or r.rule_id, severity = r.severity, references = {},
          rationale = ("Rule %s of policy %s, version %s (its text is not at hand here)."):format(
            r.rule_id, tostring(r.policy_id), tostring(r.policy_version)) }
      end
    end
    local key = r.endpoint or "?"
    local part = by_endpoint[key]
    if not part then
      part = { results = {}, target = { hostname = r.hostname or r.endpoint, facts = { endpoint = r.endpoint } } }
      by_endpoint[key] = part
      parts[#parts + 1] = part
    end
    part.results[#part.results + 1] = r
    local t = r.evaluated
    if t then
      part.start_time = math.min(part.start_time or t, r.posture_collected or t, t)
      part.end_time = math.max(part.end_time or t, t)
    end
    if r.correlation then part.target.facts.correlation = r.correlation end
  end
  table.sort(parts, function(a, b) return tostring(a.target.hostname) < tostring(b.target.hostname) end)
  return { rules = rules, parts = parts, policies = opts.policies,
    benchmark = opts.benchmark or { id = "sacmrun", title = "sacmrun assessment" } }
end

--- render(format, results, opts) -> text | nil, err. format "xccdf" or "arf"; results: parsed
-- result payloads (at least one); opts: rules, policies (a policy engine's), benchmark.
function M.render(format, results, opts)
  if not M.FORMATS[format] then return nil, errors.new("bad-request", ("unknown format '%s' (xccdf or arf)"):format(tostring(format))) end
  if #results == 0 then return nil, errors.new("item-not-found", "no results to export") end
  local o = M.options(results, opts)
  if format == "xccdf" then return xccdf.document(o) end
  return (arf.report(o))
end

--- results_of(store, correlation) -> the parsed results the store holds for a correlation id
-- (every page) | nil, err. store: sacm.grid.store or anything with its query and get.
function M.results_of(store, correlation)
  local out, after = {}, nil
  repeat
    local page, err = store:query({ type = "results", correlation = correlation, max = 500, after = after })
    if not page then return nil, err end
    for _, row in ipairs(page.rows) do
      local el, gerr = store:get(row.id)
      if not el then return nil, gerr end
      local r, perr = payload.parse_result(el)
      if not r then return nil, errors.new("internal-server-error", ("stored result %s does not parse: %s"):format(row.id, tostring(perr))) end
      out[#out + 1] = r
      if #out > M.MAX_RESULTS then
        return nil, errors.new("resource-constraint", ("assessment %s has more than %d results"):format(correlation, M.MAX_RESULTS))
      end
    end
    after = page.next
  until not after
  return out
end

return M
