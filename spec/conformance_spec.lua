-- Conformance of a real grid to docs/protocol.md, checked by a client we did not write in Lua:
-- spec/conformance/orchestrator.py (Python, slixmpp), written from the document alone. For each
-- server (Prosody and ejabberd, from the shipped configurations) this starts a grid in Lua as
-- spec/dataplane_spec.lua does (a repository, an evaluator with a small policy, two collectors);
-- the orchestrator account and a plain account that advertises no role are the Python client's.
-- The client prints one line per check (`ok NAME` / `FAIL NAME: ...`) and `N passed, M failed`.
--
--   ./sacmrun spec/run.lua spec/conformance_spec.lua
--   SACMRUN_CONFORMANCE_ONLY=prosody|ejabberd   one server only
local prosody = require "support.prosody"
local ejabberd = require "support.ejabberd"
local grid = require "support.grid"
local tmp = require "support.tmp"
local fs = require "sacm.fs"
local proc = require "sacm.proc"
local json = require "sacm.json"
local collector = require "sacm.roles.collector"
local evaluator = require "sacm.roles.evaluator"
local repository = require "sacm.roles.repository"

local PYTHON = "/usr/bin/python3" -- Debian's, where python3-slixmpp is installed
local CLIENT = "spec/conformance/orchestrator.py"
local BIN = os.getenv("SACMRUN_BIN") or "./sacmrun"
local ACCOUNTS = { "orchestrator", "plain", "collector", "collector2", "evaluator", "repository" }

-- The number of checks the client runs; a change of the client changes it here too, so a check
-- that silently stops running shows.
local CHECKS = 138

