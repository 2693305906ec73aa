--- sacm.xccdf: an assessment as an XCCDF 1.2 document (NIST IR 7275 rev 4): a Benchmark holding
-- the rules that ran (grouped by policy, with their references) and a TestResult with one
-- rule-result per rule, the evidence as messages, target facts and the default score. OpenSCAP
-- reads it (`oscap xccdf validate`, `oscap xccdf generate report`).
--
--   local doc = xccdf.document({ rules = engine:rules(), results = engine:evaluate(posture),
--     target = { hostname = "web1", facts = posture.os.attributes } })
--
-- XCCDF ids must have the form xccdf_<reverse DNS>_<type>_<name>; sacmrun's are
-- xccdf_org.sacmrun_rule_<rule id> and so on, rule ids being valid NCName text already.
-- See docs/api/xccdf.md.
local xml = require "sacm.xml"
local time = require "sacm.time"
local crypto = require "sacm.crypto"

local M = {}

M.NS = "http://checklists.nist.gov/xccdf/1.2"
local DC = "http://purl.org/dc/elements/1.1/"
M.PREFIX = "xccdf_org.sacmrun_"
-- Where the reference systems the baseline uses are described (XCCDF reference/@href)
M.REFERENCE_HREFS = {
  ssg = "https://github.com/ComplianceAsCode/content",
  ["cis-debian12"] = "https://www.cisecurity.org/benchmark/debian_linux",
}
-- sacmrun's results are XCCDF's result values already (sacm.grid.protocol); a result outside them
-- would be a bug upstream and is reported as "error" rather than written out invalid.
local RESULTS = { pass = true, fail = true, error = true, unknown = true, notapplicable = true,
  notchecked = true, notselected = true, informational = true, fixed = true }
-- The default model counts a rule whose result is pass, fixed, fail, error or unknown (the first
-- two as met); notapplicable, notchecked, informational and notselected leave the score alone.
local SCORED = { pass = true, fixed = true, fail = true, error = true, unknown = true }

local NCNAME_BAD = "[^%w%._%-]"

--- id(kind, name) -> "xccdf_org.sacmrun_<kind>_<name>", name made an NCName (other characters
-- become "-").
---@param kind string
---@param name any
---@return string id an XCCDF id
function M.id(kind, name)
  return M.PREFIX .. kind .. "_" .. tostring(name):gsub(NCNAME_BAD, "-")
end

local function iso(t) return time.format(t, 0) end

