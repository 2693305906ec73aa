--- Collection kind "oscap": the OpenSCAP bridge. Runs `oscap xccdf eval` on this host with a
-- SCAP source data stream and a profile (SCAP Security Guide's, typically), and returns each
-- rule-result as an item, with the whole ARF report as the attribute `arf`: posture that large
-- travels as bulk content (uploaded to the repository over HTTPS like any large posture), so the
-- report OpenSCAP wrote is stored next to the verdicts taken from it.
--
--   collect.run("oscap", { datastream = "/usr/share/xml/scap/ssg/content/ssg-debian11-ds.xml",
--     profile = "xccdf_org.ssgproject.content_profile_standard", timeout = 600 })
--
-- The kind applies only where a data stream is configured (options.oscap.datastream) and oscap
-- is installed: it runs a scanner for minutes, nobody should get it by listing every kind.
--
-- Platform. SSG 0.1.65 (Debian 12's ssg-debian) ships Debian 10 and 11 content only; their
-- Benchmark's platform is cpe:/o:debian:debian_linux:11, checked by an OVAL object matching
-- /etc/debian_version against ^11.[0-9]+$, so on Debian 12 OpenSCAP finds every rule
-- notapplicable. With adapt_platform (default "auto": when the content is SSG's Debian 11 and
-- this host is Debian 12) the bridge evaluates a derived data stream, written to a private
-- temporary directory, in which that one pattern reads ^12.[0-9]+$, and says so in the attribute
-- platform_adaptation. Nothing else changes: the rules' own checks are Debian 11's, which is
-- why docs/policies.md lists where they differ from Debian 12. See docs/api/collect.md.
local fs = require "sacm.fs"
local proc = require "sacm.proc"
local crypto = require "sacm.crypto"
local errors = require "sacm.error"
local xml = require "sacm.xml"
local text = require("sacm.collect").text

local M = {
  kind = "oscap",
  description = "rule results of `oscap xccdf eval` with a configured data stream and profile, and its ARF",
  version = 1,
}

M.SSG_DIR = "/usr/share/xml/scap/ssg/content"
M.DEFAULT_PROFILE = "xccdf_org.ssgproject.content_profile_standard"
M.XCCDF_NS = "http://checklists.nist.gov/xccdf/1.2"
M.RULE_PREFIX = "xccdf_org.ssgproject.content_rule_"
-- What the derived data stream changes: the object behind SSG's Debian 11 CPE check.
M.DEBIAN11_OBJECT = 'id="oval:ssg-obj_debian_11:obj:1"'
M.DEBIAN11_PATTERN = "^11.[0-9]+$"

-- OpenSCAP's results (XCCDF 1.2's nine) onto the grid's five (sacm.grid.protocol). notselected
-- rules are left out (the profile did not ask for them); the raw value stays in oscap_result.
M.RESULT_MAP = {
  pass = "pass", fixed = "pass", fail = "fail", error = "error",
  unknown = "notchecked", notchecked = "notchecked", informational = "notchecked",
  notapplicable = "notapplicable",
}

local function oscap_program(opts) return opts.oscap or "oscap" end

--- applicable(opts) -> true | false, why: a data stream configured and readable, oscap there.
function M.applicable(opts)
  opts = opts or {}
  if not opts.datastream and not opts.datastream_url then
    return false, "no data stream configured (the collector's options.oscap.datastream)"
  end
  if opts.datastream and not fs.stat(opts.datastream) then
    return false, ("the data stream %s is not there"):format(opts.datastream)
  end
  local r = proc.run({ oscap_program(opts), "--version" }, { timeout = 10 })
  if not r or not r.ok then
    return false, ("oscap cannot be run (%s): apt-get install openscap-scanner"):format(oscap_program(opts))
  end
  return true
end

--- debian_major(os_release_text, debian_version_text) -> "12" or nil
function M.debian_major(os_release, debian_version)
  if os_release and os_release:match('\nID=debian') or (os_release or ""):match('^ID=debian') then
    local v = os_release:match('VERSION_ID="?(%d+)')
    if v then return v end
  end
  return debian_version and debian_version:match("^(%d+)%.") or nil
end

--- adapt(ds_text, major) -> derived text, what was changed | nil, why. Points the Debian 11
-- version check of SSG's content at Debian `major`; refuses content without that check, so an
-- adaptation never happens silently to something else.
function M.adapt(ds, major)
  local count = 0
  local derived = ds:gsub("(<[%w%-%.]*:?textfilecontent54_object[^>]-" .. M.DEBIAN11_OBJECT:gsub("%p", "%%%0")
    .. "[^>]*>.-<[%w%-%.]*:?pattern[^>]*>)(.-)(</)", function(head, pattern, tail)
      if pattern ~= M.DEBIAN11_PATTERN then return nil end
      count = count + 1
      return head .. "^" .. major .. ".[0-9]+$" .. tail
    end)
  if count == 0 then
    return nil, ("no Debian 11 platform check (%s with pattern %s) in the data stream"):format(
      M.DEBIAN11_OBJECT, M.DEBIAN11_PATTERN)
  end
  return derived, ("SSG's Debian 11 platform check (oval:ssg-obj_debian_11:obj:1, /etc/debian_version "
    .. "matching %s) made to match Debian %s (^%s.[0-9]+$), %d place(s); the rules' checks are Debian 11's")
    :format(M.DEBIAN11_PATTERN, major, major, count)
end

local function private_dir()
  local base = os.getenv("TMPDIR") or "/tmp"
  local dir = ("%s/sacmrun-oscap-%s"):format(base, crypto.uuid())
  local ok, err = fs.mkdir(dir, { mode = 448 }) -- 0700: the ARF holds the host's posture
  if not ok then return nil, err end
  return dir
end

local function remove_dir(dir)
  for _, e in ipairs(fs.list(dir) or {}) do fs.remove(dir .. "/" .. e.name) end
  fs.remove(dir)
end

local ENTITIES = { lt = "<", gt = ">", amp = "&", quot = '"', apos = "'" }

-- Rule titles from the Benchmark the ARF carries (its report request), by rule id: each Rule's
-- first title, found by position (sacm.xml would build the whole data stream as a tree).
local function rule_titles(arf)
  local titles, pos = {}, 1
  while true do
    local _, e, prefix, id = arf:find('<([%w%-%.]*:?)Rule%s[^>]-id="([^"]+)"', pos)
    if not e then break end
    local p = prefix:gsub("%p", "%%%0")
    local title = arf:match("^.-<" .. p .. "title[^>]*>(.-)</" .. p .. "title>", e)
    if title then titles[id] = title:gsub("&(%a+);", ENTITIES) end
    pos = e + 1
  end
  return titles
end

--- parse_arf(arf_text) -> { items, counts = {result = n}, score, start_time, end_time, benchmark,
-- profile } | nil, why. The TestResult of the first report, read with sacm.xml; the Benchmark
-- only for rule titles.
function M.parse_arf(arf)
  local tr_text = arf:match("<TestResult%s.-</TestResult>")
  if not tr_text then return nil, "the ARF holds no XCCDF 1.2 TestResult" end
  local tr, perr = xml.parse(tr_text, { max_bytes = #tr_text + 1 })
  if not tr then return nil, "the ARF's TestResult does not parse: " .. tostring(perr) end
  if tr.ns ~= M.XCCDF_NS then return nil, "the ARF's TestResult is not XCCDF 1.2" end
  local titles = rule_titles(arf)
  local items, counts = {}, {}
  for rr in tr:children("rule-result") do
    local raw = rr:find("result#") or "error"
    local result = M.RESULT_MAP[raw]
    if result then
      counts[result] = (counts[result] or 0) + 1
      local idents = {}
      for i in rr:children("ident") do idents[#idents + 1] = i:get_text() end
      local messages = {}
      for m in rr:children("message") do messages[#messages + 1] = m:get_text() end
      local id = rr.attr.idref
      items[#items + 1] = {
        rule_id = id, rule = id:sub(1, #M.RULE_PREFIX) == M.RULE_PREFIX and id:sub(#M.RULE_PREFIX + 1) or id,
        result = result, oscap_result = raw, severity = rr.attr.severity or "unknown",
        title = text(titles[id] or id), idents = text(table.concat(idents, " ")),
        check = text(rr:find("check/check-content-ref@name") or ""), messages = text(table.concat(messages, "\n")),
      }
    end
  end
  local score = tr:child("score")
  return { items = items, counts = counts, score = score and tonumber(score:get_text()),
    start_time = tr.attr["start-time"], end_time = tr.attr["end-time"],
    benchmark = tr:find("benchmark@id"), profile = tr:find("profile@idref") }
end

M.MAX_DATASTREAM = 64 * 1024 * 1024

-- The data stream's text: the file, or fetched over HTTPS (certificate verified) and checked
-- against the pinned SHA-256.
local function datastream_text(opts)
  if opts.datastream then return fs.read(opts.datastream, { max_bytes = M.MAX_DATASTREAM }) end
  local url = opts.datastream_url
  if not opts.datastream_sha256 then
    return nil, errors.new("bad-request", ("datastream_url %s needs datastream_sha256: a scanner's "
      .. "content is code the endpoint runs, so it is pinned"):format(url))
  end
  -- loaded here: listing kinds should not load the TLS client
  local res, err = require("sacm.http").request({ url = url, cafile = opts.cafile, cert = opts.cert, key = opts.key,
    timeout = math.min(60, opts.timeout or 60), max_body = M.MAX_DATASTREAM })
  if not res then return nil, errors.new(err.condition or "internal-error", ("cannot fetch the data stream %s: %s"):format(url, tostring(err.text or err))) end
  if res.status ~= 200 then
    return nil, errors.new("item-not-found", ("cannot fetch the data stream %s: HTTP %d %s"):format(url, res.status, tostring(res.reason)))
  end
  local digest = crypto.hex(crypto.sha256(res.body))
  if digest ~= opts.datastream_sha256:lower() then
    return nil, errors.new("bad-request", ("the data stream %s has SHA-256 %s, not the pinned %s: not evaluated")
      :format(url, digest, opts.datastream_sha256))
  end
  return res.body
end

--- collect(opts) -> data | nil, err. opts: datastream (path) or datastream_url (https, with
-- datastream_sha256 pinned, cafile, cert, key), profile (default the standard profile), rules
-- (list of XCCDF rule ids: only these), adapt_platform ("auto", true, false), oscap (the
-- program), timeout (the collection's budget; oscap gets it less 5 s).
function M.collect(opts)
  opts = opts or {}
  local ds_path = opts.datastream or opts.datastream_url
  local profile = opts.profile or M.DEFAULT_PROFILE
  local ds, rerr = datastream_text(opts)
  if not ds then return nil, rerr end
  local attributes = { datastream = text(ds_path), datastream_sha256 = crypto.hex(crypto.sha256(ds)),
    profile = text(profile), platform_adaptation = "none" }
  local adapt = opts.adapt_platform
  if adapt == nil then adapt = "auto" end
  local major = M.debian_major(fs.read("/etc/os-release"), fs.read("/etc/debian_version"))
  local dir, derr = private_dir()
  if not dir then return nil, derr end
  local ok, result, err = pcall(function()
    local eval_path = opts.datastream
    if not eval_path then -- fetched: oscap reads files
      eval_path = dir .. "/datastream.xml"
      local wok, werr = fs.write(eval_path, ds, { mode = 384 })
      if not wok then return nil, werr end
    end
    local is_ssg11 = ds:find(M.DEBIAN11_OBJECT, 1, true) ~= nil
    if adapt == true or (adapt == "auto" and is_ssg11 and major and major ~= "11") then
      if not major then return nil, errors.new("not-applicable", "adapt_platform: this host is not Debian") end
      local derived, what = M.adapt(ds, major)
      if not derived then return nil, errors.new("bad-request", ("%s: %s"):format(ds_path, what)) end
      eval_path = dir .. "/derived-ds.xml"
      local wok, werr = fs.write(eval_path, derived, { mode = 384 })
      if not wok then return nil, werr end
      attributes.platform_adaptation = what
      attributes.derived_datastream_sha256 = crypto.hex(crypto.sha256(derived))
    end
    local v = proc.run({ oscap_program(opts), "--version" }, { timeout = 10 })
    attributes.oscap_version = v and v.stdout:match("%(oscap%)%s+([%d%.]+)") or "unknown"
    local arf_path = dir .. "/arf.xml"
    local argv = { oscap_program(opts), "xccdf", "eval", "--profile", profile, "--results-arf", arf_path }
    for _, rule in ipairs(opts.rules or {}) do argv[#argv + 1] = "--rule"; argv[#argv + 1] = rule end
    argv[#argv + 1] = eval_path
    local budget = math.max(1, (opts.timeout or 600) - 5)
    local r, perr = proc.run(argv, { timeout = budget, cwd = dir, max_output = 4 << 20 })
    if not r then
      if perr.condition == "timeout" then
        return nil, errors.new("timeout", ("oscap xccdf eval of %s did not finish within %gs"):format(ds_path, budget))
      end
      return nil, perr
    end
    -- 0: every rule passed, 2: some failed; 1 is an error of oscap itself
    if r.code ~= 0 and r.code ~= 2 then
      return nil, errors.new("command-failed", ("oscap xccdf eval --profile %s %s exited %s: %s"):format(profile,
        ds_path, tostring(r.code or r.signal), (r.stderr ~= "" and r.stderr or r.stdout):sub(1, 1000)))
    end
    local arf, aerr = fs.read(arf_path)
    if not arf then return nil, aerr end
    local parsed, why = M.parse_arf(arf)
    if not parsed then return nil, errors.new("command-failed", ("%s (from %s)"):format(why, ds_path)) end
    attributes.arf = text(arf)
    attributes.arf_sha256 = crypto.hex(crypto.sha256(arf))
    attributes.arf_bytes = #arf
    attributes.benchmark = text(parsed.benchmark or "")
    attributes.score = parsed.score
    attributes.start_time = parsed.start_time
    attributes.end_time = parsed.end_time
    attributes.exit_code = r.code
    for k, n in pairs(parsed.counts) do attributes["count_" .. k] = n end
    return { attributes = attributes, items = parsed.items }
  end)
  remove_dir(dir)
  if not ok then error(result, 0) end
  return result, err
end

---------------------------------------------------------------------------- into grid results

-- The grid's severities (sacm.grid.protocol) for XCCDF's; XCCDF's "unknown" is "info".
local SEVERITY = { high = "high", medium = "medium", low = "low" }

--- policy_source(data [, opts]) -> the text of a policy file with one rule per rule-result of an
-- oscap posture (what a first collection with the profile gave). Put into an evaluator's policy
-- directory, it turns each later oscap posture's rule-results into the grid's results (payload
-- results with SSG idents in their XCCDF export): result as OpenSCAP said (RESULT_MAP), evidence
-- OpenSCAP's check and messages, and the platform adaptation when there was one. opts.id: the
-- policy id (default "openscap-<profile's last part>").
function M.policy_source(data, opts)
  opts = opts or {}
  local a = data.attributes
  local profile_short = tostring(a.profile):match("content_profile_(.+)$") or tostring(a.profile)
  profile_short = profile_short:gsub("[^%w%._%-]", "-")
  local id = opts.id or ("openscap-" .. profile_short)
  local lines = {
    ("-- Generated by sacm.collect.oscap.policy_source: the rule-results of `oscap xccdf eval --profile %s`"):format(a.profile),
    ("-- with %s (SHA-256 %s) as grid results. Regenerate it when the data stream or"):format(a.datastream, a.datastream_sha256),
    "-- the profile changes (docs/policies.md, \"OpenSCAP bridge\").",
    "local RULES = {",
  }
  for _, it in ipairs(data.items) do
    lines[#lines + 1] = ("  { %q, %q, %q },"):format(it.rule_id, it.title, SEVERITY[it.severity] or "info")
  end
  lines[#lines + 1] = "}"
  lines[#lines + 1] = ([[
local PREFIX = %q
local rules = {}
for _, r in ipairs(RULES) do
  local ssg_id = r[1]
  local short = ssg_id:sub(1, #PREFIX) == PREFIX and ssg_id:sub(#PREFIX + 1) or ssg_id
  rules[#rules + 1] = {
    id = %q .. "." .. short:gsub("[^%%w%%._%%-]", "-"), title = r[2], severity = r[3], requires = { "oscap" },
    rationale = "OpenSCAP's verdict on " .. ssg_id .. " of the profile " .. %q .. ".",
    references = { { system = "ssg", id = ssg_id } },
    check = function(p)
      local it = find_item(p.oscap.items, "rule_id", ssg_id)
      if not it then return "notchecked", "oscap reported no result for " .. ssg_id end
      local evidence = { ("oscap: %%s (%%s)"):format(it.oscap_result, it.check ~= "" and it.check or "no check") }
      for line in it.messages:gmatch("[^\n]+") do evidence[#evidence + 1] = line end
      local adapted = p.oscap.attributes.platform_adaptation
      if adapted ~= "none" then evidence[#evidence + 1] = "platform adapted: " .. adapted end
      return it.result, evidence
    end,
  }
end
return { id = %q, title = "OpenSCAP: " .. %q, rules = rules }
]]):format(M.RULE_PREFIX, "ssg-" .. profile_short, a.profile, id, a.profile)
  return table.concat(lines, "\n")
end

return M
