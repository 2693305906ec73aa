--- spec/support/prosody.lua: a real, private Prosody 0.12 on loopback for the end-to-end specs.
--
--   local prosody = require "support.prosody"
--   local server = prosody.start({ admins = { "orchestrator" } })
--   server:register("alice", "secret")
--   -- connect to server.host:server.port, verify TLS against server.ca_file for server.domain
--   server:stop()
--
-- Everything lives in a fresh directory (mode 0700) under $TMPDIR or /tmp: a test CA, the server
-- certificate, the config, the data, the log. The server listens on 127.0.0.1 only (c2s; no s2s,
-- no HTTP, no components port) and runs as a child of the spec run, in the foreground
-- (`prosody -F`), in its own process group. stop() ends it by pid and removes the directory; a
-- server a spec forgot is stopped by a shutdown handler, and failing that the runtime kills the
-- group when the Lua state closes. See docs/testing.md. What it shares with support.ejabberd
-- (the process, directory, ports and certificates) is in support.harness. With shipped = true the
-- configuration is examples/servers/prosody.cfg.lua, the one users deploy, with only its
-- deployment values substituted (M._shipped_config).
--
-- Waiting calls (start, register, stop, ...) must run in a task: a spec is one.
-- Errors raise (this is test support: a server that does not come up is a failed test), with the
-- log's tail in the message.
--
-- Environment:
--   SACMRUN_KEEP_TEST_DIRS=1         keep the directory after stop() and print where it is
--   SACMRUN_PROSODY_LOG_LEVEL=debug  the log level in prosody.log (default info)
--   SACMRUN_PROSODY=/path/to/prosody the program to run (default prosody in PATH); prosodyctl is
--                                    looked for beside it
local proc = require "sacm.proc"
local fs = require "sacm.fs"
local time = require "sacm.time"
local h = require "support.harness"

local M = {}

M.START_TIMEOUT = 10      -- seconds until the c2s port must listen
M.STOP_GRACE = 5          -- seconds between SIGTERM and SIGKILL
M.MODULES = { "tls", "saslauth", "disco", "roster", "ping", "register", "adhoc", "smacks", "pep", "posix",
              "sacm_xmlns_guard" }
-- The project's own Prosody modules (examples/servers/prosody-modules), as deployments load them.
-- Absolute: Prosody resolves plugin_paths from its own working directory.
M.PLUGIN_DIR = h.shipped_file("prosody-modules")
if M.PLUGIN_DIR:sub(1, 1) ~= "/" then
  M.PLUGIN_DIR = assert(os.getenv("PWD"), "support.prosody: no PWD to make the plugin path absolute")
    .. "/" .. M.PLUGIN_DIR:gsub("^%./", "")
end

---------------------------------------------------------------------------- config
local function lua_list(items)
  local out = {}
  for i, v in ipairs(items) do out[i] = ("%q"):format(v) end
  return "{ " .. table.concat(out, ", ") .. " }"
end

local function qualify(self, user)
  if user:find("@", 1, true) then return user end
  return user .. "@" .. self.domain
end

