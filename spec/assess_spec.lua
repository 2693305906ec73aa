-- sacm-assess (examples/assess.lua, sacm.cli.assess) against a real grid on Prosody: exit codes,
-- the rules of the kinds asked for only, and reports real consumers read: the JSON validated
-- against docs/report.schema.json, the JUnit XML parsed by junitparser.
local prosody = require "support.prosody"
local grid = require "support.grid"
local tmp = require "support.tmp"
local fs = require "sacm.fs"
local proc = require "sacm.proc"
local config = require "sacm.grid.config"
local collector = require "sacm.roles.collector"
local evaluator = require "sacm.roles.evaluator"
local repository = require "sacm.roles.repository"

local PYTHON = "/usr/bin/python3"

-- One policy per outcome: "good" passes on any host, "bad" fails with high severity, "users"
-- needs the users kind.
local POLICIES = {
  ["good.lua"] = [[return { id = "good", title = "passes", rules = {
    { id = "good-os", title = "the os posture has a hostname", severity = "low", rationale = "test", requires = { "os" },
      check = function(p) return p.os.attributes.hostname and "pass" or "fail", "hostname" end } } }]],
  ["bad.lua"] = [[return { id = "bad", title = "fails", rules = {
    { id = "bad-os", title = "always fails", severity = "high", rationale = "test", requires = { "os" },
      check = function() return "fail", "this rule always fails" end } } }]],
  ["users.lua"] = [[return { id = "users", title = "users", rules = {
    { id = "users-root", title = "root exists", severity = "medium", rationale = "test", requires = { "users" },
      check = function(p) return "pass", "ok" end } } }]],
}

