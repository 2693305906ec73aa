--- spec/support/ejabberd.lua: a real, private ejabberd 23.01 on loopback, a second server
-- independent of Prosody for the end-to-end specs.
--
--   local ejabberd = require "support.ejabberd"
--   local server = ejabberd.start({ users = { alice = "secret" } })
--   -- connect to server.host:server.port (passwords) or server.cert_port (client certificates),
--   -- verify TLS against server.ca_file for server.domain; pubsub at server.pubsub
--   server:stop()
--
-- Everything lives in a fresh directory (mode 0700) under $TMPDIR or /tmp: a test CA and server
-- certificate made with openssl, ejabberd.yml, the Mnesia database, the logs. The Erlang VM runs
-- as a child of the spec run in its own process group, without ejabberdctl and without Erlang
-- distribution (so no epmd, no cookie, no port 4369): `erl -noshell -noinput -s ejabberd`.
-- Every listener is on 127.0.0.1: c2s with STARTTLS required (password logins), a second c2s
-- with tls_verify (client certificates, SASL EXTERNAL), and HTTP with mod_http_api only, through
-- which accounts are registered. stop() ends it by pid (SIGTERM, SIGKILL after a grace period)
-- and removes the directory; a forgotten server is stopped by a shutdown handler, and if the
-- spec run dies outright the kernel sends it SIGTERM (setpriv --pdeathsig). See docs/testing.md.
-- What it shares with support.prosody (process, directory, ports, certificates) is in
-- support.harness. With shipped = true the configuration is examples/servers/ejabberd.yml, the
-- one users deploy, with only its deployment values substituted (M._shipped_config).
--
-- Waiting calls (start, register, stop, ...) must run in a task. Errors raise with the log's tail.
--
-- Environment:
--   SACMRUN_KEEP_TEST_DIRS=1           keep the directory after stop() and print where it is
--   SACMRUN_EJABBERD_LOG_LEVEL=debug   ejabberd's loglevel (default info)
--   SACMRUN_EJABBERD_LIBS=/path        ERL_LIBS: where ejabberd-*/ebin is (default: found under /usr/lib)
local proc = require "sacm.proc"
local fs = require "sacm.fs"
local time = require "sacm.time"
local h = require "support.harness"

local M = {}

M.START_TIMEOUT = 20 -- seconds until every listener accepts; the VM alone takes ~1.2 s
M.STOP_GRACE = 10    -- seconds between SIGTERM and SIGKILL; a clean stop takes ~2 s
M.MODULES = { "mod_disco", "mod_ping", "mod_caps", "mod_roster", "mod_adhoc", "mod_stream_mgmt", "mod_http_api", "mod_pubsub" }
M.MAX_ACK_QUEUE = 1000 -- ejabberd's own default is 5000
-- Seconds after which a write is sure to survive SIGKILL: Mnesia's disc_only tables (accounts,
-- pubsub items) lost writes of the last ~1-2 s when the VM was killed (measured on 23.01).
M.DURABILITY_WINDOW = 3

-- The directory holding ejabberd-VERSION/ebin (Debian: /usr/lib/<multiarch triplet>).
local function erl_libs()
  local given = os.getenv("SACMRUN_EJABBERD_LIBS")
  if given and given ~= "" then return given end
  for _, e in ipairs(fs.list("/usr/lib") or {}) do
    if e.name:find("-linux-", 1, true) then
      for _, sub in ipairs(fs.list("/usr/lib/" .. e.name) or {}) do
        if sub.name:match("^ejabberd%-%d") and fs.exists("/usr/lib/" .. e.name .. "/" .. sub.name .. "/ebin") then
          return "/usr/lib/" .. e.name
        end
      end
    end
  end
  error("support.ejabberd: ejabberd is not installed (no /usr/lib/*/ejabberd-*/ebin; run tools/install-deps.sh)", 0)
end

