-- sacm.policy and sacm.policy.sandbox: the starter policies against posture fixtures, the sandbox
-- against escape attempts and runaway checks, and hot reload through real files.
local policy = require "sacm.policy"
local sandbox = require "sacm.policy.sandbox"
local helpers = require "sacm.policy.helpers"
local fs = require "sacm.fs"
local sync = require "sacm.sync"
local mem = require "sacm._mem"
local build = require "sacm._build"
local tmp = require "support.tmp"
local task = require "sacm.task"
local loop = require "sacm._loop"

local STARTER_DIR = build.share_dir .. "/policies"

local function by_rule(results)
  local out = {}
  for _, r in ipairs(results) do out[r.rule_id] = r end
  return out
end

-- A policy file with one rule per check body (a string of Lua), ids r1, r2, ...
local function policy_text(id, bodies, top)
  local rules = {}
  for i, body in ipairs(bodies) do
    local rule_id = id .. "-r" .. i
    if type(body) == "table" then rule_id, body = body.id, body.body end
    rules[i] = ([[
    { id = %q, title = "rule %d", severity = "low", rationale = "test", requires = { "os" },
      check = function(posture, ctx) %s end },]]):format(rule_id, i, body)
  end
  return ([[%s
return { id = %q, title = "test policy", rules = {
%s
} }
]]):format(top or "", id, table.concat(rules, "\n"))
end

local OS = { os = { attributes = { hostname = "h1", os_id = "debian" }, items = {} } }

