-- The OpenSCAP bridge (collection kind "oscap", lua/sacm/collect/oscap.lua) with the real
-- oscap and SSG's Debian content (openscap-scanner and ssg-debian, tools/debian-packages.txt):
-- the platform adaptation SSG 0.1.65's Debian 11 content needs on Debian 12, rule-results checked
-- against the files they judge, the ARF kept whole, and a grid on Prosody carrying it all: the
-- ARF uploaded to the repository with the posture, the rule-results published as grid results by
-- an evaluator running the generated policy.
local collect = require "sacm.collect"
local oscap = require "sacm.collect.oscap"
local policy = require "sacm.policy"
local proc = require "sacm.proc"
local fs = require "sacm.fs"
local crypto = require "sacm.crypto"
local payload = require "sacm.grid.payload"
local tmp = require "support.tmp"
local certs = require "support.certs"
local http = require "sacm.http"
local prosody = require "support.prosody"
local grid = require "support.grid"
local collector = require "sacm.roles.collector"
local evaluator = require "sacm.roles.evaluator"
local repository = require "sacm.roles.repository"
local orchestrator = require "sacm.roles.orchestrator"

local DS = oscap.SSG_DIR .. "/ssg-debian11-ds.xml"
local P = oscap.RULE_PREFIX
-- rules a container can judge (SSG's "machine" platform leaves sysctl and kernel rules
-- notapplicable in one), plus one that fails on a default Debian (PASS_MAX_DAYS 99999)
local RULES = { P .. "file_permissions_etc_passwd", P .. "accounts_no_uid_except_zero",
  P .. "accounts_maximum_age_login_defs" }

local function by_rule(items)
  local out = {}
  for _, it in ipairs(items) do out[it.rule] = it end
  return out
end

-- What the three rules mean, read from the files here without OpenSCAP.
local function expected_here()
  local st = assert(fs.stat("/etc/passwd"))
  local uid0 = 0
  for line in assert(fs.read("/etc/passwd")):gmatch("[^\n]+") do
    if line:match("^[^:]*:[^:]*:0:") then uid0 = uid0 + 1 end
  end
  local max_days
  for line in assert(fs.read("/etc/login.defs")):gmatch("[^\n]+") do
    local v = line:match("^%s*PASS_MAX_DAYS%s+(%d+)")
    if v then max_days = tonumber(v) end
  end
  return {
    file_permissions_etc_passwd = (st.mode & 0x1ff) & ~0x1a4 == 0 and "pass" or "fail", -- at most 0644
    accounts_no_uid_except_zero = uid0 == 1 and "pass" or "fail",
    -- the standard profile's var_accounts_maximum_age_login_defs is 60
    accounts_maximum_age_login_defs = max_days and max_days <= 60 and "pass" or "fail",
  }
end

