-- `make demo`: a real SACM grid on this machine.
--
-- Starts a private Prosody on loopback (own CA, certificates and accounts, in a temporary
-- directory), then a repository, an evaluator and a collector as separate sacmrun processes, and
-- finally an orchestrator that discovers them through entity caps, has the collector gather this
-- host's posture, has the evaluator judge it with policies/, and prints the report. Everything it
-- started is stopped at the end, also on Ctrl-C. The report's last line holds the totals.
--
--   sacmrun examples/demo.lua [report.json]
local proc = require "sacm.proc"
local crypto = require "sacm.crypto"
local log = require("sacm.log").new("demo")

-- The demo borrows the test suite's private-Prosody harness (spec/support/prosody.lua).
local root = (arg[0]:match("^(.*)/examples/[^/]+$") or ".")
package.path = root .. "/spec/?.lua;" .. package.path
local prosody = require "support.prosody"
local certs = require "support.certs"

-- This interpreter: lua.c convention, the lowest negative index of arg.
local function interpreter()
  local i = -1
  while arg[i - 1] do i = i - 1 end
  return os.getenv("SACMRUN_BIN") or arg[i]
end
local sacmrun = interpreter()

local ROLES = { "repository", "evaluator", "collector" } -- started in this order, before the orchestrator

local function secret() return crypto.hex(crypto.random(18)) end

local users, accounts = {}, {}
for _, role in ipairs({ "orchestrator", "repository", "evaluator", "collector" }) do
  accounts[role] = secret()
  users[role] = accounts[role]
end

-- Prosody from the configuration docs/deploy.md gives (examples/servers/prosody.cfg.lua): only the
-- repository's account may create pubsub nodes; it provisions the grid and admits the other roles
-- (docs/protocol.md, section 4).
local server = prosody.start({ users = users, shipped = true })
local dir = server.dir
-- the repository's HTTPS server (uploads, and the references evaluators fetch) has a
-- certificate from the same CA as the XMPP server's
local https = certs.server(server._ca, dir .. "/certs/repository-https", { cn = "localhost", dns = { "localhost" },
  ips = { "127.0.0.1" } })
io.stderr:write(("demo: private Prosody on %s:%d, files in %s\n"):format(server.host, server.port, dir))
local processes = {}

local failed = false

-- Stops the roles (SIGTERM: they say goodbye and disconnect), then the server. A role that ended
-- on its own, or any role when the demo failed, shows its log.
local function stop_all()
  for i = #processes, 1, -1 do
    local p = processes[i]
    local r = p.process:stop(5)
    local clean = r and (r.code == 0 or r.code == 143 or r.signal == "SIGTERM")
    if r and (failed or not clean) then
      io.stderr:write(("demo: %s ended with %s; its log:\n%s\n"):format(p.role, r.signal or r.code, r.stderr))
    end
  end
  processes = {}
  server:stop()
end
sacm.on_shutdown(stop_all)

local grid = {
  domain = server.domain, host = server.host, port = server.port, cafile = server.ca_file,
  orchestrators = { "orchestrator@" .. server.domain },
  collector = { jid = "collector@" .. server.domain .. "/demo", password = accounts.collector,
    spool = dir .. "/collector-spool.db",
    options = { files = { paths = { "/etc/passwd", "/etc/shadow", "/etc/ssh", "/tmp", "/usr/local/bin" } } } },
  evaluator = { jid = "evaluator@" .. server.domain .. "/demo", password = accounts.evaluator,
    policies = root .. "/policies", spool = dir .. "/evaluator-spool.db" },
  repository = { jid = "repository@" .. server.domain .. "/demo", password = accounts.repository,
    database = dir .. "/grid.db",
    upload = { listen = { host = "127.0.0.1", port = 0, cert = https.cert, key = https.key } } },
  orchestrator = { jid = "orchestrator@" .. server.domain .. "/demo", password = accounts.orchestrator },
}

local config_file = dir .. "/grid.conf"
assert(require("sacm.grid.config").write(config_file, grid))

local function start(role)
  local p = assert(proc.spawn({ sacmrun, root .. "/examples/grid/" .. role .. ".lua", config_file },
    { max_output = 4 * 1024 * 1024 }))
  processes[#processes + 1] = { role = role, process = p }
  io.stderr:write(("demo: %s started (pid %d)\n"):format(role, p.pid))
  return p
end

for _, role in ipairs(ROLES) do start(role) end

io.stderr:write("demo: orchestrator assessing this host ...\n")
local argv = { sacmrun, root .. "/examples/grid/orchestrator.lua", config_file, arg[1] }
local r = assert(proc.run(argv, { timeout = 180 }))
io.stderr:write(r.stderr)
io.stdout:write(r.stdout)
io.stdout:flush()
if not r.ok then
  failed = true
  log.error("the orchestrator failed (%s)", r.signal or r.code)
end
sacm.exit(r.ok and 0 or 1)