describe("sacm-assess #e2e", function()
  local server, dir, g, conf

  lazy_setup(function()
    server = prosody.start({ users = { orchestrator = "pw", collector = "pw", evaluator = "pw", repository = "pw" },
      shipped = true })
    dir = tmp.dir("assess")
    g = grid.new(server, dir)
    assert(fs.mkdir(dir .. "/policies"))
    for name, text in pairs(POLICIES) do assert(fs.write(dir .. "/policies/" .. name, text)) end
    local function start(mod, role, extra) return g:start(mod, role, extra) end
    start(repository, "repository", { database = dir .. "/grid.db" })
    start(evaluator, "evaluator", { policies = dir .. "/policies" })
    start(collector, "collector", { kinds = { "os", "users" } })
    conf = dir .. "/grid.conf"
    assert(config.write(conf, { domain = server.domain, host = server.host, port = server.port, cafile = server.ca_file,
      orchestrators = { server:jid("orchestrator") },
      repository = { jid = server:jid("repository") .. "/spec" },
      orchestrator = { jid = server:jid("orchestrator") .. "/assess", password = "pw", heartbeat = false } }))
  end)

  lazy_teardown(function()
    if g then g:close_roles() end
    if server then server:stop() end
    if dir then tmp.remove(dir) end
  end)

  local function assess(...)
    local argv = { os.getenv("SACMRUN_BIN") or "./sacmrun", "examples/assess.lua", ... }
    return assert(proc.run(argv, { timeout = 120 }))
  end

  it("exits 1 when a rule at or above --fail-on fails, 0 when none does", function()
    local r = assess("--config", conf, "--kinds", "os")
    assert.equal(1, r.code, r.stderr)
    assert.matches("FAIL%s+high%s+bad%-os", r.stdout)
    assert.matches("totals: pass=1 fail=1 error=0 notapplicable=0 notchecked=0", r.stdout)
    -- only the rules of the kinds asked for: users-root is not judged
    assert.is_nil(r.stdout:find("users-root", 1, true))
    r = assess("--config", conf, "--kinds", "os", "--policies", "good")
    assert.equal(0, r.code, r.stderr)
    r = assess("--config", conf, "--kinds", "os", "--fail-on", "none")
    assert.equal(0, r.code, r.stderr)
  end)

  it("exits 2 with the reason on a usage or configuration error", function()
    local r = assess("--config", conf, "--format", "pdf")
    assert.equal(2, r.code)
    assert.matches("sacm%-assess: %-%-format must be text, json, junit, html, xccdf or arf, got 'pdf'", r.stderr)
    r = assess("--config", dir .. "/missing.conf")
    assert.equal(2, r.code)
    assert.matches("cannot use the grid config .*missing%.conf: ENOENT", r.stderr)
    r = assess("--config", conf, "--fail-on", "severe")
    assert.equal(2, r.code)
    assert.matches("%-%-fail%-on must be info, low, medium, high or none", r.stderr)
  end)

  it("exits 3 when the grid cannot be reached", function()
    local bad = dir .. "/unreachable.conf"
    local cfg = assert(config.load(conf))
    cfg.port = require("support.harness").pick_port({ [server.port] = true })
    cfg.connect_timeout = 3
    assert(config.write(bad, cfg))
    local r = assess("--config", bad, "--kinds", "os")
    assert.equal(3, r.code, r.stderr)
    assert.matches("cannot join the grid as orchestrator@", r.stderr)
  end)

  it("writes JSON that validates against docs/report.schema.json", function()
    local out = dir .. "/report.json"
    local r = assess("--config", conf, "--format", "json", "--output", out, "--fail-on", "none")
    assert.equal(0, r.code, r.stderr)
    local check = assert(proc.run({ PYTHON, "-c", [[
import json, sys, jsonschema
schema = json.load(open(sys.argv[1])); doc = json.load(open(sys.argv[2]))
jsonschema.validate(doc, schema)
rules = sorted(r["rule_id"] for e in doc["endpoints"] for r in e["results"])
print(doc["totals"]["total"], " ".join(rules))
]], "docs/report.schema.json", out }, { timeout = 30 }))
    assert.equal(0, check.code, check.stderr)
    assert.equal("3 bad-os good-os users-root", check.stdout:gsub("%s+$", ""))
  end)

  it("writes JUnit XML a JUnit consumer reads: a testcase per rule, the failure as a failure", function()
    local out = dir .. "/report.xml"
    local r = assess("--config", conf, "--kinds", "os", "--format", "junit", "--output", out)
    assert.equal(1, r.code, r.stderr)
    local check = assert(proc.run({ PYTHON, "-c", [[
import sys
from junitparser import JUnitXml, Failure
xml = JUnitXml.fromfile(sys.argv[1])
cases = [(c.classname, c.name, [type(x).__name__ for x in c.result]) for s in xml for c in s]
print(sorted(cases))
]], out }, { timeout = 30 }))
    assert.equal(0, check.code, check.stderr)
    assert.equal("[('bad', 'bad-os', ['Failure']), ('good', 'good-os', [])]", check.stdout:gsub("%s+$", ""))
  end)

  it("writes a self-contained HTML page with the failing rule and its evidence", function()
    local out = dir .. "/report.html"
    local r = assess("--config", conf, "--kinds", "os", "--format", "html", "--output", out)
    assert.equal(1, r.code, r.stderr)
    local html = assert(fs.read(out))
    assert.matches("^<!DOCTYPE html>", html)
    assert.matches("bad%-os", html)
    assert.matches("this rule always fails", html)
    assert.is_nil(html:find("<script", 1, true))
    assert.is_nil(html:find("https?://"), "the page must not load anything")
    local lint = assert(proc.run({ "xmllint", "--html", "--noout", out }, { timeout = 30 }))
    assert.equal(0, lint.code, lint.stderr)
  end)

  it("writes XCCDF 1.2 and ARF 1.1 that oscap validates, the rules described by --rule-texts", function()
    local out = dir .. "/assess-xccdf.xml"
    local r = assess("--config", conf, "--kinds", "os", "--format", "xccdf", "--rule-texts", dir .. "/policies",
      "--output", out, "--fail-on", "none")
    assert.equal(0, r.code, r.stderr)
    local v = assert(proc.run({ "oscap", "xccdf", "validate", out }, { timeout = 60 }))
    assert(v.ok, v.stdout .. v.stderr)
    local doc = assert(fs.read(out))
    assert.matches('idref="xccdf_org.sacmrun_rule_bad%-os"', doc)
    assert.matches("<rationale>test</rationale>", doc, 1, true)
    assert.matches("this rule always fails", doc, 1, true)
    out = dir .. "/assess-arf.xml"
    r = assess("--config", conf, "--kinds", "os", "--format", "arf", "--output", out)
    assert.equal(1, r.code, r.stderr)
    v = assert(proc.run({ "oscap", "ds", "rds-validate", out }, { timeout = 60 }))
    assert(v.ok, v.stdout .. v.stderr)
    -- the shipped policies are not the ones that judged: the Benchmark keeps the results' titles
    assert.matches("<title>always fails</title>", assert(fs.read(out)), 1, true)
    r = assess("--config", conf, "--format", "json", "--rule-texts", dir)
    assert.equal(2, r.code)
    assert.matches("--rule-texts goes with --format xccdf or arf", r.stderr, 1, true)
  end)
end)
