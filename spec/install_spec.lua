-- After `make install PREFIX=<temporary>`, the commands docs/deploy.md gives run a grid from
-- another directory with the installed files alone: sacm-repository, sacm-evaluator (with the
-- installed policies), sacm-collector and sacm-assess, against a private Prosody started from
-- the shipped configuration.
local prosody = require "support.prosody"
local certs = require "support.certs"
local tmp = require "support.tmp"
local fs = require "sacm.fs"
local proc = require "sacm.proc"
local config = require "sacm.grid.config"

describe("an installed grid #e2e", function()
  local server, dir, prefix
  local roles = {}

  lazy_setup(function()
    dir = tmp.dir("install")
    prefix = dir .. "/prefix"
    local r = assert(proc.run({ "make", "-s", "install", "PREFIX=" .. prefix }, { timeout = 300 }))
    assert.equal(0, r.code, r.stderr)
    server = prosody.start({ users = { orchestrator = "pw", collector = "pw", evaluator = "pw", repository = "pw" },
      shipped = true })
    local https = certs.server(server._ca, dir .. "/https", { cn = "localhost", ips = { "127.0.0.1" } })
    assert(fs.write(dir .. "/collector.pass", "pw\n", { mode = 384 }))
    assert(config.write(dir .. "/grid.conf", {
      domain = server.domain, host = server.host, port = server.port, cafile = server.ca_file,
      orchestrators = { server:jid("orchestrator") },
      repository = { jid = server:jid("repository") .. "/r1", password = "pw", database = dir .. "/grid.db",
        upload = { listen = { host = "127.0.0.1", port = 0, cert = https.cert, key = https.key } } },
      evaluator = { jid = server:jid("evaluator") .. "/e1", password = "pw", spool = dir .. "/evaluator-spool.db" },
      collector = { jid = server:jid("collector") .. "/c1", password_file = dir .. "/collector.pass",
        spool = dir .. "/collector-spool.db", kinds = { "os", "sysctl", "users" } },
      orchestrator = { jid = server:jid("orchestrator") .. "/ops", password = "pw" },
    }))
    for _, role in ipairs { "repository", "evaluator", "collector" } do
      roles[#roles + 1] = assert(proc.spawn({ prefix .. "/bin/sacm-" .. role, dir .. "/grid.conf" },
        { cwd = "/", max_output = 4 * 1024 * 1024 }))
    end
  end)

  lazy_teardown(function()
    for i = #roles, 1, -1 do roles[i]:stop(5) end
    if server then server:stop() end
    if dir then tmp.remove(dir) end
  end)

  it("assesses with the installed commands and policies from another directory", function()
    local r = assert(proc.run({ prefix .. "/bin/sacm-assess", "--config", dir .. "/grid.conf", "--kinds", "os,sysctl,users",
      "--format", "json", "--output", dir .. "/report.json", "--fail-on", "none", "--timeout", "60" },
      { cwd = "/", timeout = 120 }))
    assert.equal(0, r.code, r.stderr)
    local report = assert(fs.read(dir .. "/report.json"))
    -- the installed kernel policy judged this host's sysctl posture
    assert.matches('"policy_id": "kernel%-hardening"', report)
    assert.matches('"incomplete": %[%]', report)
  end)
end)