describe("sacm.policy", function()
  local dir

  before_each(function() dir = tmp.dir("policy") end)
  after_each(function()
    if dir then tmp.remove(dir) end
    dir = nil
  end)

  local function write(name, text) assert(fs.write(dir .. "/" .. name, text)) end

  local function engine_with(files, opts)
    for name, text in pairs(files) do write(name, text) end
    opts = opts or {}
    opts.dir = dir
    local e = policy.engine(opts)
    local report = assert(e:load_all())
    return e, report
  end

  ------------------------------------------------------------------------ starter policies
  describe("starter policies", function()
    local engine

    lazy_setup(function()
      engine = policy.engine({ dir = STARTER_DIR })
      local report = assert(engine:load_all())
      assert.same({}, report.rejected)
    end)

    local function eval(posture, rule_id)
      local r = by_rule(engine:evaluate(posture))[rule_id]
      assert.is_not_nil(r, "no result for " .. rule_id)
      return r
    end

    it("has at least 12 rules, each with title, severity and rationale", function()
      local rules = engine:rules()
      assert.is_true(#rules >= 12, "only " .. #rules .. " rules")
      for _, r in ipairs(rules) do
        assert.is_true(#r.title > 0 and #r.rationale > 80, r.rule_id)
        assert.is_true(#r.requires > 0, r.rule_id)
      end
      for _, p in ipairs(engine:policies()) do
        assert.matches("^%x+$", p.version)
        assert.equal(64, #p.version)
        assert.equal(p.version, fs.hash(STARTER_DIR .. "/" .. p.file))
      end
    end)

    local function sshd(attrs)
      attrs.source = attrs.source or "sshd -T"
      return { sshd = { attributes = attrs, items = {} } }
    end

    for key, rule_id in pairs({
      permitrootlogin = "ssh-permit-root-login",
      passwordauthentication = "ssh-password-authentication",
      permitemptypasswords = "ssh-permit-empty-passwords",
      x11forwarding = "ssh-x11-forwarding",
    }) do
      it(rule_id .. ": pass with no, fail with yes, notapplicable without sshd", function()
        assert.equal("pass", eval(sshd({ [key] = "no" }), rule_id).result)
        local r = eval(sshd({ [key] = "yes" }), rule_id)
        assert.equal("fail", r.result)
        assert.matches(key .. " is yes", r.evidence[1], 1, true)
        assert.equal("notapplicable", eval({ sshd = { attributes = {}, items = {} } }, rule_id).result)
        assert.equal("notapplicable",
          eval({ sshd = { applicable = false, reason = "no sshd binary" } }, rule_id).result)
        assert.equal("notchecked", eval({}, rule_id).result)
      end)
    end

    it("ssh rules fall back to OpenSSH's defaults for absent keys", function()
      local results = by_rule(engine:evaluate(sshd({ usepam = "yes" })))
      assert.equal("fail", results["ssh-permit-root-login"].result)       -- prohibit-password
      assert.equal("fail", results["ssh-password-authentication"].result) -- yes
      assert.equal("pass", results["ssh-permit-empty-passwords"].result)  -- no
      assert.matches("OpenSSH default", results["ssh-x11-forwarding"].evidence[1], 1, true)
    end)

    -- run-time attributes and, unless `persistent` says otherwise, the same values persistently
    local function sysctl(attrs, persistent)
      local items = {}
      for k, v in pairs(persistent or attrs) do
        if k:find(".", 1, true) then
          items[#items + 1] = { name = k, value = v, file = "/etc/sysctl.d/60-test.conf", line = #items + 1 }
        end
      end
      table.sort(items, function(a, b) return a.name < b.name end)
      return { sysctl = { attributes = attrs, items = items } }
    end
    for rule_id, case in pairs({
      ["kernel-ip-forward"] = { keys = { "net.ipv4.ip_forward" }, good = "0", bad = "1" },
      ["kernel-accept-redirects"] = { keys = { "net.ipv4.conf.all.accept_redirects",
        "net.ipv4.conf.default.accept_redirects" }, good = "0", bad = "1" },
      ["kernel-send-redirects"] = { keys = { "net.ipv4.conf.all.send_redirects",
        "net.ipv4.conf.default.send_redirects" }, good = "0", bad = "1" },
      ["kernel-randomize-va-space"] = { keys = { "kernel.randomize_va_space" }, good = "2", bad = "1" },
      ["kernel-protected-links"] = { keys = { "fs.protected_symlinks", "fs.protected_hardlinks" },
        good = "1", bad = "0" },
      ["kernel-dmesg-restrict"] = { keys = { "kernel.dmesg_restrict" }, good = "1", bad = "0" },
    }) do
      it(rule_id .. ": pass on both sides, fail on a bad run-time or persistent value, notapplicable without the keys", function()
        local attrs = { ["vm.swappiness"] = "60" }
        for _, k in ipairs(case.keys) do attrs[k] = case.good end
        assert.equal("pass", eval(sysctl(attrs), rule_id).result)
        local last = case.keys[#case.keys]
        -- right on disk, wrong now
        local disk = {}
        for k, v in pairs(attrs) do disk[k] = v end
        attrs[last] = case.bad
        local r = eval(sysctl(attrs, disk), rule_id)
        assert.equal("fail", r.result)
        assert.matches(last .. " = " .. case.bad .. " at run time", r.evidence[1], 1, true)
        -- right now, wrong on disk: the reboot would undo it
        attrs[last], disk[last] = case.good, case.bad
        r = eval(sysctl(attrs, disk), rule_id)
        assert.equal("fail", r.result)
        assert.matches(last .. " = " .. case.bad .. " persistently in /etc/sysctl.d/60-test.conf", r.evidence[1], 1, true)
        -- right now, set nowhere
        disk[last] = nil
        r = eval(sysctl(attrs, disk), rule_id)
        assert.equal("fail", r.result)
        assert.matches(last .. " is not set persistently", r.evidence[1], 1, true)
        assert.equal("notapplicable", eval(sysctl({ ["vm.swappiness"] = "60" }), rule_id).result)
      end)
    end

    it("packages-legacy-servers: fails on an installed telnetd, passes otherwise", function()
      local function packages(items)
        return { packages = { attributes = { manager = "dpkg", count = #items }, items = items } }
      end
      local clean = {
        { name = "openssh-server", version = "1:9.2p1-2", arch = "amd64", status = "install ok installed", manager = "dpkg" },
        { name = "telnet", version = "0.17-44", arch = "amd64", status = "install ok installed", manager = "dpkg" },
        { name = "tftpd-hpa", version = "5.2", arch = "amd64", status = "deinstall ok config-files", manager = "dpkg" },
      }
      assert.equal("pass", eval(packages(clean), "packages-legacy-servers").result)
      clean[#clean + 1] = { name = "telnetd", version = "0.17-44", arch = "amd64", status = "install ok installed", manager = "dpkg" }
      clean[#clean + 1] = { name = "tftp-server", version = "5.2-38", arch = "x86_64", status = "installed", manager = "rpm" }
      local r = eval(packages(clean), "packages-legacy-servers")
      assert.equal("fail", r.result)
      assert.equal(2, #r.evidence)
      assert.matches("^telnetd 0.17%-44", r.evidence[1])
      assert.matches("^tftp%-server", r.evidence[2])
    end)

    local function users(items) return { users = { attributes = {}, items = items } } end

    it("accounts-single-uid0: passes with root alone, fails with a second UID 0", function()
      local list = { { name = "root", uid = 0, gid = 0, password = "set" },
        { name = "alice", uid = 1000, gid = 1000, password = "set" } }
      assert.equal("pass", eval(users(list), "accounts-single-uid0").result)
      list[3] = { name = "toor", uid = 0, gid = 0, password = "locked" }
      local r = eval(users(list), "accounts-single-uid0")
      assert.equal("fail", r.result)
      assert.same({ "toor has UID 0" }, r.evidence)
    end)

    it("accounts-no-empty-password: fails on empty, notchecked when shadow was unreadable", function()
      local list = { { name = "root", uid = 0, password = "locked" }, { name = "bob", uid = 1001, password = "set" } }
      assert.equal("pass", eval(users(list), "accounts-no-empty-password").result)
      list[2].password = "empty"
      local r = eval(users(list), "accounts-no-empty-password")
      assert.equal("fail", r.result)
      assert.matches("bob", r.evidence[1], 1, true)
      list[1].password, list[2].password = "unknown", "unknown"
      assert.equal("notchecked", eval(users(list), "accounts-no-empty-password").result)
    end)

    it("files-no-world-writable: sticky world-writable directories and links pass", function()
      local items = {
        { path = "/etc/passwd", exists = true, type = "file", mode = "0644", world_writable = false, owner = "root" },
        { path = "/tmp", exists = true, type = "directory", mode = "1777", world_writable = true, owner = "root" },
        { path = "/etc/alternatives/x", exists = true, type = "link", mode = "0777", world_writable = true },
        { path = "/etc/nope", exists = false },
      }
      local posture = { files = { attributes = {}, items = items } }
      assert.equal("pass", eval(posture, "files-no-world-writable").result)
      items[#items + 1] = { path = "/etc/cron.d/job", exists = true, type = "file", mode = "0666", world_writable = true, owner = "root" }
      items[#items + 1] = { path = "/srv/drop", exists = true, type = "directory", mode = "0777", world_writable = true, owner = "www" }
      local r = eval(posture, "files-no-world-writable")
      assert.equal("fail", r.result)
      assert.equal(2, #r.evidence)
      assert.matches("^/etc/cron.d/job %(file, mode 0666", r.evidence[1])
      assert.equal("notapplicable",
        eval({ files = { attributes = {}, items = { { path = "/x", exists = false } } } }, "files-no-world-writable").result)
    end)

    it("network-listening-allowlist: loopback and allowed sockets pass, others fail", function()
      local items = {
        { proto = "tcp", family = "inet", address = "0.0.0.0", port = 22, process = "sshd", pid = 500, uid = 0 },
        { proto = "tcp", family = "inet6", address = "::", port = 22, process = "sshd", pid = 500, uid = 0 },
        { proto = "tcp", family = "inet", address = "127.0.0.1", port = 5432, process = "postgres", pid = 600 },
        { proto = "udp", family = "inet6", address = "::1", port = 323, process = "chronyd", pid = 700 },
      }
      local posture = { sockets = { attributes = {}, items = items } }
      assert.equal("pass", eval(posture, "network-listening-allowlist").result)
      items[#items + 1] = { proto = "tcp", family = "inet6", address = "::", port = 23, process = "inetd", pid = 42 }
      items[#items + 1] = { proto = "tcp", family = "inet", address = "0.0.0.0", port = 22, process = "python3", pid = 43 }
      local r = eval(posture, "network-listening-allowlist")
      assert.equal("fail", r.result)
      assert.same({ "tcp [::]:23 is not on the allow-list (process inetd, pid 42)",
        "tcp 0.0.0.0:22 is not on the allow-list (process python3, pid 43)" }, r.evidence)
    end)

    it("results carry policy id, version, severity and a duration", function()
      local r = eval(sshd({ permitrootlogin = "no" }), "ssh-permit-root-login")
      assert.equal("ssh-hardening", r.policy_id)
      assert.equal(fs.hash(STARTER_DIR .. "/ssh.lua"), r.policy_version)
      assert.equal("high", r.severity)
      assert.equal("number", type(r.duration))
      local only = engine:evaluate(sshd({}), nil, { policies = { "accounts" } })
      local in_accounts = 0
      for _, rule in ipairs(engine:rules()) do
        if rule.policy_id == "accounts" then in_accounts = in_accounts + 1 end
      end
      assert.is_true(in_accounts >= 2)
      assert.equal(in_accounts, #only)
      for _, x in ipairs(only) do assert.equal("accounts", x.policy_id) end
    end)
  end)

  ------------------------------------------------------------------------ results
  describe("results", function()
    it("notchecked for a missing kind, error for a failed collection, notapplicable as told", function()
      local e = engine_with({ ["p.lua"] = policy_text("p", { 'return "pass", ctx.endpoint.hostname' }) })
      local r = e:evaluate({}, { hostname = "web1" })[1]
      assert.equal("notchecked", r.result)
      assert.same({ "posture os was not collected" }, r.evidence)
      r = e:evaluate({ os = sacm.error.new("timeout", "collection took too long") })[1]
      assert.equal("error", r.result)
      assert.matches("timeout: collection took too long", r.evidence[1], 1, true)
      r = e:evaluate({ os = { error = "uname failed" } })[1]
      assert.equal("error", r.result)
      r = e:evaluate({ os = { applicable = false, reason = "not Linux" } })[1]
      assert.equal("notapplicable", r.result)
      assert.same({ "os: not Linux" }, r.evidence)
      r = e:evaluate(OS, { hostname = "web1" })[1]
      assert.equal("pass", r.result)
      assert.same({ "web1" }, r.evidence)
    end)

    it("validates result values and evidence, and bounds evidence", function()
      local e = engine_with({ ["p.lua"] = policy_text("p", {
        'return "maybe"',
        'return nil',
        'return "pass", { {} }',
        'return "fail", ("x"):rep(5000)',
        'local t = {} for i = 1, 200 do t[i] = "line " .. i end return "fail", t',
        'return "pass", setmetatable({}, { __index = function() while true do end end, __len = function() return 3 end })',
        'return "informational"',
      }) })
      local results = e:evaluate(OS)
      assert.equal("error", results[1].result)
      assert.matches('check returned "maybe" as its result', results[1].evidence[1], 1, true)
      assert.equal("error", results[2].result)
      assert.equal("error", results[3].result)
      assert.matches("evidence item 1 must be a string", results[3].evidence[1], 1, true)
      assert.equal("fail", results[4].result)
      assert.is_true(#results[4].evidence[1] < 1100)
      assert.equal(policy.MAX_EVIDENCE_ITEMS + 1, #results[5].evidence)
      assert.equal("... and 150 more", results[5].evidence[#results[5].evidence])
      -- metamethods of returned tables are never run outside the budget: raw reads see nothing
      assert.equal("pass", results[6].result)
      assert.same({}, results[6].evidence)
      assert.equal("error", results[7].result)
    end)

    it("evaluates a prepared posture as it would the original, as often as asked", function()
      local e = engine_with({ ["p.lua"] = policy_text("p", { 'return "pass", posture.os.attributes.os_id' }) })
      local prepared = policy.prepare({ os = OS.os, users = sacm.error.new("EACCES", "no shadow") })
      assert.equal(prepared, policy.prepare(prepared))
      assert.has_error(function() prepared.os = nil end)
      assert.equal("no shadow", prepared.users.error:match("no shadow"))
      for _ = 1, 2 do
        local r = e:evaluate(prepared)[1]
        assert.same({ "pass", "debian" }, { r.result, r.evidence[1] })
      end
    end)

    it("a rule sees only the kinds it requires", function()
      local e = engine_with({ ["p.lua"] = policy_text("p", {
        'return "pass", { tostring(posture.os ~= nil), tostring(posture.users == nil) }' }) })
      local r = e:evaluate({ os = OS.os, users = { attributes = {}, items = {} } })[1]
      assert.same({ "true", "true" }, r.evidence)
    end)
  end)

  ------------------------------------------------------------------------ validation
  describe("validation", function()
    it("validates rule references and hands them out with the rules", function()
      local function with_refs(id, refs)
        return ([[return { id = %q, title = "t", rules = { { id = %q, title = "t", severity = "low",
          rationale = "r", references = %s, check = function() return "pass" end } } }]]):format(id, id .. "-1", refs)
      end
      local e, report = engine_with({
        ["good.lua"] = with_refs("good", [[{ { system = "ssg", id = "xccdf_org.ssgproject.content_rule_sysctl_kernel_randomize_va_space" },
          { system = "cis-debian12", id = "1.5.1", title = "Ensure address space layout randomization is enabled" },
          { system = "stig", id = "V-238369", href = "https://public.cyber.mil/stigs/" } }]]),
        ["empty.lua"] = with_refs("empty", "{}"),
        ["notable.lua"] = with_refs("notable", [["ssg"]]),
        ["noid.lua"] = with_refs("noid", [[{ { system = "cis-debian12" } }]]),
        ["badsystem.lua"] = with_refs("badsystem", [[{ { system = "CIS Debian", id = "1.5.1" } }]]),
        ["badssg.lua"] = with_refs("badssg", [[{ { system = "ssg", id = "sysctl_kernel_randomize_va_space" } }]]),
        ["badtitle.lua"] = with_refs("badtitle", [[{ { system = "cis", id = "1", title = 42 } }]]),
        ["many.lua"] = with_refs("many", "{ " .. ("{ system = 'x', id = '1' }, "):rep(policy.MAX_REFERENCES + 1) .. "}"),
      })
      local why = {}
      for _, ev in ipairs(report.rejected) do why[ev.file] = ev.error end
      assert.same({ "good" }, (function()
        local ids = {}
        for i, ev in ipairs(report.loaded) do ids[i] = ev.policy_id end
        return ids
      end)())
      assert.matches("references is empty", why["empty.lua"], 1, true)
      assert.matches("references must be a table", why["notable.lua"], 1, true)
      assert.matches("references[1]: id is missing", why["noid.lua"], 1, true)
      assert.matches('system "CIS Debian" must be lower-case', why["badsystem.lua"], 1, true)
      assert.matches("is not an SSG rule id", why["badssg.lua"], 1, true)
      assert.matches("title must be a string", why["badtitle.lua"], 1, true)
      assert.matches("more than " .. policy.MAX_REFERENCES .. " references", why["many.lua"], 1, true)
      local r = e:rules()[1]
      assert.same({
        { system = "ssg", id = "xccdf_org.ssgproject.content_rule_sysctl_kernel_randomize_va_space" },
        { system = "cis-debian12", id = "1.5.1", title = "Ensure address space layout randomization is enabled" },
        { system = "stig", id = "V-238369", href = "https://public.cyber.mil/stigs/" },
      }, r.references)
      -- copies: changing them changes nothing
      r.references[1].id = "x"
      assert.equal("xccdf_org.ssgproject.content_rule_sysctl_kernel_randomize_va_space", e:rules()[1].references[1].id)
      local summary = assert(e:check(assert(fs.read(dir .. "/good.lua")), "good.lua"))
      assert.equal("1.5.1", summary.rules[1].references[2].id)
      -- a rule without references has an empty list
      local e2 = engine_with({ ["plain.lua"] = policy_text("plain", { 'return "pass"' }) })
      for _, rule in ipairs(e2:rules()) do
        if rule.rule_id == "plain-r1" then assert.same({}, rule.references) end
      end
    end)

    it("rejects files that do not compile or validate and loads the rest", function()
      local _, report = engine_with({
        ["good.lua"] = policy_text("good", { 'return "pass"' }),
        ["syntax.lua"] = "return { id = ",
        ["nothing.lua"] = "return 42",
        ["severity.lua"] = [[return { id = "s", title = "t", rules = { { id = "s1", title = "t",
          severity = "critical", rationale = "r", check = function() end } } }]],
        ["nocheck.lua"] = [[return { id = "n", title = "t", rules = { { id = "n1", title = "t",
          severity = "low", rationale = "r", check = "pass" } } }]],
        ["norationale.lua"] = [[return { id = "q", title = "t", rules = { { id = "q1", title = "t",
          severity = "low", check = function() end } } }]],
        ["dup.lua"] = [[local r = { id = "d1", title = "t", severity = "low", rationale = "r", check = function() end }
          return { id = "d", title = "t", rules = { r, r } }]],
        ["clash.lua"] = policy_text("clash", { 'return "pass"' }):gsub('"clash%-r1"', '"good-r1"'),
        ["bytecode.lua"] = string.dump(function() return {} end),
        ["notes.txt"] = "not a policy",
      })
      assert.equal(1, #report.loaded)
      assert.equal("good", report.loaded[1].policy_id)
      local why = {}
      for _, ev in ipairs(report.rejected) do why[ev.file] = ev.error end
      assert.matches("syntax.lua:1:", why["syntax.lua"], 1, true)
      assert.matches("must return a policy table", why["nothing.lua"], 1, true)
      assert.matches('severity "critical" is not one of', why["severity.lua"], 1, true)
      assert.matches("check must be a function", why["nocheck.lua"], 1, true)
      assert.matches("rationale is missing", why["norationale.lua"], 1, true)
      assert.matches("rule id d1 is used twice", why["dup.lua"], 1, true)
      assert.matches("rule id good-r1 is already used by good.lua", why["clash.lua"], 1, true)
      assert.matches("attempt to load a binary chunk", why["bytecode.lua"], 1, true)
      assert.is_nil(why["notes.txt"])
    end)
  end)

  ------------------------------------------------------------------------ sandbox
  describe("sandbox", function()
    it("offers no way out: io, os, require, load, debug, string.dump and friends are absent", function()
      local e = engine_with({ ["p.lua"] = policy_text("p", { [[
        local found = {}
        for _, name in ipairs({ "io", "os", "require", "load", "loadfile", "dofile", "debug",
            "collectgarbage", "rawset", "rawget", "package", "coroutine", "loadstring", "sacm",
            "module", "setfenv", "getfenv", "print" }) do
          if _ENV[name] ~= nil or _G[name] ~= nil then found[#found + 1] = name end
        end
        if string.dump ~= nil then found[#found + 1] = "string.dump" end
        if ("").dump ~= nil then found[#found + 1] = '("").dump' end
        if getmetatable("") ~= nil then found[#found + 1] = 'getmetatable("")' end
        if math.randomseed ~= nil then found[#found + 1] = "math.randomseed" end
        return "pass", found ]] }) })
      local r = e:evaluate(OS)[1]
      assert.equal("pass", r.result)
      assert.same({}, r.evidence)
    end)

    it("cannot change string methods for anyone else, nor reach them through the metatable", function()
      local e = engine_with({
        ["a.lua"] = policy_text("a", {
          [[string.upper = function() return "owned" end
            local ok = pcall(function() getmetatable("").__index.upper = nil end)
            local ok2 = pcall(function() ("").upper = nil end)
            return "pass", { tostring(ok), tostring(ok2), ("x"):upper() } ]] }),
        ["b.lua"] = policy_text("b", { 'return "pass", { string.upper("x"), ("y"):upper() }' }),
      })
      local r = by_rule(e:evaluate(OS))
      assert.same({ "false", "false", "X" }, r["a-r1"].evidence)
      assert.same({ "X", "Y" }, r["b-r1"].evidence)
      assert.equal("Z", ("z"):upper())
      assert.equal(string, getmetatable("").__index)
      assert.equal("function", type(string.dump))
    end)

    it("keeps each policy's globals to itself, _ENV tricks included", function()
      local e = engine_with({
        ["a.lua"] = policy_text("a", { 'secret = "a-secret"; return "pass"' }, 'top_secret = 1; table.insert = nil'),
        ["b.lua"] = policy_text("b", { [[
          local seen = {}
          local function probe(v) seen[#seen + 1] = tostring(v) end
          probe(secret); probe(top_secret); probe(_G.top_secret); probe(_ENV.secret)
          probe(table.insert ~= nil)
          local f = function() local _ENV = { x = 1 }; return x end
          probe(f())
          return "pass", seen ]] }),
      })
      local r = by_rule(e:evaluate(OS))
      assert.same({ "nil", "nil", "nil", "nil", "true", "1" }, r["b-r1"].evidence)
      assert.is_nil(rawget(_G, "secret"))
      assert.is_nil(rawget(_G, "top_secret"))
    end)

    it("gives checks a read-only posture: one rule cannot change what the next sees", function()
      local e = engine_with({ ["p.lua"] = policy_text("p", {
        [[local tries = {}
          tries[1] = pcall(function() posture.os.attributes.hostname = "evil" end)
          tries[2] = pcall(function() posture.os = {} end)
          tries[3] = pcall(setmetatable, posture.os, nil)
          tries[4] = pcall(table.insert, posture.os.items, {})
          tries[5] = pcall(function() ctx.endpoint.hostname = "evil" end)
          local out = {}
          for i, ok in ipairs(tries) do out[i] = tostring(ok) end
          out[#out + 1] = tostring(getmetatable(posture))
          return "pass", out]],
        'return "pass", { posture.os.attributes.hostname, ctx.endpoint.hostname, tostring(#posture.os.items) }',
      }) })
      local results = e:evaluate(OS, { hostname = "h1" })
      assert.same({ "false", "false", "false", "false", "false", "read-only" }, results[1].evidence)
      assert.same({ "h1", "h1", "0" }, results[2].evidence)
      assert.equal("h1", OS.os.attributes.hostname)
    end)

    it("refuses finalisers, which would run outside every budget", function()
      local e = engine_with({ ["p.lua"] = policy_text("p", {
        'setmetatable({}, { __gc = function() while true do end end }) return "pass"' }) })
      local r = e:evaluate(OS)[1]
      assert.equal("error", r.result)
      assert.matches("__gc is not allowed", r.evidence[1], 1, true)
    end)
  end)

  ------------------------------------------------------------------------ budgets
  describe("budgets", function()
    it("turns runaway checks into error results and goes on with the next rule", function()
      local e = engine_with({ ["p.lua"] = policy_text("p", {
        "while true do end",
        'return "pass", "after the loop"',
        "for i = 1, 1e9 do pcall(function() while true do end end) end return 'pass', 'escaped'",
        "local t = {} local s = ('x'):rep(1024) for i = 1, 1e7 do t[i] = s .. i end return 'pass'",
        "return 'pass', ('x'):rep(64 * 1024 * 1024)",
        "error('deliberate failure')",
        "error({ code = 1 })",
        "return ('a'):rep(4000):find(('a*'):rep(20) .. 'b') and 'fail' or 'pass'",
        "local function f() return f() + 1 end return f()",
        'return "pass", "still here"',
      }) }, { instructions = 200000, memory = 4 * 1024 * 1024 })
      -- The memory budget counts the state's net growth. Garbage earlier specs left (the whole
      -- suite's, megabytes of it) can be swept while check 4 allocates, hiding its growth until the
      -- instruction budget ends it first: start from a collected heap so the check's own growth counts.
      collectgarbage("collect")
      local r = e:evaluate(OS)
      assert.equal(10, #r)
      assert.equal("error", r[1].result)
      assert.matches("instruction budget %(200000 instructions%)", r[1].evidence[1])
      assert.same({ "pass", "after the loop" }, { r[2].result, r[2].evidence[1] })
      assert.equal("error", r[3].result)
      assert.matches("instruction budget", r[3].evidence[1], 1, true)
      assert.equal("error", r[4].result)
      assert.matches("memory budget (4 MiB)", r[4].evidence[1], 1, true)
      assert.equal("error", r[5].result)
      assert.matches("memory budget", r[5].evidence[1], 1, true)
      assert.equal("error", r[6].result)
      assert.matches("check failed: p.lua:%d+: deliberate failure", r[6].evidence[1])
      assert.equal("error", r[7].result)
      assert.matches("error object is a table value", r[7].evidence[1], 1, true)
      assert.equal("error", r[8].result)
      assert.matches("instruction budget", r[8].evidence[1], 1, true)
      assert.equal("error", r[9].result)
      -- Lua's stack limit, the memory cap or the instruction budget, whichever comes first (it
      -- depends on how much garbage the state holds when the recursion starts)
      assert.is_truthy(r[9].evidence[1]:find("stack overflow", 1, true) or r[9].evidence[1]:find("budget", 1, true),
        r[9].evidence[1])
      assert.same({ "pass", "still here" }, { r[10].result, r[10].evidence[1] })
      assert.is_nil(mem.limit())
      -- and the engine is as good as new
      assert.equal("pass", e:evaluate(OS)[2].result)
    end)

    it("gives each policy file and each evaluation a total budget; the rules past it are errors saying why", function()
      local loops = {}
      for i = 1, 2000 do loops[i] = "while true do end" end
      local e = engine_with({ ["loops.lua"] = policy_text("loops", loops),
        ["other.lua"] = policy_text("other", { 'return "pass"', "while true do end", 'return "pass"' }) },
        { instructions = 100000, policy_instructions = 1000000, evaluation_instructions = 1150000 })
      local r = e:evaluate(OS)
      assert.equal(2003, #r)
      local got = {}
      for _, x in ipairs(r) do got[x.rule_id] = x end
      -- ten rules spend the policy's million instructions; the 11th on are not run at all
      for i = 1, 10 do
        assert.equal("error", got["loops-r" .. i].result)
        assert.matches("instruction budget %(100000 instructions%)", got["loops-r" .. i].evidence[1])
      end
      for i = 11, 2000 do
        assert.same({ "error", "not run: policy loops spent its budget of 1000000 instructions for one evaluation" },
          { got["loops-r" .. i].result, got["loops-r" .. i].evidence[1] })
      end
      -- the other file (evaluated after loops: policies go in id order) has a budget of its own,
      -- within what is left of the evaluation's
      assert.same({ "pass", "error", "pass" }, { got["other-r1"].result, got["other-r2"].result,
        got["other-r3"].result })
      -- the evaluation's budget: it runs out inside loops' second rule
      local e2 = engine_with({}, { instructions = 100000, policy_instructions = 1000000, evaluation_instructions = 150000 })
      r = e2:evaluate(OS)
      got = {}
      for _, x in ipairs(r) do got[x.rule_id] = x end
      assert.matches("instruction budget %(100000 instructions%)", got["loops-r1"].evidence[1])
      assert.equal("check stopped: the evaluation spent its budget of 150000 instructions", got["loops-r2"].evidence[1])
      assert.equal("not run: the evaluation spent its budget of 150000 instructions", got["loops-r3"].evidence[1])
      assert.equal("not run: the evaluation spent its budget of 150000 instructions", got["other-r1"].evidence[1])
    end)

    it("serves the loop between rules while it evaluates in a task", function()
      local loops = {}
      for i = 1, 300 do loops[i] = "while true do end" end
      local e = engine_with({ ["loops.lua"] = policy_text("loops", loops) }, { instructions = 200000 })
      local gap, done = 0, false
      local ticker = task.spawn(function()
        local last = loop.hrtime()
        while not done do
          assert(fs.stat(dir)) -- the threadpool's answer comes with the loop's I/O, not a timer
          local now = loop.hrtime()
          gap = math.max(gap, (now - last) / 1e9)
          last = now
        end
      end)
      local t0 = loop.hrtime()
      local r = e:evaluate(OS)
      local took = (loop.hrtime() - t0) / 1e9
      done = true
      ticker:await()
      assert.equal(300, #r)
      -- 300 runaway rules take a while in all, but the loop served I/O between them: the longest
      -- wait is about one rule's budget, a small part of the whole (how long in seconds depends
      -- on the machine's load, so it is not asserted)
      assert.is_true(took > 5 * policy.SLICE, ("the evaluation took only %.3f s"):format(took))
      assert.is_true(gap < took / 10, ("the loop waited %.3f s of the evaluation's %.3f s"):format(gap, took))
    end)

    it("bounds the top level of a policy file with the same budgets", function()
      local _, report = engine_with({
        ["loop.lua"] = "while true do end",
        ["bomb.lua"] = "local t = {} for i = 1, 1e8 do t[i] = {} end",
        ["ok.lua"] = policy_text("ok", { 'return "pass"' }),
      }, { instructions = 100000, memory = 2 * 1024 * 1024 })
      local why = {}
      for _, ev in ipairs(report.rejected) do why[ev.file] = ev.error end
      assert.matches("instruction budget", why["loop.lua"], 1, true)
      assert.matches("budget", why["bomb.lua"], 1, true)
      assert.equal(1, #report.loaded)
      assert.is_nil(mem.limit())
    end)

    it("sacm._mem counts the state's bytes and refuses growth past a limit", function()
      collectgarbage()
      local before = mem.usage()
      local block = ("x"):rep(1024 * 1024)
      assert.is_true(mem.usage() >= before + 1024 * 1024)
      assert.is_nil(mem.set_limit(mem.usage() + 64 * 1024))
      local ok, err = pcall(string.rep, "y", 1024 * 1024)
      local limit = mem.set_limit(nil)
      assert.is_false(ok)
      assert.equal("not enough memory", err)
      assert.equal("number", type(limit))
      assert.is_nil(mem.limit())
      assert.equal(1024 * 1024, #(block .. ""))
      assert.has_error(function() mem.set_limit(0) end)
    end)

    it("a check that yields is an error, and the runner keeps working", function()
      local runner = sandbox.runner({ instructions = 10000 })
      local ok, kind = runner:run(coroutine.yield, 1)
      assert.is_false(ok)
      assert.equal("yield", kind)
      assert.same({ true, 3 }, { runner:run(function(a, b) return a + b end, 1, 2) })
    end)
  end)

  ------------------------------------------------------------------------ hot reload
  describe("hot reload", function()
    local engine, events

    local function next_event(timeout)
      local ev, err = events:get(timeout or 5)
      assert(ev, "no event: " .. tostring(err))
      return ev
    end

    before_each(function()
      events = sync.queue()
    end)
    after_each(function()
      if engine then engine:close() end
      engine = nil
    end)

    local function start(files)
      engine = engine_with(files, { debounce = 0.05 })
      assert(engine:watch(function(ev) events:put(ev) end))
    end

    it("applies an edit, keeps the old version on a syntax error, drops deleted, adds new files", function()
      start({ ["a.lua"] = policy_text("a", { 'return "pass", "v1"' }) })
      local v1 = engine:policies()[1].version
      assert.same({ "v1" }, engine:evaluate(OS)[1].evidence)

      write("a.lua", policy_text("a", { 'return "fail", "v2"' }))
      local ev = next_event()
      assert.same({ "loaded", "a", "a.lua", v1 }, { ev.type, ev.policy_id, ev.file, ev.previous_version })
      assert.equal(fs.hash(dir .. "/a.lua"), ev.version)
      local r = engine:evaluate(OS)[1]
      assert.same({ "fail", "v2", ev.version }, { r.result, r.evidence[1], r.policy_version })
      local v2 = ev.version

      write("a.lua", "return { id = ")
      ev = next_event()
      assert.equal("rejected", ev.type)
      assert.equal("a.lua", ev.file)
      assert.matches("a.lua:1:", ev.error, 1, true)
      r = engine:evaluate(OS)[1]
      assert.same({ "v2", v2 }, { r.evidence[1], r.policy_version })

      write("b.lua", policy_text("b", { 'return "pass", "b"', 'return "pass", "b2"' }))
      ev = next_event()
      assert.same({ "loaded", "b" }, { ev.type, ev.policy_id })
      assert.equal(3, #engine:evaluate(OS))

      assert(fs.remove(dir .. "/a.lua"))
      ev = next_event()
      assert.same({ "removed", "a", v2 }, { ev.type, ev.policy_id, ev.version })
      local left = engine:evaluate(OS)
      assert.equal(2, #left)
      for _, x in ipairs(left) do assert.equal("b", x.policy_id) end
      assert.is_nil(events:get(0.2)) -- nothing else happened
    end)

    it("moves a rule between files: a file rejected for a clash loads once the clash is gone", function()
      start({
        ["a.lua"] = policy_text("a", { 'return "pass"' }),
        ["b.lua"] = policy_text("b", { 'return "pass"' }),
      })
      -- a-r1 moves from a.lua to b.lua; b.lua is saved first
      write("b.lua", policy_text("b", { 'return "pass"', { id = "a-r1", body = 'return "fail"' } }))
      local ev = next_event()
      assert.same({ "rejected", "b.lua" }, { ev.type, ev.file })
      assert.matches("rule id a-r1 is already used by a.lua", ev.error, 1, true)
      assert.equal("a", by_rule(engine:evaluate(OS))["a-r1"].policy_id)

      write("a.lua", policy_text("a", { { id = "a-r2", body = 'return "pass"' } }))
      local seen = {}
      while not (seen["a.lua"] and seen["b.lua"]) do
        ev = next_event()
        assert.equal("loaded", ev.type, ev.error)
        seen[ev.file] = true
      end
      local r = by_rule(engine:evaluate(OS))
      assert.equal("b", r["a-r1"].policy_id)
      assert.equal("fail", r["a-r1"].result)
      assert.equal("a", r["a-r2"].policy_id)
    end)

    it("an evaluation sees one version of the policy set while files change", function()
      local function version_text(n)
        return policy_text("v", { ('return "pass", "%d"'):format(n), ('return "pass", "%d"'):format(n),
          ('return "pass", "%d"'):format(n) })
      end
      start({ ["v.lua"] = version_text(0) })
      local last = 20
      local writer = sacm.spawn(function()
        for n = 1, last do
          assert(fs.write(dir .. "/v.lua", version_text(n)))
          sacm.sleep(0.01)
        end
      end)
      local marker_of = {}   -- version hash -> the number its rules report
      local distinct = 0
      local evaluations = 0
      while true do
        local results = engine:evaluate(OS)
        evaluations = evaluations + 1
        assert.equal(3, #results)
        local version, marker = results[1].policy_version, results[1].evidence[1]
        for _, r in ipairs(results) do
          assert.equal(version, r.policy_version)
          assert.equal(marker, r.evidence[1])
        end
        if marker_of[version] == nil then distinct = distinct + 1 end
        assert.is_true(marker_of[version] == nil or marker_of[version] == marker)
        marker_of[version] = marker
        if marker == tostring(last) then break end
        sacm.sleep(0.002)
      end
      writer:await()
      assert.is_true(distinct >= 2)
      assert.is_true(evaluations > distinct)
    end)
  end)
end)

describe("sacm.policy.helpers", function()
  it("compares versions the way dpkg does", function()
    local lt = helpers.version_lt
    assert.is_true(lt("1.0", "1.1"))
    assert.is_true(lt("1.9", "1.10"))
    assert.is_true(lt("1.0~rc1", "1.0"))
    assert.is_true(lt("1.0", "1.0a"))
    assert.is_true(lt("1:0.9", "2:0.1"))
    assert.is_true(lt("9.9", "1:0.1"))
    assert.is_true(lt("2.36-9", "2.36-9+deb12u3"))
    assert.is_true(lt("1.2.3-1", "1.2.3-2"))
    assert.is_false(lt("1.0", "1.0"))
    assert.equal(0, helpers.version_compare("1.01", "1.1"))
    assert.equal(1, helpers.version_compare("1:9.2p1-2", "1:8.4p1-5"))
  end)

  it("matches shell globs", function()
    assert.is_true(helpers.glob("telnet*", "telnetd-ssl"))
    assert.is_true(helpers.glob("/etc/*.conf", "/etc/a.b/c.conf"))
    assert.is_true(helpers.glob("lib?.so", "libc.so"))
    assert.is_true(helpers.glob("[!a]x", "bx"))
    assert.is_false(helpers.glob("[!a]x", "ax"))
    assert.is_true(helpers.glob("a.b(c)%", "a.b(c)%"))
    assert.is_false(helpers.glob("a.b", "axb"))
  end)

  it("finds and filters items", function()
    local items = { { name = "a", uid = 0 }, { name = "b", uid = 1 }, { name = "c", uid = 0 } }
    assert.equal("b", helpers.find_item(items, "uid", 1).name)
    assert.equal("c", helpers.find_item(items, { uid = 0, name = "c" }).name)
    assert.equal(2, #helpers.filter_items(items, { uid = 0 }))
    assert.equal(1, #helpers.filter_items(items, function(i) return i.name > "b" end))
    assert.same({ "a", "b", "c" }, helpers.split(" a, b,,c "))
    assert.is_true(helpers.is_empty(sandbox.freeze({})))
    assert.is_false(helpers.is_empty(sandbox.freeze({ x = 1 })))
  end)
end)