function M._config(self)
  local q = function(s) return ("%q"):format(s) end
  local admins = {}
  for i, a in ipairs(self.admins) do admins[i] = qualify(self, a) end
  local lines = {
    "-- written by spec/support/prosody.lua; see docs/testing.md",
    "run_as_root = true -- the specs may run as root; never drop to the prosody user",
    "daemonize = false",
    "pidfile = " .. q(self.dir .. "/prosody.pid"),
    "data_path = " .. q(self.data_dir),
    "certificates = " .. q(self.dir .. "/certs"),
    ("log = { { levels = { min = %q }, to = \"file\", filename = %q } }"):format(self.log_level, self.log_file),
    "network_settings = { nagle = false } -- else every STARTTLS login stalls ~40 ms",
    "interfaces = { \"127.0.0.1\" }",
    "local_interfaces = { \"127.0.0.1\" }",
    "c2s_ports = { " .. self.port .. " }",
    "c2s_direct_tls_ports = {}",
    "legacy_ssl_ports = {}",
    "s2s_ports = {}",
    "component_ports = {}",
    "http_ports = {}",
    "https_ports = {}",
    "modules_disabled = { \"s2s\" }",
    "plugin_paths = { " .. q(M.PLUGIN_DIR) .. " }",
    "modules_enabled = " .. lua_list(self.modules),
    "c2s_require_encryption = true",
    "allow_registration = " .. tostring(self.allow_registration),
    "storage = \"internal\"",
    "ssl = { certificate = " .. q(self.cert_file) .. ", key = " .. q(self.key_file) .. " }",
  }
  if self.client_certs then
    -- SASL EXTERNAL with the JID in the certificate (mod_auth_ccert from prosody-modules).
    -- Without verifyext, client certificates fail with "unsuitable certificate purpose".
    lines[#lines + 1] = "authentication = \"ccert\""
    lines[#lines + 1] = "certificate_match = \"xmppaddr\""
    lines[#lines + 1] = ("c2s_ssl = { cafile = %q, verify = { \"peer\", \"client_once\" }, "
      .. "verifyext = { lsec_ignore_purpose = false } }"):format(self.ca_file)
  else
    lines[#lines + 1] = "authentication = \"internal_hashed\" -- SCRAM-SHA-1 and PLAIN over TLS"
  end
  if self.global_config then lines[#lines + 1] = self.global_config end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "VirtualHost " .. q(self.domain)
  if self.host_config then lines[#lines + 1] = self.host_config end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "Component " .. q(self.pubsub) .. " \"pubsub\""
  lines[#lines + 1] = "    -- only admins may create nodes: the grid's service accounts"
  lines[#lines + 1] = "    admins = " .. lua_list(admins)
  if self.pubsub_config then lines[#lines + 1] = self.pubsub_config end
  return table.concat(lines, "\n") .. "\n"
end

---------------------------------------------------------------------------- the shipped config
-- examples/servers/prosody.cfg.lua, the configuration users deploy. shipped mode starts that file
-- with its DEPLOY values replaced by the test server's; anything else in it runs as shipped.
M.SHIPPED_FILE = h.shipped_file("prosody.cfg.lua")

-- The shipped file's deployment values, each exactly as the file writes it.
M.SHIPPED = {
  domain = "grid.example",
  pidfile = 'pidfile = "/run/prosody/prosody.pid"',
  data_path = 'data_path = "/var/lib/prosody"',
  log = 'log = { { levels = { min = "info" }, to = "file", filename = "/var/log/prosody/prosody.log" } }',
  interfaces = 'interfaces = { "*" }',
  c2s_ports = "c2s_ports = { 5222 }",
  ssl = 'ssl = { certificate = "/etc/sacm/xmpp.crt", key = "/etc/sacm/xmpp.key" }',
  certificates = 'certificates = "/etc/sacm"',
  plugin_paths = 'plugin_paths = { "/usr/local/share/sacmrun/prosody-modules" }',
  ccm2_ca = 'sacm_ccm2_ca = { certificate = "/etc/sacm/grid-ca.crt", key = "/etc/sacm/grid-ca.key" }',
  c2s_ssl = 'c2s_ssl = { cafile = "/etc/sacm/grid-ca.crt",',
}

-- The source tree's copy of the Prosody modules that `make install` puts in $(SHAREDIR).
-- Prosody resolves plugin_paths from its own working directory (the test directory), so the path
-- must be absolute; the spec run starts in the repository (make test), whose path PWD holds.
M.SHIPPED_MODULES = M.SHIPPED_FILE:gsub("/[^/]*$", "") .. "/prosody-modules"
if M.SHIPPED_MODULES:sub(1, 1) ~= "/" then
  local pwd = os.getenv("PWD")
  if not pwd or pwd:sub(1, 1) ~= "/" then
    error("support.prosody: cannot make " .. M.SHIPPED_MODULES .. " absolute: PWD is not set", 0)
  end
  M.SHIPPED_MODULES = pwd .. "/" .. M.SHIPPED_MODULES:gsub("^%./", "")
end

-- What must not survive the substitution in a setting: the shipped domain and system paths.
M.SHIPPED_LEFTOVERS = { "grid.example", "/etc/", "/var/", "/run/" }

-- The lines added at the top (the global section), and only these: as root, Prosody would
-- otherwise refuse to run (or drop to the prosody user), and it must stay in the foreground as
-- the spec run's child.
local SHIPPED_ADDED = {
  "run_as_root = true -- added by spec/support/prosody.lua: the specs may run as root",
  "daemonize = false  -- added by spec/support/prosody.lua: a child of the spec run",
}

function M._shipped_config(self)
  local q = function(s) return ("%q"):format(s) end
  local d = M.SHIPPED.domain
  local text, err = fs.read(self.shipped_file)
  h.must(text, err, "support.prosody: reading the shipped configuration " .. self.shipped_file)
  local out = h.substitute(text, {
    tag = "prosody", file = self.shipped_file, comment = "--", leftovers = M.SHIPPED_LEFTOVERS,
    rules = {
      { what = "the pid file", from = M.SHIPPED.pidfile, to = "pidfile = " .. q(self.dir .. "/prosody.pid") },
      { what = "the data directory", from = M.SHIPPED.data_path, to = "data_path = " .. q(self.data_dir) },
      { what = "the log", from = M.SHIPPED.log,
        to = ("log = { { levels = { min = %q }, to = \"file\", filename = %q } }"):format(self.log_level, self.log_file) },
      { what = "the interfaces", from = M.SHIPPED.interfaces, to = 'interfaces = { "127.0.0.1" }' },
      { what = "the c2s port", from = M.SHIPPED.c2s_ports, to = ("c2s_ports = { %d }"):format(self.port) },
      { what = "the certificate and key", from = M.SHIPPED.ssl,
        to = ("ssl = { certificate = %s, key = %s }"):format(q(self.cert_file), q(self.key_file)) },
      { what = "the certificate directory", from = M.SHIPPED.certificates, to = "certificates = " .. q(self.dir .. "/certs") },
      -- the test CA is the grid CA: it signed the server's certificate and signs ccm2's
      { what = "sacmrun's Prosody modules", from = M.SHIPPED.plugin_paths,
        to = ("plugin_paths = { %s }"):format(q(M.SHIPPED_MODULES)) },
      { what = "the grid CA (ccm2)", from = M.SHIPPED.ccm2_ca,
        to = ("sacm_ccm2_ca = { certificate = %s, key = %s }"):format(q(self.ca_file), q(self.dir .. "/certs/ca.key")) },
      { what = "the client certificate CA", from = M.SHIPPED.c2s_ssl, to = ("c2s_ssl = { cafile = %s,"):format(q(self.ca_file)) },
      { what = "the domain", from = ("VirtualHost %q"):format(d), to = "VirtualHost " .. q(self.domain) },
      { what = "the pubsub component", from = ("Component %q \"pubsub\""):format("pubsub." .. d),
        to = ("Component %s \"pubsub\""):format(q(self.pubsub)) },
      { what = "the pubsub admins", from = ("admins = { %q }"):format("repository@" .. d),
        to = ("admins = { %s }"):format(q("repository@" .. self.domain)) },
    },
  })
  -- start() waits for the SIGTERM handler only when mod_posix is there to install it
  self._posix = out:find('\nmodules_enabled = {[^\n]*"posix"') ~= nil
  return ("-- %s as shipped, its DEPLOY values substituted by spec/support/prosody.lua (shipped mode)\n%s\n\n%s")
    :format(self.shipped_file, table.concat(SHIPPED_ADDED, "\n"), out)
end

---------------------------------------------------------------------------- the server
local Server = setmetatable({}, { __index = h.Server })
Server.__index = Server
Server.__close = h.Server.stop
Server.NAME = "prosody"
Server.PORTS = { "port" }
Server.SUBDIRS = { "certs", "data", "clients" }
Server.POLL = 0.005
function Server:_config()
  if self.shipped_file then return M._shipped_config(self) end
  return M._config(self)
end

local function prosody_program()
  return os.getenv("SACMRUN_PROSODY") or "prosody"
end

local function prosodyctl_program()
  local p = os.getenv("SACMRUN_PROSODY")
  if p and p:find("/", 1, true) then return (p:gsub("[^/]*$", "prosodyctl")) end
  return "prosodyctl"
end

function Server:_argv()
  return { self.program, "--config", self.config_file, "-F" }
end

-- Ours without Lua search paths that were meant for sacmrun (prosody is a lua5.4 script and
-- would pick them up).
function Server:_env()
  return h.environ({ LUA_PATH = false, LUA_CPATH = false, LUA_PATH_5_4 = false, LUA_CPATH_5_4 = false,
    LUA_INIT = false, LUA_INIT_5_4 = false })
end

function Server:_ready(log, state)
  if log:find(("Failed to open server port %d on 127.0.0.1"):format(self.port), 1, true) then
    return false, ("port %d is taken"):format(self.port)
  end
  return log:find(("Activated service 'c2s' on [127.0.0.1]:%d"):format(self.port), 1, true) ~= nil
    and h.listening(self.port) and self:_handles_sigterm(state)
end

-- Whether prosody has installed its SIGTERM handler (mod_posix does so from a timer, on the first
-- turn of its loop, which is after the ports listen). A SIGTERM before that kills it without a
-- clean shutdown, so start() waits for this. Without mod_posix there is no handler to wait for.
function Server:_handles_sigterm(state)
  if not self._posix then return true end
  local status = fs.read("/proc/" .. state.p:pid() .. "/status")
  local mask = status and status:match("\nSigCgt:%s*(%x+)")
  if not mask then return false end
  -- SIGTERM is signal 15: bit 14 of the mask, i.e. the 4th hex digit from the right
  local digit = tonumber(mask:sub(-4, -4), 16) or 0
  return digit & 4 ~= 0
end

--- server:register(user, password): creates the account (also while the server runs).
function Server:register(user, password)
  if type(user) ~= "string" or type(password) ~= "string" then
    error("server:register(user, password) expects two strings", 2)
  end
  if self.client_certs then
    error("server:register: this server authenticates with client certificates (ccert), which "
      .. "has no accounts to register; issue a certificate with server:client_cert(jid)", 2)
  end
  local r, err = proc.run({ self.ctl, "--config", self.config_file, "register", user, self.domain, password },
    { env = { LUA_PATH = false, LUA_CPATH = false, LUA_INIT = false }, cwd = self.dir, timeout = 20 })
  if not r then error(("server:register %s: %s"):format(user, tostring(err)), 2) end
  -- prosodyctl exits 1 and prints "Error: ..." on failure; the text is checked as well
  local out = r.stdout .. r.stderr
  if not r.ok or out:find("\nError:") or out:find("^Error:") then
    error(("server:register %s: prosodyctl failed (%s)\n%s"):format(user, r.signal or r.code, out), 2)
  end
  return true
end

--- server:prosodyctl(args...) -> stdout: runs prosodyctl with the server's configuration (also while it
-- runs), e.g. server:prosodyctl("mod_sacm_ccm2", "enroll", "web1@" .. server.domain). Raises when it fails.
function Server:prosodyctl(...)
  local argv = { self.ctl, "--config", self.config_file, ... }
  local r, err = proc.run(argv, { env = { LUA_PATH = false, LUA_CPATH = false, LUA_INIT = false }, cwd = self.dir, timeout = 20 })
  if not r then error(("server:prosodyctl %s: %s"):format(table.concat({ ... }, " "), tostring(err)), 2) end
  local out = r.stdout .. r.stderr
  if not r.ok or out:find("\nError:") or out:find("^Error:") then
    error(("server:prosodyctl %s: prosodyctl failed (%s)\n%s"):format(table.concat({ ... }, " "), r.signal or r.code, out), 2)
  end
  return r.stdout
end

-- Prosody's file storage names: every non-alphanumeric byte as %xx.
local function storage_encode(s)
  return (s:gsub("%W", function(c) return ("%%%02x"):format(c:byte()) end))
end
local function storage_decode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- server:users() -> sorted list of registered user names (from the data directory).
function Server:users()
  local dir = self.data_dir .. "/" .. storage_encode(self.domain) .. "/accounts"
  local entries = fs.list(dir)
  local users = {}
  for _, e in ipairs(entries or {}) do
    local name = e.name:match("^(.*)%.dat$")
    if name then users[#users + 1] = storage_decode(name) end
  end
  table.sort(users)
  return users
end

---------------------------------------------------------------------------- start
--- prosody.start([opts]) -> server
-- opts: domain ("localhost"), port (default: a free one), admins (users or JIDs allowed to create
-- pubsub nodes; bare names get @domain), users ({name = password}, registered before start),
-- client_certs (SASL EXTERNAL with mod_auth_ccert instead of passwords), allow_registration
-- (in-band registration, default false), modules (replaces M.MODULES), extra_modules,
-- log_level ("info", or SACMRUN_PROSODY_LOG_LEVEL), global_config / host_config / pubsub_config
-- (Lua text added to the global, VirtualHost and pubsub Component sections), start_timeout.
--
-- shipped = true (or the path of another file): the server runs from the shipped configuration
-- examples/servers/prosody.cfg.lua instead of a generated one, with only its deployment values
-- substituted (domain, interface, port, certificate, key and certificate directory, data, log and
-- pid paths) and run_as_root and daemonize added. There pubsub.DOMAIN's only admin is repository@DOMAIN, and
-- accounts come from opts.users. The options that would change the file (admins, modules,
-- extra_modules, allow_registration, client_certs, global_config, host_config, pubsub_config)
-- raise; domain, port, users, log_level and start_timeout work as above.
local SHIPPED_CHANGES = { "admins", "modules", "extra_modules", "allow_registration", "client_certs",
  "global_config", "host_config", "pubsub_config" }

function M.start(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("prosody.start: opts must be a table", 2) end
  local shipped = h.shipped_option(opts, "prosody", SHIPPED_CHANGES, M.SHIPPED_FILE)
  return h.start(Server, function(self)
    local dir, domain = self.dir, opts.domain or "localhost"
    local modules = {}
    for _, m in ipairs(opts.modules or M.MODULES) do modules[#modules + 1] = m end
    for _, m in ipairs(opts.extra_modules or {}) do modules[#modules + 1] = m end
    local posix = false
    for _, m in ipairs(modules) do posix = posix or m == "posix" end

    self.domain = domain
    self.host = "127.0.0.1"
    self.pubsub = "pubsub." .. domain
    self.data_dir = dir .. "/data"
    self.config_file = dir .. "/prosody.cfg.lua"
    self.log_file = dir .. "/prosody.log"
    self.ca_file = dir .. "/certs/ca.crt"
    self.cert_file = dir .. "/certs/server.crt"
    self.key_file = dir .. "/certs/server.key"
    self.client_certs = opts.client_certs and true or false
    self.allow_registration = opts.allow_registration and true or false
    self.admins = opts.admins or {}
    self.modules = modules
    self.log_level = opts.log_level or os.getenv("SACMRUN_PROSODY_LOG_LEVEL") or "info"
    self.global_config = opts.global_config
    self.host_config = opts.host_config
    self.pubsub_config = opts.pubsub_config
    self.start_timeout = opts.start_timeout or M.START_TIMEOUT
    self.stop_grace = M.STOP_GRACE
    self.program = prosody_program()
    self.ctl = prosodyctl_program()
    self.fixed_ports = opts.port ~= nil
    self._posix = posix
    self.shipped_file = shipped
  end, function(self)
    local pair = self:_make_certificates()
    assert(pair.cert == self.cert_file and pair.key == self.key_file)
    if opts.port then self.port = opts.port else self:_pick_ports({}) end
    self:_write_config()
    -- prosodyctl registers into the data directory, before the server runs
    if opts.users then self:_register_all(opts.users) end
    local t0 = time.monotonic()
    self:_start_process()
    self.timings.process = time.monotonic() - t0
  end)
end

return M