---------------------------------------------------------------------------- config
-- YAML double-quoted scalars: JSON string escaping is valid YAML.
local function y(s)
  return '"' .. tostring(s):gsub('[%c"\\]', function(c)
    return ({ ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\t"] = "\\t" })[c] or ("\\u%04x"):format(c:byte())
  end) .. '"'
end

function M._config(self)
  local lines = {
    "# written by spec/support/ejabberd.lua; see docs/testing.md",
    "hosts: [" .. y(self.domain) .. "]",
    "loglevel: " .. self.log_level,
    "log_rotate_count: 0",
    "certfiles: [" .. y(self.pem_file) .. "]",
    "acme: {auto: false} # never fetch certificates from the network",
    "s2s_access: none    # a private server talks to no other server",
    self.sql and M._sql_keys(self.sql) or "auth_method: internal",
    "auth_password_format: scram",
    "listen:",
    "  - port: " .. self.port,
    "    ip: \"127.0.0.1\"",
    "    module: ejabberd_c2s",
    "    starttls_required: true",
    "  - port: " .. self.cert_port,
    "    ip: \"127.0.0.1\"",
    "    module: ejabberd_c2s",
    "    starttls_required: true",
    "    # SASL EXTERNAL: the client certificate must verify against the test CA and carry the",
    "    # JID in id-on-xmppAddr",
    "    tls_verify: true",
    "    cafile: " .. y(self.ca_file),
    "  - port: " .. self.http_port,
    "    ip: \"127.0.0.1\"",
    "    module: ejabberd_http",
    "    request_handlers:",
    "      /api: mod_http_api",
    "acl:",
    "  loopback:",
    "    ip: [\"127.0.0.0/8\"]",
    "# replaces the defaults: the HTTP API may register accounts from loopback, nothing else",
    "api_permissions:",
    "  \"test harness\":",
    "    from: [mod_http_api]",
    "    who:",
    "      acl: loopback",
    "    what: [\"register\", \"unregister\", \"registered_users\", \"status\"]",
    "modules:",
  }
  for _, m in ipairs(self.modules) do
    if m == "mod_pubsub" then
      lines[#lines + 1] = "  mod_pubsub:"
      lines[#lines + 1] = "    host: " .. y(self.pubsub)
      lines[#lines + 1] = "    plugins: [\"flat\", \"pep\"]"
      if self.sql then lines[#lines + 1] = "    db_type: sql" end
    elseif m == "mod_stream_mgmt" then
      lines[#lines + 1] = "  mod_stream_mgmt:"
      lines[#lines + 1] = "    max_ack_queue: " .. self.max_ack_queue
    else
      lines[#lines + 1] = "  " .. m .. ": {}"
    end
  end
  if self.extra_config then lines[#lines + 1] = self.extra_config end
  return table.concat(lines, "\n") .. "\n"
end

-- Accounts, rosters and pubsub in PostgreSQL (opts.sql = {host, port, database, username}; trust
-- authentication, no password), sessions and routes staying in Mnesia as ejabberd does: the keys
-- ../shared/notes/scale-out.md used, with the new schema (server_host columns).
function M._sql_keys(sql)
  return table.concat({
    "auth_method: sql",
    "sql_type: pgsql",
    "sql_server: " .. y(sql.host),
    "sql_port: " .. math.tointeger(sql.port),
    "sql_database: " .. y(sql.database),
    "sql_username: " .. y(sql.username),
    'sql_password: ""',
    "sql_pool_size: 4",
    "new_sql_schema: true",
    "default_db: sql",
  }, "\n")
end

---------------------------------------------------------------------------- the shipped config
-- examples/servers/ejabberd.yml, the configuration users deploy. shipped mode starts that file
-- with its DEPLOY values replaced by the test server's, and adds nothing: the Mnesia and log
-- paths are not in the file (the command line and EJABBERD_LOG_PATH give them, as ejabberdctl does).
M.SHIPPED_FILE = h.shipped_file("ejabberd.yml")

-- The shipped file's deployment values, each exactly as the file writes it.
M.SHIPPED = {
  domain = "grid.example",
  loglevel = "loglevel: info",
  cert = '- "/etc/sacm/xmpp.crt"',
  key = '- "/etc/sacm/xmpp.key"',
  c2s_port = "- port: 5222",
  cert_port = "- port: 5223",
  http_port = "- port: 5280",
  ip = 'ip: "0.0.0.0"', -- both c2s listeners; the HTTP API's is loopback already
  cafile = 'cafile: "/etc/sacm/grid-ca.pem"',
  ca_file = 'ca_file: "/etc/sacm/grid-ca.pem"',
}

-- What must not survive the substitution in a setting: the shipped domain, system paths, and a
-- listener on every interface.
M.SHIPPED_LEFTOVERS = { "grid.example", "/etc/", "/var/", "/run/", "0.0.0.0", '"::"' }

function M._shipped_config(self)
  local d = M.SHIPPED.domain
  local text, err = fs.read(self.shipped_file)
  h.must(text, err, "support.ejabberd: reading the shipped configuration " .. self.shipped_file)
  local out = h.substitute(text, {
    tag = "ejabberd", file = self.shipped_file, comment = "#", leftovers = M.SHIPPED_LEFTOVERS,
    rules = {
      { what = "the domain", from = "- " .. y(d), to = "- " .. y(self.domain) },
      { what = "the log level", from = M.SHIPPED.loglevel, to = "loglevel: " .. self.log_level },
      { what = "the server certificate", from = M.SHIPPED.cert, to = "- " .. y(self.cert_file) },
      { what = "the server key", from = M.SHIPPED.key, to = "- " .. y(self.key_file) },
      { what = "the c2s port", from = M.SHIPPED.c2s_port, to = "- port: " .. self.port },
      { what = "the client-certificate port", from = M.SHIPPED.cert_port, to = "- port: " .. self.cert_port },
      { what = "the HTTP API port", from = M.SHIPPED.http_port, to = "- port: " .. self.http_port },
      { what = "the c2s listeners' address", from = M.SHIPPED.ip, to = 'ip: "127.0.0.1"', count = 2 },
      { what = "the CA of client certificates", from = M.SHIPPED.cafile, to = "cafile: " .. y(self.ca_file) },
      { what = "the CA of the server certificate", from = M.SHIPPED.ca_file, to = "ca_file: " .. y(self.ca_file) },
      { what = "the repository's acl", from = "user: " .. y("repository@" .. d),
        to = "user: " .. y("repository@" .. self.domain) },
      { what = "the pubsub service", from = "- " .. y("pubsub." .. d), to = "- " .. y(self.pubsub) },
      -- on PostgreSQL: the same file with the SQL keys in place of internal storage
      self.sql and { what = "the authentication backend", from = "auth_method: internal", to = M._sql_keys(self.sql) } or nil,
      self.sql and { what = "the pubsub module", from = "mod_pubsub:", to = "mod_pubsub:\n    db_type: sql" } or nil,
    },
  })
  return ("# %s as shipped, its DEPLOY values substituted by spec/support/ejabberd.lua (shipped mode)\n%s")
    :format(self.shipped_file, out)
end

---------------------------------------------------------------------------- the server
local Server = setmetatable({}, { __index = h.Server })
Server.__index = Server
Server.__close = h.Server.stop
Server.NAME = "ejabberd"
Server.PORTS = { "port", "cert_port", "http_port" }
Server.SUBDIRS = { "certs", "spool", "log", "clients" }
Server.ABORT_SIGNAL = "SIGKILL"
function Server:_config()
  if self.shipped_file then return M._shipped_config(self) end
  return M._config(self)
end

-- No -sname/-name: the VM starts without distribution, so no epmd and no open node port. (erl
-- and erlexec exec beam.smp, keeping the pid and setpriv's parent-death signal.) A cluster node
-- (opts.cluster) is a named node whose distribution listens on 127.0.0.1 only, on its own port,
-- registered with the cluster's private epmd (support.ejabberd_cluster).
function Server:_argv()
  local argv = { "erl", "-noshell", "-noinput" }
  local c = self.cluster
  if c then
    for _, a in ipairs({ "-sname", c.node, "-setcookie", c.cookie, "-kernel", "inet_dist_use_interface", "{127,0,0,1}",
      "inet_dist_listen_min", tostring(self.dist_port), "inet_dist_listen_max", tostring(self.dist_port) }) do
      argv[#argv + 1] = a
    end
  end
  for _, a in ipairs({ "-mnesia", "dir", '"' .. self.spool_dir .. '"', "-s", "ejabberd" }) do argv[#argv + 1] = a end
  return argv
end

function Server:_env()
  return h.environ({
    EJABBERD_CONFIG_PATH = self.config_file,
    EJABBERD_LOG_PATH = self.log_file,
    ERL_LIBS = self.erl_libs,
    HOME = self.dir, -- nothing of the user's (.erlang, .erlang.cookie) is read or written
    ERL_CRASH_DUMP = self.dir .. "/erl_crash.dump",
    ERL_EPMD_PORT = self.cluster and tostring(self.cluster.epmd_port) or false,
    ERL_EPMD_ADDRESS = self.cluster and "127.0.0.1" or false,
    ERL_INETRC = self.cluster and self.cluster.inetrc or false,
  })
end

function Server:_ready(log)
  if not log:find("is started in the node", 1, true) then return false end
  local all = true
  for _, port in ipairs(self:_ports()) do
    all = all and log:find(("Start accepting TCP connections at 127.0.0.1:%d for"):format(port), 1, true)
      and h.listening(port)
  end
  if all then return true end
  if log:find("eaddrinuse", 1, true) then return false, "a port is taken" end
  return false
end

function Server:_exit_reason(log, r)
  local clash = log:find("eaddrinuse", 1, true) or (r.stdout .. r.stderr):find("eaddrinuse", 1, true)
  return clash and "port" or "exited"
end

local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return ({ ['"'] = '\\"', ["\\"] = "\\\\" })[c] or ("\\u%04x"):format(c:byte())
  end) .. '"'
end

--- server:api(command, args) -> the response body: a POST to mod_http_api on loopback (curl).
-- args: {name = string}. Raises unless the server answers 200.
function Server:api(command, args)
  if not command:match("^[%w_]+$") then error("server:api: bad command name " .. tostring(command), 2) end
  local fields = {}
  for k, v in pairs(args or {}) do fields[#fields + 1] = json_string(k) .. ":" .. json_string(v) end
  table.sort(fields)
  local r, err = proc.run({
    "curl", "--silent", "--show-error", "--noproxy", "*", "--max-time", "10",
    "--header", "Content-Type: application/json", "--data-binary", "@-",
    "--write-out", "\n%{http_code}",
    ("http://127.0.0.1:%d/api/%s"):format(self.http_port, command),
  }, { stdin = "{" .. table.concat(fields, ",") .. "}", timeout = 15 })
  if not r then error(("server:api %s: %s"):format(command, tostring(err)), 2) end
  local body, code = r.stdout:match("^(.*)\n(%d+)$")
  if not r.ok or code ~= "200" then
    error(("server:api %s: HTTP %s (curl %s)\n%s%s"):format(command, tostring(code), r.signal or r.code,
      r.stdout, r.stderr), 2)
  end
  return body
end

--- server:register(user, password): creates the account (the server must be running).
function Server:register(user, password)
  if type(user) ~= "string" or type(password) ~= "string" then
    error("server:register(user, password) expects two strings", 2)
  end
  local ok, err = pcall(self.api, self, "register", { user = user, host = self.domain, password = password })
  if not ok then error(("server:register %s: %s"):format(user, tostring(err)), 2) end
  return true
end

--- server:users() -> sorted list of registered user names
function Server:users()
  local body = self:api("registered_users", { host = self.domain })
  local users = {}
  -- a JSON array of strings; localparts cannot contain quotes (RFC 7622)
  for name in body:gmatch('"([^"]*)"') do users[#users + 1] = name end
  table.sort(users)
  return users
end

---------------------------------------------------------------------------- start
--- ejabberd.start([opts]) -> server
-- opts: domain ("localhost"), users ({name = password}, registered once it runs), modules
-- (replaces M.MODULES), max_ack_queue (XEP-0198: unacknowledged stanzas before ejabberd closes
-- the stream; default M.MAX_ACK_QUEUE), log_level ("info", or SACMRUN_EJABBERD_LOG_LEVEL),
-- extra_config (YAML text appended at the top level), start_timeout; cluster ({node = "n1@localhost",
-- cookie, epmd_port, inetrc}: start as a named node of a cluster, see support.ejabberd_cluster),
-- certificates_of (another server: use its CA and server certificate, as the nodes of a cluster
-- serving one domain do), sql ({host, port, database, username}: accounts, rosters and pubsub in
-- that PostgreSQL database, which must hold ejabberd's schema; also in shipped mode, where the
-- file's auth_method and mod_pubsub get the SQL keys).
--
-- shipped = true (or the path of another file): the server runs from the shipped configuration
-- examples/servers/ejabberd.yml instead of a generated one, with only its deployment values
-- substituted (domain, interfaces, ports, certificate, key and CA paths, log level). There only
-- repository@DOMAIN may create pubsub nodes. The options that would change the file (modules,
-- max_ack_queue, extra_config) raise; domain, users, log_level and start_timeout work as above.
local SHIPPED_CHANGES = { "modules", "max_ack_queue", "extra_config" }

function M.start(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("ejabberd.start: opts must be a table", 2) end
  local shipped = h.shipped_option(opts, "ejabberd", SHIPPED_CHANGES, M.SHIPPED_FILE)
  return h.start(Server, function(self)
    local dir, domain = self.dir, opts.domain or "localhost"
    -- the Mnesia directory goes to Erlang as a quoted string term
    if dir:find('["\\%c]') then error("ejabberd.start: unusable directory name " .. dir, 0) end
    self.domain = domain
    self.host = "127.0.0.1"
    self.pubsub = "pubsub." .. domain
    self.spool_dir = dir .. "/spool"
    self.config_file = dir .. "/ejabberd.yml"
    self.log_file = dir .. "/log/ejabberd.log"
    self.ca_file = dir .. "/certs/ca.crt"
    self.pem_file = dir .. "/certs/server.pem"
    -- shipped mode gives ejabberd the certificate and key as two files, as the shipped file does
    self.cert_file = dir .. "/certs/server.crt"
    self.key_file = dir .. "/certs/server.key"
    self.shipped_file = shipped
    self.modules = opts.modules or M.MODULES
    self.max_ack_queue = opts.max_ack_queue or M.MAX_ACK_QUEUE
    self.log_level = opts.log_level or os.getenv("SACMRUN_EJABBERD_LOG_LEVEL") or "info"
    self.extra_config = opts.extra_config
    self.start_timeout = opts.start_timeout or M.START_TIMEOUT
    self.stop_grace = M.STOP_GRACE
    if not self.log_level:match("^%a+$") then error("ejabberd.start: bad log_level", 0) end
    self.erl_libs = erl_libs()
    self.cluster = opts.cluster
    self.sql = opts.sql
  end, function(self)
    local pair
    if opts.certificates_of then
      local other = opts.certificates_of
      for _, f in ipairs({ "ca_file", "cert_file", "key_file" }) do
        h.must(fs.write(self[f], h.must(fs.read(other[f]), nil, "reading " .. other[f]), { mode = tonumber("600", 8) }),
          nil, "writing " .. self[f])
      end
      self._ca = other._ca
      pair = { cert = self.cert_file, key = self.key_file }
    else
      pair = self:_make_certificates()
    end
    assert(pair.cert == self.cert_file and pair.key == self.key_file)
    -- the generated config gives ejabberd the certificate and its key from one file
    h.must(fs.write(self.pem_file, h.must(fs.read(pair.cert), nil, "reading " .. pair.cert)
      .. h.must(fs.read(pair.key), nil, "reading " .. pair.key), { mode = tonumber("600", 8) }), nil,
      "writing " .. self.pem_file)
    self:_pick_ports({})
    if self.cluster then self.dist_port = h.pick_port({ [self.port] = true, [self.cert_port] = true,
      [self.http_port] = true }) end
    self:_write_config()
    local t0 = time.monotonic()
    self:_start_process()
    self.timings.process = time.monotonic() - t0
    -- accounts go through the HTTP API, so the server must run first
    if opts.users then self:_register_all(opts.users) end
  end)
end

return M
