--- sacm.xccdf.arf: an assessment as an ARF 1.1 report collection (NIST IR 7694, Asset Reporting
-- Format), the form `oscap xccdf eval --results-arf` writes and SCAP tools exchange:
--
--   asset-report-collection
--     relationships   the report was created for the request, and is about the asset
--     report-requests the request: a SCAP 1.3 source data stream holding the XCCDF Benchmark
--     assets          the asset: a computing device (host name, addresses) in Asset Identification
--     reports         the report: the XCCDF TestResult, whose <benchmark> points into the request
--
--   local text = arf.report({ rules = ..., results = ..., policies = ..., target = ..., ... })
--
-- opts are sacm.xccdf.document's. `oscap ds rds-validate` accepts the collection and
-- `oscap xccdf generate report` renders it (spec/xccdf_spec.lua). See docs/api/xccdf.md.
local xml = require "sacm.xml"
local time = require "sacm.time"
local xccdf = require "sacm.xccdf"

local M = {}

M.NS = "http://scap.nist.gov/schema/asset-reporting-format/1.1"
M.CORE = "http://scap.nist.gov/schema/reporting-core/1.1"
M.AI = "http://scap.nist.gov/schema/asset-identification/1.1"
M.DS = "http://scap.nist.gov/schema/scap/source/1.2"
local XLINK = "http://www.w3.org/1999/xlink"
-- ARF's relationship vocabulary; the relationship types are QNames in it
local VOCAB = "http://scap.nist.gov/specifications/arf/vocabulary/relationships/1.0#"


-- Asset Identification wants a host name of word characters, dashes and dots, and IPv6
-- addresses written out in full (eight groups).
local function ai_hostname(s)
  s = tostring(s or ""):gsub("[^%w%-%.]", "-"):gsub("^%.+", ""):gsub("%.+$", ""):gsub("%.%.+", ".")
  return s ~= "" and s or "unknown"
end

--- expand_ipv6(text) -> eight colon-separated groups, or nil when text is not an IPv6 address.
function M.expand_ipv6(s)
  s = tostring(s):gsub("%%.*$", "") -- a zone (fe80::1%eth0) is not part of the address
  if not s:find(":", 1, true) or s:find("[^%x:]") then return nil end
  local head, tail = s:match("^(.-)::(.*)$")
  local function groups(part)
    local out = {}
    if part == "" then return out end
    for g in (part .. ":"):gmatch("([^:]*):") do
      if g == "" or #g > 4 then return nil end
      out[#out + 1] = g
    end
    return out
  end
  local g
  if head then
    if tail:find("::", 1, true) then return nil end
    local a, b = groups(head), groups(tail)
    if not a or not b or #a + #b > 7 then return nil end
    g = a
    for _ = 1, 8 - #a - #b do g[#g + 1] = "0" end
    for _, x in ipairs(b) do g[#g + 1] = x end
  else
    g = groups(s)
    if not g or #g ~= 8 then return nil end
  end
  return table.concat(g, ":")
end

local function is_ipv4(s)
  local a, b, c, d = tostring(s):match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then return false end
  for _, n in ipairs({ a, b, c, d }) do
    if tonumber(n) > 255 or (#n > 1 and n:sub(1, 1) == "0") then return false end
  end
  return true
end

-- The asset: the endpoint as a computing device. Addresses that are neither IPv4 nor IPv6 are
-- left out of the connections (the TestResult still names them as target-address).
local function asset_el(c, id, target, hostname)
  c:tag("asset", { id = id }):tag("computing-device", { xmlns = M.AI })
  local conns = {}
  for _, a in ipairs(target.addresses or {}) do
    if is_ipv4(a) then conns[#conns + 1] = { "ip-v4", a }
    else
      local v6 = M.expand_ipv6(a)
      if v6 then conns[#conns + 1] = { "ip-v6", v6 } end
    end
  end
  if #conns > 0 then
    c:tag("connections")
    for _, conn in ipairs(conns) do
      c:tag("connection"):tag("ip-address"):tag(conn[1]):text(conn[2]):up():up():up()
    end
    c:up()
  end
  if tostring(hostname):find(".", 1, true) then c:tag("fqdn"):text(ai_hostname(hostname)):up() end
  c:tag("hostname"):text(ai_hostname(hostname:match("^[^.]+") or hostname)):up()
  c:up():up()
end

--- report(opts) -> XML text of the ARF report collection, summaries (one per report).
-- opts: sacm.xccdf.document's; with opts.parts, one asset and one report per part. Raises as
-- document() does.
function M.report(opts)
  assert(type(opts) == "table", "arf.report: opts required")
  local bench_name = (opts.benchmark or {}).id or "sacmrun"
  local safe = tostring(bench_name):gsub("[^%w%._%-]", "-")
  -- SCAP 1.3 data stream ids: scap_<reverse DNS>_<type>_<name>
  local collection_id = "scap_org.sacmrun_collection_" .. safe
  local stream_id = "scap_org.sacmrun_datastream_" .. safe
  local component_id = "scap_org.sacmrun_comp_" .. safe .. "-xccdf"
  local cref_id = "scap_org.sacmrun_cref_" .. safe .. "-xccdf"

  local benchmark, reports, summaries = nil, {}, {}
  for i, o in ipairs(xccdf.parts(opts)) do
    o.benchmark_href = "#" .. component_id
    local b, test_result, summary = xccdf.elements(o)
    benchmark = benchmark or b
    reports[i] = { id = "xccdf" .. i, asset = "asset" .. (i - 1), test_result = test_result,
      target = o.target or {}, summary = summary }
    summaries[i] = summary
  end

  local c = xml.element("asset-report-collection", { xmlns = M.NS })
  c:tag("relationships", { xmlns = M.CORE })
  for _, r in ipairs(reports) do
    c:tag("relationship", { type = "arfvocab:createdFor", subject = r.id }):tag("ref"):text("collection1"):up():up()
    c:tag("relationship", { type = "arfvocab:isAbout", subject = r.id }):tag("ref"):text(r.asset):up():up()
  end
  c:up()

  c:tag("report-requests"):tag("report-request", { id = "collection1" }):tag("content")
  c:tag("data-stream-collection", { xmlns = M.DS, id = collection_id, ["schematron-version"] = "1.3" })
  c:tag("data-stream", { id = stream_id, ["scap-version"] = "1.3", ["use-case"] = "OTHER" })
    :tag("checklists"):tag("component-ref", { id = cref_id, [XLINK .. " href"] = "#" .. component_id })
    :up():up():up()
  c:tag("component", { id = component_id, timestamp = time.format(summaries[1].end_time, 0) })
    :add(benchmark):up()
  c:up() -- data-stream-collection
  c:up():up():up()

  c:tag("assets")
  for _, r in ipairs(reports) do asset_el(c, r.asset, r.target, r.summary.hostname) end
  c:up()

  c:tag("reports")
  for _, r in ipairs(reports) do
    c:tag("report", { id = r.id }):tag("content"):add(r.test_result):up():up()
  end
  c:up()
  -- relationship/@type is a QName in ARF's vocabulary: its prefix has to be declared, and
  -- sacm.xml declares only the namespaces of elements and attributes, so it goes on the root here
  local text = xccdf.serialize(c)
  local root = '<asset-report-collection xmlns="' .. M.NS .. '"'
  assert(text:find(root, 1, true), "arf.report: unexpected root serialization")
  text = text:gsub(root:gsub("%p", "%%%0"), function(r) return r .. ' xmlns:arfvocab="' .. VOCAB .. '"' end, 1)
  return text, summaries
end

return M
