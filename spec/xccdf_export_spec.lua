-- An assessment of the grid (result payloads) as XCCDF and ARF (sacm.xccdf.export): one
-- TestResult per endpoint, rule texts only from the policy version that judged; and the same
-- fetched from a repository through ROLIE over HTTPS (curl, TLS verified), checked by oscap.
local export = require "sacm.xccdf.export"
local rolie = require "sacm.rolie"
local repository = require "sacm.roles.repository"
local policy = require "sacm.policy"
local payload = require "sacm.grid.payload"
local certs = require "support.certs"
local tmp = require "support.tmp"
local proc = require "sacm.proc"
local fs = require "sacm.fs"
local xml = require "sacm.xml"
local crypto = require "sacm.crypto"

local T0 = 1764662400
local POLICY = [[
return { id = "baseline", title = "Baseline", rules = {
  { id = "aslr", title = "ASLR is on", severity = "high", rationale = "Randomised addresses stop exploits.",
    requires = { "sysctl" }, references = {
      { system = "ssg", id = "xccdf_org.ssgproject.content_rule_sysctl_kernel_randomize_va_space" } },
    check = function() return "pass" end },
  { id = "fwd", title = "No forwarding", severity = "medium", rationale = "Not a router.",
    requires = { "sysctl" }, check = function() return "pass" end },
} }
]]

local function parse_doc(text) return assert(xml.parse((text:gsub("^<%?xml[^>]*>\n", "")))) end

local function oscap(...)
  return assert(proc.run({ "oscap", ... }, { timeout = 120, max_output = 64 << 20 }))
end

-- results of an assessment of two endpoints, judged by policy version `version`
local function results(version, correlation)
  local out = {}
  for i, ep in ipairs({ { "web1@grid.example/agent", "web1" }, { "db1@grid.example/agent", "db1" } }) do
    out[#out + 1] = { id = crypto.uuid(), endpoint = ep[1], hostname = ep[2], rule_id = "aslr", policy_id = "baseline",
      policy_version = version, result = i == 1 and "pass" or "fail", severity = "high", title = "ASLR is on",
      evaluated = T0 + i, evaluator = "evaluator@grid.example/e", correlation = correlation,
      evidence = { "kernel.randomize_va_space = " .. (i == 1 and "2" or "0") } }
    out[#out + 1] = { id = crypto.uuid(), endpoint = ep[1], hostname = ep[2], rule_id = "fwd", policy_id = "baseline",
      policy_version = version, result = "pass", severity = "medium", title = "No forwarding",
      evaluated = T0 + i, evaluator = "evaluator@grid.example/e", correlation = correlation, evidence = {} }
  end
  return out
end