-- XML 1.0 cannot carry most control characters at all; evidence may hold them (escaped \xNN
-- by the collector normally, but a check's own text is free).
local function clean(s)
  return (tostring(s):gsub("[%z\1-\8\11\12\14-\31]", "?"))
end

local function text_el(parent, name, s, attr)
  parent:tag(name, attr):text(clean(s)):up()
end

-- The check of a rule: sacmrun's own checking system, the Lua check of the rule in its policy file
-- (XCCDF wants every Rule and rule-result to name how it was checked).
M.CHECK_SYSTEM = "urn:sacmrun:check:lua"
local function check_el(b, rule, file)
  b:tag("check", { system = M.CHECK_SYSTEM })
    :tag("check-content-ref", { href = file or ((rule.policy_id or "policy") .. ".lua"), name = rule.rule_id }):up()
  b:up()
end

-- The Rule element of one rule.
local function add_rule(b, rule, file)
  b:tag("Rule", { id = M.id("rule", rule.rule_id), selected = "true", severity = rule.severity or "unknown" })
  text_el(b, "title", rule.title)
  for _, ref in ipairs(rule.references or {}) do
    local href = ref.href or M.REFERENCE_HREFS[ref.system]
    local label = ref.title and (ref.id .. " " .. ref.title) or ref.id
    text_el(b, "reference", ("%s: %s"):format(ref.system, label), href and { href = href } or nil)
  end
  text_el(b, "rationale", rule.rationale or rule.title)
  -- SSG rule ids are the identifiers OpenSCAP users join results on
  for _, ref in ipairs(rule.references or {}) do
    if ref.system == "ssg" then text_el(b, "ident", ref.id, { system = M.REFERENCE_HREFS.ssg }) end
  end
  check_el(b, rule, file)
  b:up()
end

--- document(opts) -> XML text. opts:
--   rules    engine:rules() (or the subset that ran): rule_id, policy_id, title, severity,
--            rationale, references;
--   results  engine:evaluate(...) results: rule_id, result, evidence, severity;
--   policies engine:policies() (optional): group titles and descriptions by policy id;
--   target   { hostname, addresses = {...}, facts = {name = value} } (facts become
--            target-facts, named urn:xccdf:fact:... where XCCDF has a name, else
--            urn:sacmrun:fact:<name>);
--   start_time, end_time  seconds since 1970 (default now);
--   benchmark { id, title, description, version, platforms = {CPE names} } (defaults from the
--            rules; no platform means "all platforms");
--   test_result_id (default from target and time);
--   parts    instead of results/target/times: a list of { results, target, start_time,
--            end_time, test_result_id }, one TestResult each (an assessment of several endpoints).
-- Raises on a missing rule for a result (a programmer error).
---@param opts table rules, results, policies, target, start_time, end_time, benchmark, test_result_id, parts
---@return string xml
function M.document(opts)
  local benchmark
  for _, o in ipairs(M.parts(opts)) do
    local b, test_result = M.elements(o)
    benchmark = benchmark or b
    benchmark:add(test_result)
  end
  return M.serialize(benchmark)
end

--- parts(opts) -> a list of options for elements(), one per part (opts itself without parts).
---@param opts table as document's
---@return table[] parts options for elements(), one per part
function M.parts(opts)
  if not opts.parts then return { opts } end
  assert(#opts.parts > 0, "xccdf: opts.parts is empty")
  local list = {}
  for i, part in ipairs(opts.parts) do
    local o = {}
    for k, v in pairs(opts) do if k ~= "parts" then o[k] = v end end
    for k, v in pairs(part) do o[k] = v end
    list[i] = o
  end
  return list
end

--- serialize(element) -> the XML text of a whole document (declaration, indentation).
---@param el sacm.xml.Element
---@return string xml with the declaration, indented
function M.serialize(el)
  return '<?xml version="1.0" encoding="UTF-8"?>\n' .. xml.serialize(el, { indent = "  " }) .. "\n"
end

--- elements(opts) -> Benchmark element (without TestResult), TestResult element, summary.
-- The two halves document() joins, and that an ARF report collection (sacm.xccdf.arf) keeps
-- apart: the Benchmark as the report request, the TestResult as the report. opts as document(),
-- plus benchmark_href: the TestResult's <benchmark href> (ARF: "#<data stream component id>").
-- summary = { version, score, counts = { result = n }, hostname, start_time, end_time }.
---@param opts table as document's, plus benchmark_href
---@return sacm.xml.Element benchmark without TestResult
---@return sacm.xml.Element test_result
---@return {version: string, score: number, counts: table<string, integer>, hostname: string?, start_time: number, end_time: number} summary
function M.elements(opts)
  assert(type(opts) == "table" and type(opts.rules) == "table" and type(opts.results) == "table",
    "xccdf.document: opts.rules and opts.results are required")
  local now = time.now()
  local start_time, end_time = opts.start_time or now, opts.end_time or now
  local target = opts.target or {}
  local hostname = target.hostname or "unknown"
  local bench = opts.benchmark or {}

  local by_id, policy_order, by_policy = {}, {}, {}
  for _, r in ipairs(opts.rules) do
    by_id[r.rule_id] = r
    local pid = r.policy_id or "rules"
    if not by_policy[pid] then
      by_policy[pid] = {}
      policy_order[#policy_order + 1] = pid
    end
    table.insert(by_policy[pid], r)
  end
  local policy_info = {}
  for _, p in ipairs(opts.policies or {}) do policy_info[p.id] = p end

  -- The benchmark's version: what was evaluated, as the policy versions (file hashes) in order
  local versions = {}
  for _, pid in ipairs(policy_order) do
    versions[#versions + 1] = pid .. "=" .. tostring(by_policy[pid][1].policy_version or "")
  end
  local version = bench.version or crypto.hex(crypto.sha256(table.concat(versions, "\n"))):sub(1, 16)

  local benchmark_id = M.id("benchmark", bench.id or "sacmrun")
  local b = xml.element("Benchmark", { xmlns = M.NS, id = benchmark_id, resolved = "1", ["xml:lang"] = "en" })
  b:tag("status", { date = os.date("!%Y-%m-%d", math.floor(end_time)) }):text("accepted"):up()
  text_el(b, "title", bench.title or "sacmrun policies")
  text_el(b, "description", bench.description or ("The rules sacmrun evaluated (%d policies, %d rules)."):format(
    #policy_order, #opts.rules))
  for _, cpe in ipairs(bench.platforms or {}) do b:tag("platform", { idref = cpe }):up() end
  text_el(b, "version", version)
  -- who made it, in Dublin Core as XCCDF 1.2 asks (section 6.2.4)
  b:tag("metadata"):tag("creator", { xmlns = DC }):text("sacmrun"):up()
  b:tag("publisher", { xmlns = DC }):text("sacmrun"):up():up()
  for _, pid in ipairs(policy_order) do
    local p = policy_info[pid] or {}
    b:tag("Group", { id = M.id("group", pid), selected = "true" })
    text_el(b, "title", p.title or pid)
    if p.description then text_el(b, "description", p.description) end
    for _, rule in ipairs(by_policy[pid]) do add_rule(b, rule, p.file) end
    b:up()
  end

  local benchmark_el = b
  local tr_id = opts.test_result_id or M.id("testresult", ("%s-%s"):format(hostname, os.date("!%Y%m%dT%H%M%SZ", math.floor(end_time))))
  b = xml.element("TestResult", { xmlns = M.NS, id = tr_id, ["start-time"] = iso(start_time), ["end-time"] = iso(end_time),
    ["test-system"] = "sacmrun", version = version })
  if opts.benchmark_href then
    b:tag("benchmark", { href = opts.benchmark_href, id = benchmark_id }):up()
  end
  text_el(b, "title", ("sacmrun assessment of %s"):format(hostname))
  text_el(b, "target", hostname)
  for _, address in ipairs(target.addresses or {}) do text_el(b, "target-address", address) end
  local facts = {}
  for name in pairs(target.facts or {}) do facts[#facts + 1] = name end
  table.sort(facts)
  b:tag("target-facts")
  text_el(b, "fact", hostname, { name = "urn:xccdf:fact:asset:identifier:host_name", type = "string" })
  for _, name in ipairs(facts) do
    local v = target.facts[name]
    local vtype = math.type(v) and "number" or type(v) == "boolean" and "boolean" or "string"
    text_el(b, "fact", tostring(v), { name = "urn:sacmrun:fact:" .. tostring(name):gsub("[^%w%._%-]", "-"), type = vtype })
  end
  b:up()

  -- the default scoring model (XCCDF 1.2 section 7.3.2 simplified to one level of groups with
  -- equal weights): the percentage of checked rules that passed
  local passed, scored, counts = 0, 0, {}
  for _, r in ipairs(opts.results) do
    local rule = by_id[r.rule_id]
    if not rule then error(("xccdf.document: result for unknown rule %s"):format(tostring(r.rule_id)), 2) end
    local result = RESULTS[r.result] and r.result or "error"
    counts[result] = (counts[result] or 0) + 1
    if SCORED[result] then
      scored = scored + 1
      if result == "pass" or result == "fixed" then passed = passed + 1 end
    end
    b:tag("rule-result", { idref = M.id("rule", r.rule_id), severity = r.severity or rule.severity or "unknown",
      time = iso(end_time), role = "full", weight = "1.0" })
    text_el(b, "result", result)
    for _, ref in ipairs(rule.references or {}) do
      if ref.system == "ssg" then text_el(b, "ident", ref.id, { system = M.REFERENCE_HREFS.ssg }) end
    end
    local severity = (result == "fail" or result == "error") and "error" or "info"
    for _, line in ipairs(r.evidence or {}) do text_el(b, "message", line, { severity = severity }) end
    check_el(b, rule, (policy_info[rule.policy_id] or {}).file)
    b:up()
  end
  local score = scored > 0 and (100 * passed / scored) or 100
  b:tag("score", { system = "urn:xccdf:scoring:default", maximum = "100.000000" })
    :text(("%.6f"):format(score)):up()
  return benchmark_el, b, { version = version, score = score, counts = counts, hostname = hostname,
    start_time = start_time, end_time = end_time, benchmark_id = benchmark_id, test_result_id = tr_id }
end

return M