describe("collection kind oscap #e2e", function()
  local data

  lazy_setup(function()
    assert(proc.run({ "sh", "-c", "command -v oscap" }, { timeout = 5 }).ok,
      "oscap is not installed (openscap-scanner, in tools/debian-packages.txt: make deps)")
    assert(fs.stat(DS), DS .. " is missing (ssg-debian, in tools/debian-packages.txt: make deps)")
  end)

  it("applies only with a data stream that is there", function()
    local ok, why = oscap.applicable({})
    assert.is_false(ok)
    assert.equal("no data stream configured (the collector's options.oscap.datastream)", why)
    ok, why = oscap.applicable({ datastream = "/nonexistent/ds.xml" })
    assert.is_false(ok)
    assert.equal("the data stream /nonexistent/ds.xml is not there", why)
    ok, why = oscap.applicable({ datastream = DS, oscap = "/nonexistent/oscap" })
    assert.is_false(ok)
    assert.matches("oscap cannot be run (/nonexistent/oscap): apt-get install openscap-scanner", why, 1, true)
    assert.is_true(oscap.applicable({ datastream = DS }))
  end)

  it("adapts exactly SSG's Debian 11 version check, and refuses content without it", function()
    local ds = assert(fs.read(DS))
    local derived, what = assert(oscap.adapt(ds, "12"))
    assert.matches("made to match Debian 12 (^12.[0-9]+$), 2 place(s)", what, 1, true)
    assert.equal(#ds, #derived)
    -- the two copies (the checks' OVAL and the CPE OVAL) of that one object, nothing else
    local diffs = 0
    for i = 1, #ds, 4096 do if ds:sub(i, i + 4095) ~= derived:sub(i, i + 4095) then diffs = diffs + 1 end end
    assert.is_true(diffs >= 1 and diffs <= 2)
    assert.equal(select(2, ds:gsub("%^11%.%[0%-9%]%+%$", "")) - 2, select(2, derived:gsub("%^11%.%[0%-9%]%+%$", "")))
    local none, why = oscap.adapt("<ds/>", "12")
    assert.is_nil(none)
    assert.equal("no Debian 11 platform check (id=\"oval:ssg-obj_debian_11:obj:1\" with pattern ^11.[0-9]+$) in the data stream", why)
    assert.equal("12", oscap.debian_major('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n', nil))
    assert.equal("11", oscap.debian_major(nil, "11.7\n"))
  end)

  it("runs oscap xccdf eval on this host through the adapted platform; each rule-result as OpenSCAP said", function()
    local err
    data, err = collect.run("oscap", { datastream = DS, rules = RULES, timeout = 300 })
    assert(data, tostring(err))
    local a = data.attributes
    assert.equal(assert(fs.hash(DS)), a.datastream_sha256)
    assert.equal("xccdf_org.ssgproject.content_profile_standard", a.profile)
    assert.equal("xccdf_org.ssgproject.content_benchmark_DEBIAN-11", a.benchmark)
    assert.matches("made to match Debian 12", a.platform_adaptation, 1, true)
    assert.matches("^%d+%.%d+%.%d+$", a.oscap_version)
    local got = by_rule(data.items)
    for rule, want in pairs(expected_here()) do
      assert.is_table(got[rule], rule .. " missing")
      assert.equal(want, got[rule].result, rule)
      assert.equal(want, got[rule].oscap_result, rule)
      assert.equal("oval:ssg-" .. rule .. ":def:1", got[rule].check)
    end
    assert.equal(3, #data.items)
    assert.equal("Verify Permissions on passwd File", got.file_permissions_etc_passwd.title)
    -- the ARF, whole: what oscap wrote, valid as a result data stream
    assert.equal(#a.arf, a.arf_bytes)
    assert.equal(crypto.hex(crypto.sha256(a.arf)), a.arf_sha256)
    local dir = tmp.dir("oscap-arf")
    finally(function() tmp.remove(dir) end)
    assert(fs.write(dir .. "/arf.xml", a.arf))
    local v = assert(proc.run({ "oscap", "ds", "rds-validate", dir .. "/arf.xml" }, { timeout = 120 }))
    assert(v.ok, v.stdout .. v.stderr)
    print(("\n  oscap %s judged %d rules, ARF of %d bytes"):format(a.oscap_version, #data.items, a.arf_bytes))
  end)

  it("without the adaptation, Debian 11 content finds every rule notapplicable on Debian 12", function()
    local major = oscap.debian_major(fs.read("/etc/os-release"), fs.read("/etc/debian_version"))
    if major == "11" then
      error("this host is Debian 11: the adaptation is not needed here, and this case cannot show why it is")
    end
    local d = assert(collect.run("oscap", { datastream = DS, rules = RULES, adapt_platform = false, timeout = 300 }))
    assert.equal("none", d.attributes.platform_adaptation)
    for _, it in ipairs(d.items) do assert.equal("notapplicable", it.result, it.rule) end
    assert.equal(#RULES, d.attributes.count_notapplicable)
  end)

  it("fetches the data stream over HTTPS, verified and pinned by its SHA-256", function()
    local dir = tmp.dir("oscap-fetch")
    finally(function() tmp.remove(dir) end)
    local ca = certs.ca(dir, "ca", "sacmrun oscap fetch CA")
    local pair = certs.server(ca, dir .. "/server", { dns = { "localhost" }, ips = { "127.0.0.1" } })
    local ds = assert(fs.read(DS))
    local srv = assert(http.listen({ host = "127.0.0.1", port = 0, cert = pair.cert, key = pair.key }, function(req)
      if req.raw_path == "/ds.xml" then return 200, { ["Content-Type"] = "application/xml" }, ds end
      return 404, {}, "no\n"
    end))
    finally(function() srv:close() end)
    local url = ("https://127.0.0.1:%d/ds.xml"):format(srv.port)
    local sha = crypto.hex(crypto.sha256(ds))
    local d, err = collect.run("oscap", { datastream_url = url, datastream_sha256 = sha, cafile = ca.cert,
      rules = { RULES[1] }, timeout = 300 })
    assert(d, tostring(err))
    assert.equal(url, d.attributes.datastream)
    assert.equal(sha, d.attributes.datastream_sha256)
    assert.equal(expected_here().file_permissions_etc_passwd, d.items[1].result)
    -- a different pin: refused before oscap runs
    d, err = collect.run("oscap", { datastream_url = url, datastream_sha256 = string.rep("0", 64), cafile = ca.cert,
      timeout = 60 })
    assert.is_nil(d)
    assert.equal(("the data stream %s has SHA-256 %s, not the pinned %s: not evaluated"):format(url, sha,
      string.rep("0", 64)), err.text)
    d, err = collect.run("oscap", { datastream_url = url, timeout = 60 })
    assert.is_nil(d)
    assert.matches("needs datastream_sha256", err.text, 1, true)
    -- no verification shortcut: the system's trust store does not know the test CA
    d, err = collect.run("oscap", { datastream_url = url, datastream_sha256 = sha, timeout = 60 })
    assert.is_nil(d)
    assert.equal("tls-verification-failed", err.condition)
    assert.matches("cannot fetch the data stream " .. url, err.text, 1, true)
  end)

  it("fails with oscap's reason on a profile the data stream does not have", function()
    local d, err = collect.run("oscap", { datastream = DS, profile = "xccdf_org.example_profile_nope", rules = RULES, timeout = 300 })
    assert.is_nil(d)
    assert.equal("command-failed", err.condition)
    assert.matches("oscap xccdf eval --profile xccdf_org.example_profile_nope " .. DS .. " exited 1: ", err.text, 1, true)
  end)

  it("generates a policy that turns the rule-results into grid results", function()
    assert(data, "needs the collection of the case above")
    local dir = tmp.dir("oscap-policy")
    finally(function() tmp.remove(dir) end)
    assert(fs.write(dir .. "/openscap.lua", oscap.policy_source(data)))
    local engine = policy.engine({ dir = dir })
    local report = assert(engine:load_all())
    assert.same({}, report.rejected)
    local results = engine:evaluate({ oscap = data })
    local got = by_rule(data.items)
    assert.equal(#data.items, #results)
    for _, r in ipairs(results) do
      local short = r.rule_id:match("^ssg%-standard%.(.+)$")
      assert.equal(got[short].result, r.result, r.rule_id)
      assert.matches("^oscap: " .. got[short].oscap_result, r.evidence[1])
      assert.matches("platform adapted: SSG's Debian 11 platform check", r.evidence[#r.evidence], 1, true)
      -- and they are valid grid result payloads
      local el = payload.result({ id = crypto.uuid(), endpoint = "e@grid.example/c", rule_id = r.rule_id,
        policy_id = r.policy_id, policy_version = r.policy_version, result = r.result, severity = r.severity,
        evidence = r.evidence })
      assert(payload.parse_result(el))
    end
    local refs = engine:rules()[1].references
    assert.equal("ssg", refs[1].system)
  end)

  describe("on a grid over Prosody #e2e", function()
    local server, dir, g

    lazy_setup(function()
      server = prosody.start({ users = { orchestrator = "pw", collector = "pw", evaluator = "pw", repository = "pw" },
        shipped = true })
      dir = tmp.dir("oscap-grid")
      g = grid.new(server, dir)
    end)
    lazy_teardown(function()
      if g then g:close_roles() end
      if server then server:stop() end
      if dir then tmp.remove(dir) end
    end)

    it("uploads the ARF with the posture and publishes OpenSCAP's verdicts as grid results", function()
      assert(data, "needs the collection of the cases above (for the policy)")
      assert(fs.mkdir(dir .. "/policies"))
      assert(fs.write(dir .. "/policies/openscap.lua", oscap.policy_source(data)))
      local repo = g:start(repository, "repository", { database = dir .. "/grid.db" })
      g:start(evaluator, "evaluator", { policies = dir .. "/policies" })
      g:start(collector, "collector", { kinds = { "oscap" },
        options = { oscap = { datastream = DS, rules = RULES } } })
      local orch = g:start(orchestrator, "orchestrator")
      assert(orch:discover({ collectors = 1, evaluators = 1, repositories = 1, timeout = 20 }))
      local a = assert(orch:assess({ kinds = { "oscap" }, kind_timeout = 300, timeout = 330 }))
      assert.same({}, a.incomplete)
      local want = expected_here()
      assert.equal(3, #a.results)
      for _, r in ipairs(a.results) do
        local short = r.rule_id:match("^ssg%-standard%.(.+)$")
        assert.equal(want[short], r.result, r.rule_id)
      end
      -- the posture the repository stored holds the ARF oscap wrote, whole
      local stored = assert(repo.store:get(a.posture[1].id))
      local p = assert(payload.parse_posture(stored))
      assert.equal("oscap", p.kind)
      local arf = p.data.attributes.arf
      assert.equal(p.data.attributes.arf_bytes, #arf)
      assert.equal(p.data.attributes.arf_sha256, crypto.hex(crypto.sha256(arf)))
      assert.matches("<arf:asset%-report%-collection", arf)
    end)
  end)
end)