describe("sacm.xccdf.export", function()
  local dir, engine
  lazy_setup(function()
    dir = tmp.dir("xccdf-export")
    assert(fs.mkdir(dir .. "/policies"))
    assert(fs.write(dir .. "/policies/baseline.lua", POLICY))
    engine = policy.engine({ dir = dir .. "/policies" })
    assert(engine:load_all())
  end)
  lazy_teardown(function() if dir then tmp.remove(dir) end end)

  local function version() return engine:rules()[1].policy_version end

  it("writes one TestResult per endpoint, the rules described by the policy version that judged them", function()
    local text = assert(export.render("xccdf", results(version(), "c-1"), { rules = engine:rules(), policies = engine:policies() }))
    local b = parse_doc(text)
    local trs = {}
    for tr in b:children("TestResult") do
      local rr = {}
      for r in tr:children("rule-result") do rr[#rr + 1] = r.attr.idref:match("_rule_(.*)$") .. "=" .. r:find("result#") end
      trs[#trs + 1] = { tr:find("target#"), table.concat(rr, ","), tr:find("score#") }
    end
    -- sorted by host name
    assert.same({ { "db1", "aslr=fail,fwd=pass", "50.000000" }, { "web1", "aslr=pass,fwd=pass", "100.000000" } }, trs)
    local rule = b:find("Group/Rule")
    assert.equal("Randomised addresses stop exploits.", rule:find("rationale#"))
    assert.equal("xccdf_org.ssgproject.content_rule_sysctl_kernel_randomize_va_space", rule:find("ident#"))
    local path = dir .. "/grid-xccdf.xml"
    assert(fs.write(path, text))
    local v = oscap("xccdf", "validate", path)
    assert(v.ok, v.stdout .. v.stderr)
  end)

  it("keeps to the result's own title when the policy at hand is another version", function()
    local text = assert(export.render("xccdf", results("0123abcd", "c-2"), { rules = engine:rules() }))
    local rule = parse_doc(text):find("Group/Rule")
    assert.equal("ASLR is on", rule:find("title#"))
    assert.equal("Rule aslr of policy baseline, version 0123abcd (its text is not at hand here).", rule:find("rationale#"))
    assert.is_nil(rule:find("ident#"))
  end)

  it("writes ARF with an asset and a report per endpoint, which oscap validates and renders", function()
    local text = assert(export.render("arf", results(version(), "c-3"), { rules = engine:rules(), policies = engine:policies() }))
    local c = parse_doc(text)
    local assets, reports = {}, {}
    for a in c:child("assets"):children("asset") do assets[#assets + 1] = a.attr.id .. "=" .. a:find("computing-device/hostname#") end
    for r in c:child("reports"):children("report") do reports[#reports + 1] = r.attr.id .. "=" .. r:find("content/TestResult/target#") end
    assert.same({ "asset0=db1", "asset1=web1" }, assets)
    assert.same({ "xccdf1=db1", "xccdf2=web1" }, reports)
    local path = dir .. "/grid-arf.xml"
    assert(fs.write(path, text))
    local v = oscap("ds", "rds-validate", path)
    assert(v.ok, v.stdout .. v.stderr)
    local g = oscap("xccdf", "generate", "report", "--output", dir .. "/grid-arf.html", path)
    assert(g.ok, g.stderr)
    assert.matches("rule%-result%-fail", assert(fs.read(dir .. "/grid-arf.html")))
  end)

  it("refuses an unknown format and an empty assessment with the reason", function()
    local t, err = export.render("pdf", results(version(), "c"), {})
    assert.is_nil(t)
    assert.equal("unknown format 'pdf' (xccdf or arf)", err.text)
    t, err = export.render("xccdf", {}, {})
    assert.is_nil(t)
    assert.same({ "item-not-found", "no results to export" }, { err.condition, err.text })
  end)

  describe("through the repository's ROLIE provider", function()
    local repo, provider, ca, ids, other_id, posture_id

    lazy_setup(function()
      ca = certs.ca(dir, "ca", "sacmrun xccdf export test CA")
      local pair = certs.server(ca, dir .. "/server", { dns = { "localhost" }, ips = { "127.0.0.1" } })
      repo = assert(repository.open(dir .. "/grid.db"))
      ids = {}
      for _, r in ipairs(results(version(), "corr-a")) do
        assert(repo:store_result(payload.result(r)))
        ids[#ids + 1] = r.id
      end
      -- another assessment, which must not show up in corr-a's export
      local other = results(version(), "corr-b")[1]
      other.evidence = { "from the other assessment" }
      other_id = other.id
      assert(repo:store_result(payload.result(other)))
      posture_id = crypto.uuid()
      assert(repo:store_posture(payload.posture({ id = posture_id, kind = "os", endpoint = "web1@grid.example/agent",
        hostname = "web1", collected = T0, data = { attributes = { hostname = "web1" }, items = {} } })))
      provider = assert(rolie.serve({ repository = repo, policies_dir = dir .. "/policies",
        listen = { host = "127.0.0.1", port = 0, cert = pair.cert, key = pair.key },
        users = { alice = rolie.hash_password("alice-pw", { iterations = 1000 }) },
        access = { private = { read = { "user:alice" } } } }))
    end)
    lazy_teardown(function()
      if provider then provider:close() end
      if repo then repo:close() end
    end)

    local function get(path)
      local r = assert(proc.run({ "curl", "-sS", "--cacert", ca.cert, "--max-time", "20", "-u", "alice:alice-pw",
        "-o", dir .. "/body", "-w", "%{http_code} %{content_type}", provider.base_url .. path }, { timeout = 30 }))
      assert.equal(0, r.code, r.stderr)
      local status, ctype = r.stdout:match("^(%d+) (.*)$")
      return tonumber(status), ctype, fs.read(dir .. "/body") or ""
    end

    it("links every result entry to its assessment as XCCDF and as ARF", function()
      local status, _, body = get("/rolie/private/results/" .. ids[1])
      assert.equal(200, status)
      local related = {}
      for l in assert(xml.parse(body)):children("link") do
        if l.attr.rel == "related" then related[#related + 1] = { l.attr.href:match("[^/]+$"), l.attr.type, l.attr.title } end
      end
      assert.same({ { ids[1] .. ".xccdf", "application/xml", "the assessment as XCCDF 1.2" },
        { ids[1] .. ".arf", "application/xml", "the assessment as an ARF 1.1 report collection" } }, related)
    end)

    it("serves a result's assessment (its correlation id's results) as XCCDF and ARF that oscap accepts", function()
      local status, ctype, body = get("/rolie/private/results/" .. ids[3] .. ".xccdf")
      assert.equal(200, status, body)
      assert.equal("application/xml", ctype)
      local b = parse_doc(body)
      local n, targets = 0, {}
      for tr in b:children("TestResult") do
        targets[#targets + 1] = tr:find("target#")
        for _ in tr:children("rule-result") do n = n + 1 end
      end
      assert.same({ "db1", "web1" }, targets)
      assert.equal(4, n, "the four results of corr-a, not corr-b's")
      assert.is_nil(body:find("from the other assessment", 1, true))
      assert.equal("Randomised addresses stop exploits.", b:find("Group/Rule/rationale#"))
      assert(fs.write(dir .. "/rolie-xccdf.xml", body))
      local v = oscap("xccdf", "validate", dir .. "/rolie-xccdf.xml")
      assert(v.ok, v.stdout .. v.stderr)

      status, ctype, body = get("/rolie/private/results/" .. ids[1] .. ".arf")
      assert.equal(200, status, body)
      assert.equal("application/xml", ctype)
      assert(fs.write(dir .. "/rolie-arf.xml", body))
      v = oscap("ds", "rds-validate", dir .. "/rolie-arf.xml")
      assert(v.ok, v.stdout .. v.stderr)
      local info = oscap("info", dir .. "/rolie-arf.xml")
      assert.matches("Document type: Result Data Stream", info.stdout, 1, true)

      status, ctype, body = get("/rolie/private/results/" .. other_id .. ".xccdf")
      assert.equal(200, status)
      assert.equal("application/xml", ctype)
      n = 0
      for tr in parse_doc(body):children("TestResult") do for _ in tr:children("rule-result") do n = n + 1 end end
      assert.equal(1, n)
    end)

    it("has no XCCDF of posture, nor of an unknown id", function()
      assert.equal(404, (get("/rolie/private/posture/" .. posture_id .. ".xccdf")))
      assert.equal(404, (get("/rolie/private/results/" .. crypto.uuid() .. ".arf")))
    end)
  end)
end)