-- The test policy (its rules are named in the client's config, below).
local POLICY = [[
return {
  id = "conformance", title = "Conformance test policy", description = "spec/conformance_spec.lua",
  rules = {
    { id = "conf-os", title = "The os posture arrived", severity = "info", rationale = "a test",
      requires = { "os" },
      check = function(p) return p.os.attributes.hostname and "pass" or "fail", "hostname" end },
    { id = "conf-sysctl-fails", title = "A rule that always fails", severity = "high", rationale = "a test",
      requires = { "sysctl" },
      check = function(p) return "fail", "this rule always fails" end },
    { id = "conf-packages", title = "The packages posture arrived whole", severity = "low", rationale = "a test",
      requires = { "packages" },
      check = function(p)
        local n = 0
        for _, item in ipairs(p.packages.items) do
          if item.name:find("^synthetic%-package%-") then n = n + 1 end
        end
        return n > 0 and "pass" or "fail", n .. " synthetic packages"
      end },
    { id = "conf-sshd", title = "sshd posture", severity = "medium", rationale = "a test",
      requires = { "sshd" },
      check = function(p) return "pass", "sshd posture present" end },
    { id = "conf-users", title = "users posture (never collected here)", severity = "low", rationale = "a test",
      requires = { "users" },
      check = function(p) return "pass", "users" end },
    { id = "conf-evidence", title = "Much evidence", severity = "info", rationale = "a test",
      requires = { "os" },
      check = function(p)
        local ev = { string.rep("x", 5000) }
        for i = 2, 70 do ev[i] = ("line %d %s"):format(i, string.rep("e", 200)) end
        return "pass", ev
      end },
  },
}
]]

local function each_server(name, key, start_server)
  local only = os.getenv("SACMRUN_CONFORMANCE_ONLY")
  if only and only ~= key then return end
  describe("conformance to docs/protocol.md on " .. name .. " #e2e", function()
    local server, dir, g

    local function start(mod, role, extra) return g:start(mod, role, extra) end

    lazy_setup(function()
      dir = tmp.dir("conformance")
      server = start_server()
      g = grid.new(server, dir)
      assert(fs.mkdir(dir .. "/policies"))
      assert(fs.write(dir .. "/policies/conformance.lua", POLICY))
      grid.dpkg_status(dir .. "/status", 32 * 1024)          -- announced by reference (> 8,192 bytes)
      grid.dpkg_status(dir .. "/vanishing-status", 2 * 1024) -- the client removes it (not-applicable)
      -- an sshd that never finishes: its kind runs out of its time budget
      assert(fs.write(dir .. "/slow-sshd", "#!/bin/sh\nexec sleep 60\n"))
      assert(proc.run({ "chmod", "0755", dir .. "/slow-sshd" }))
    end)

    lazy_teardown(function()
      if g then g:close_roles() end
      if server then server:stop() end
      if dir then tmp.remove(dir) end
    end)

    it("passes every check of the Python client", function()
      local repo = start(repository, "repository", { database = dir .. "/grid.db" }) -- luacheck: ignore 231
      local eval = start(evaluator, "evaluator", { policies = dir .. "/policies", spool = dir .. "/evaluator-spool.db" })
      local c1 = start(collector, "collector", { kinds = { "os", "sysctl", "packages", "sshd" }, timeout = 3,
        spool = dir .. "/collector-spool.db",
        options = { packages = { dpkg_status = dir .. "/status" }, sshd = { sshd_path = dir .. "/slow-sshd" } } })
      -- sshd is not on this host: the second collector is configured for it but cannot advertise it
      local c2 = start(collector, "collector2", { kinds = { "os", "packages", "sshd" }, timeout = 3,
        spool = dir .. "/collector2-spool.db", endpoint = "conformance-endpoint-2",
        options = { packages = { dpkg_status = dir .. "/vanishing-status" } } })

      -- grid configs for the reference orchestrator (examples/grid/orchestrator.lua)
      local function ref_config(path, collectors)
        local o = g:options("orchestrator")
        assert(require("sacm.grid.config").write(path, {
          domain = server.domain, host = server.host, port = server.port, cafile = server.ca_file,
          orchestrators = { server:jid("orchestrator") },
          repository = { jid = server:jid("repository") },
          orchestrator = { jid = server:jid("orchestrator") .. "/reference", password = o.password,
            collectors = collectors, evaluators = 1, discover_timeout = 4, assess_timeout = 40, heartbeat = false },
        }))
        return path
      end

      local pw = g.password
      local function account(name, resource)
        return { jid = server:jid(name) .. "/" .. resource, password = pw }
      end
      local config = {
        server = name, host = server.host, port = server.port, domain = server.domain, cafile = server.ca_file,
        pubsub = "pubsub." .. server.domain,
        orchestrator = account("orchestrator", "conformance"),
        plain = account("plain", "conformance"),
        collector_account = account("collector", "conformance"),
        repository = server:jid("repository"),
        evaluator = eval.member.conn.jid,
        collectors = {
          { jid = c1.member.conn.jid, endpoint = c1.endpoint, kinds = { "os", "sysctl", "packages", "sshd" },
            slow_kind = "sshd" },
          { jid = c2.member.conn.jid, endpoint = c2.endpoint, configured = { "os", "packages", "sshd" },
            vanishing_kind = "packages", vanishing_file = dir .. "/vanishing-status" },
        },
        policies_dir = dir .. "/policies",
        policy = { id = "conformance", rules = { os = "conf-os", sysctl = "conf-sysctl-fails",
          packages = "conf-packages", sshd = "conf-sshd", users = "conf-users", evidence = "conf-evidence" } },
        reference = { sacmrun = BIN, script = "examples/grid/orchestrator.lua",
          short = ref_config(dir .. "/ref-short.conf", 3), full = ref_config(dir .. "/ref-full.conf", 2),
          default = ref_config(dir .. "/ref-default.conf", nil),
          report = dir .. "/ref-report.json" },
      }
      local r = assert(proc.run({ PYTHON, CLIENT }, { stdin = json.encode(config), timeout = 420 }))
      io.stdout:write(("---- conformance on %s ----\n%s"):format(name, r.stdout))
      if r.stderr ~= "" then io.stdout:write("---- client stderr ----\n", r.stderr:sub(-4000), "\n") end
      io.stdout:flush()
      local passed, failed = r.stdout:match("\n(%d+) passed, (%d+) failed\n?$")
      assert.is_truthy(passed, "the client printed no summary line")
      assert.equal(CHECKS, tonumber(passed) + tonumber(failed), "the number of checks")
      assert.equal(0, tonumber(failed), failed .. " conformance check(s) failed on " .. name)
      assert.equal(0, r.code)
      repo, eval, c1, c2 = nil, nil, nil, nil -- luacheck: ignore 311 (lets the roles be collected)
    end)
  end)
end

local function users()
  local u = {}
  for _, a in ipairs(ACCOUNTS) do u[a] = "pw" end
  return u
end

each_server("Prosody", "prosody", function() return prosody.start({ users = users(), shipped = true }) end)
each_server("ejabberd", "ejabberd", function() return ejabberd.start({ users = users(), shipped = true }) end)
