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
--
-- Waiting calls (start, register, stop, ...) must run in a task. Errors raise with the log's tail.
--
-- Environment:
--   SACMRUN_KEEP_TEST_DIRS=1           keep the directory after stop() and print where it is
--   SACMRUN_EJABBERD_LOG_LEVEL=debug   ejabberd's loglevel (default info)
--   SACMRUN_EJABBERD_LIBS=/path        ERL_LIBS: where ejabberd-*/ebin is (default: found under /usr/lib)
local core = require "sacm._proc"
local proc = require "sacm.proc"
local fs = require "sacm.fs"
local task = require "sacm.task"
local sync = require "sacm.sync"
local time = require "sacm.time"
local shutdown = require "sacm.shutdown"
local h = require "support.harness"

local M = {}

M.START_TIMEOUT = 20 -- seconds until every listener accepts; the VM alone takes ~1.2 s
M.STOP_GRACE = 10    -- seconds between SIGTERM and SIGKILL; a clean stop takes ~2 s
M.MODULES = { "mod_disco", "mod_ping", "mod_caps", "mod_roster", "mod_adhoc", "mod_stream_mgmt", "mod_http_api", "mod_pubsub" }
M.MAX_ACK_QUEUE = 1000 -- ejabberd's own default is 5000
-- Seconds after which a write is sure to survive SIGKILL: Mnesia's disc_only tables (accounts,
-- pubsub items) lost writes of the last ~1-2 s when the VM was killed (measured on 23.01).
M.DURABILITY_WINDOW = 3

local function note(fmt, ...) h.note("ejabberd", fmt, ...) end

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
    "auth_method: internal",
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

---------------------------------------------------------------------------- the server
local Server = {}
Server.__index = Server

function Server:log() return fs.read(self.log_file) or "" end

--- server:log_tail([lines]) -> the last lines of ejabberd.log (default 30)
function Server:log_tail(lines) return h.tail(self:log(), lines) end

function Server:running() return self._proc ~= nil end

--- server:jid(user) -> "user@domain"
function Server:jid(user) return user .. "@" .. self.domain end

function Server:_env()
  local vars = core.environ()
  vars.EJABBERD_CONFIG_PATH = self.config_file
  vars.EJABBERD_LOG_PATH = self.log_file
  vars.ERL_LIBS = self.erl_libs
  vars.HOME = self.dir -- nothing of the user's (.erlang, .erlang.cookie) is read or written
  vars.ERL_CRASH_DUMP = self.dir .. "/erl_crash.dump"
  local env = {}
  for name, value in pairs(vars) do env[#env + 1] = name .. "=" .. value end
  table.sort(env)
  return env
end

function Server:_ports() return { self.port, self.cert_port, self.http_port } end

-- Starts the VM and waits until every listener accepts. Returns true, or false, reason ("port"
-- when a port was taken, so the caller may pick others) and text.
function Server:_launch(deadline)
  local before = #self:log()
  local exited = sync.event()
  local state = { exited = exited }
  -- No -sname/-name: the VM starts without distribution, so no epmd and no open node port.
  local args = { "erl", "-noshell", "-noinput", "-mnesia", "dir", '"' .. self.spool_dir .. '"', "-s", "ejabberd" }
  if self.pdeathsig then
    -- erl and erlexec exec beam.smp, keeping the pid and the parent-death signal
    table.move(args, 1, #args, 5)
    args[1], args[2], args[3], args[4] = self.pdeathsig, "--pdeathsig", "TERM", "--"
  end
  local p, err = core.spawn({
    file = args[1], args = args, env = self:_env(), cwd = self.dir, max_output = 64 * 1024,
  }, function(raw)
    state.result = raw
    if self._state == state then self._proc, self.pid = nil, nil end
    if state.p then state.p:close() end
    exited:set()
  end)
  if not p then
    local hint = err.condition == "ENOENT" and " (is erlang installed? run tools/install-deps.sh)" or ""
    error(("support.ejabberd: cannot start erl: %s%s"):format(tostring(err), hint), 0)
  end
  state.p = p
  self._state = state
  self._proc, self.pid = p, p:pid()

  while true do
    local log = self:log():sub(before + 1)
    if state.result then
      local r = state.result
      local clash = log:find("eaddrinuse", 1, true) or (r.stdout .. r.stderr):find("eaddrinuse", 1, true)
      return false, clash and "port" or "exited", ("ejabberd exited during start-up (%s)\n%s%s%s"):format(
        r.signal and ("signal " .. r.signal) or ("status " .. tostring(r.code)), h.tail(log), r.stdout, r.stderr)
    end
    if log:find("is started in the node", 1, true) then
      local all = true
      for _, port in ipairs(self:_ports()) do
        all = all and log:find(("Start accepting TCP connections at 127.0.0.1:%d for"):format(port), 1, true)
          and h.listening(port)
      end
      if all then return true end
      if log:find("eaddrinuse", 1, true) then
        self:_terminate("SIGKILL")
        return false, "port", "a port is taken\n" .. h.tail(log)
      end
    end
    if time.monotonic() > deadline then
      self:_terminate("SIGKILL")
      return false, "timeout", ("ejabberd did not listen on 127.0.0.1 ports %s within %gs\n%s"):format(
        table.concat(self:_ports(), ", "), self.start_timeout, h.tail(log))
    end
    task.sleep(0.01)
  end
end

-- Ends the VM: `signal` (default SIGTERM), then SIGKILL after the grace period. Waits for the
-- exit. Returns the exit result, or nil if it was not running.
function Server:_terminate(signal)
  local state = self._state
  if not state or state.result then return state and state.result end
  local p = state.p
  p:kill(signal or "SIGTERM")
  -- a paused VM would hold the signal until it runs again
  if self.paused then p:kill("SIGCONT"); self.paused = false end
  if not state.exited:wait(signal == "SIGKILL" and 5 or M.STOP_GRACE) then
    note("ejabberd (pid %s) ignored %s for %gs: SIGKILL", tostring(self.pid), signal or "SIGTERM", M.STOP_GRACE)
    if not state.result then p:kill("SIGKILL") end
    if not state.exited:wait(5) then
      error(("support.ejabberd: ejabberd (pid %s) did not exit after SIGKILL"):format(tostring(self.pid)), 0)
    end
  end
  return state.result
end

function Server:_write_config()
  h.must(fs.write(self.config_file, M._config(self)), nil, "writing " .. self.config_file)
end

function Server:_start_process()
  local deadline = time.monotonic() + self.start_timeout
  local tried = {}
  while true do
    local ok, reason, text = self:_launch(deadline)
    if ok then return end
    if reason == "port" and not self.fixed_ports and time.monotonic() < deadline then
      for _, port in ipairs(self:_ports()) do tried[port] = true end
      self.port = h.pick_port(tried); tried[self.port] = true
      self.cert_port = h.pick_port(tried); tried[self.cert_port] = true
      self.http_port = h.pick_port(tried)
      self:_write_config()
    else
      error("support.ejabberd: " .. text .. "\n(log: " .. self.log_file .. ")", 0)
    end
  end
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

--- server:client_cert(jid [, {untrusted = true}]) -> {cert = path, key = path}
-- jid is a string or a list of JIDs for subjectAltName otherName id-on-xmppAddr; signed by the
-- test CA, or with untrusted by a second CA the server does not know. Log in at server.cert_port.
function Server:client_cert(jid, opts)
  opts = opts or {}
  local jids = type(jid) == "table" and jid or { jid }
  if #jids == 0 then error("server:client_cert: no JID", 2) end
  for _, j in ipairs(jids) do
    if type(j) ~= "string" or j == "" then error("server:client_cert: a JID must be a non-empty string", 2) end
  end
  local ca = self._ca
  if opts.untrusted then
    self._untrusted_ca = self._untrusted_ca or h.make_ca(self.dir .. "/certs", "untrusted-ca", "sacmrun untrusted test CA")
    ca = self._untrusted_ca
  end
  self._client_seq = self._client_seq + 1
  local base = ("%s/clients/%d-%s"):format(self.dir, self._client_seq, (jids[1]:gsub("[^%w@.-]", "_")))
  return h.client_cert(base, ca, jids)
end

--- server:pause() / server:resume(): SIGSTOP / SIGCONT. While paused its sockets stay open
-- and nothing answers (a hung server). stop(), kill() and restart() resume it first.
function Server:pause()
  if not self._proc then error("server:pause: the server is not running", 2) end
  local ok, err = self._proc:kill("SIGSTOP")
  h.must(ok, err, "pausing ejabberd")
  self.paused = true
end

function Server:resume()
  if not self._proc then error("server:resume: the server is not running", 2) end
  local ok, err = self._proc:kill("SIGCONT")
  h.must(ok, err, "resuming ejabberd")
  self.paused = false
end

function Server:_forget()
  if self._shutdown_reg then
    self._shutdown_reg.cancel()
    self._shutdown_reg = nil
  end
end

--- server:stop(): SIGTERM, wait (SIGKILL after STOP_GRACE), remove the directory (unless
-- SACMRUN_KEEP_TEST_DIRS is set). Idempotent.
function Server:stop()
  if self.stopped then return end
  self.stopped = true
  self:_terminate()
  self:_forget()
  if h.keep_dirs() then
    note("kept %s (log: %s)", self.dir, self.log_file)
  else
    h.remove_tree(self.dir)
  end
end

--- server:kill(): SIGKILL, as a crash; the data stays, restart() brings the server back.
function Server:kill()
  if self.stopped then error("server:kill: the server was stopped", 2) end
  return self:_terminate("SIGKILL")
end

--- server:restart(): stops the VM (if it runs) and starts it again on the same ports, with the
-- same database (accounts, pubsub nodes and items) and certificates.
function Server:restart()
  if self.stopped then error("server:restart: the server was stopped", 2) end
  self:_terminate()
  self.fixed_ports = true -- clients reconnect to the same address
  self:_start_process()
end

Server.__close = Server.stop

---------------------------------------------------------------------------- start
--- ejabberd.start([opts]) -> server
-- opts: domain ("localhost"), users ({name = password}, registered once it runs), modules
-- (replaces M.MODULES), max_ack_queue (XEP-0198: unacknowledged stanzas before ejabberd closes
-- the stream; default M.MAX_ACK_QUEUE), log_level ("info", or SACMRUN_EJABBERD_LOG_LEVEL),
-- extra_config (YAML text appended at the top level), start_timeout.
function M.start(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("ejabberd.start: opts must be a table", 2) end
  local started = time.monotonic()
  local ok_dir, dir = pcall(h.private_dir, "sacmrun-ejabberd")
  if not ok_dir then error("ejabberd.start: " .. tostring(dir), 2) end
  -- the Mnesia directory goes to Erlang as a quoted string term
  if dir:find('["\\%c]') then error("ejabberd.start: unusable directory name " .. dir, 2) end
  local domain = opts.domain or "localhost"

  local self = setmetatable({
    domain = domain,
    host = "127.0.0.1",
    pubsub = "pubsub." .. domain,
    dir = dir,
    spool_dir = dir .. "/spool",
    config_file = dir .. "/ejabberd.yml",
    log_file = dir .. "/log/ejabberd.log",
    ca_file = dir .. "/certs/ca.crt",
    pem_file = dir .. "/certs/server.pem",
    modules = opts.modules or M.MODULES,
    max_ack_queue = opts.max_ack_queue or M.MAX_ACK_QUEUE,
    log_level = opts.log_level or os.getenv("SACMRUN_EJABBERD_LOG_LEVEL") or "info",
    extra_config = opts.extra_config,
    start_timeout = opts.start_timeout or M.START_TIMEOUT,
    _client_seq = 0,
    timings = {},
  }, Server)
  if not self.log_level:match("^%a+$") then error("ejabberd.start: bad log_level", 2) end

  -- From here on, a failure removes what was made (unless asked to keep it).
  local ok, err = pcall(function()
    self.erl_libs = erl_libs()
    if fs.exists(h.SETPRIV) then self.pdeathsig = h.SETPRIV end
    if h.keep_dirs() then note("ejabberd test dir: %s (log: %s)", dir, self.log_file) end
    for _, sub in ipairs({ "certs", "spool", "log", "clients" }) do
      h.must(fs.mkdir(dir .. "/" .. sub, { mode = tonumber("700", 8) }), nil, "creating " .. sub)
    end
    local t0 = time.monotonic()
    self._ca = h.make_ca(dir .. "/certs", "ca", "sacmrun test CA")
    local pair = h.server_cert(dir .. "/certs", self._ca, { domain, self.pubsub })
    -- ejabberd takes the certificate and its key from one file
    h.must(fs.write(self.pem_file, h.must(fs.read(pair.cert), nil, "reading " .. pair.cert)
      .. h.must(fs.read(pair.key), nil, "reading " .. pair.key), { mode = tonumber("600", 8) }), nil,
      "writing " .. self.pem_file)
    self.timings.certificates = time.monotonic() - t0

    local taken = {}
    self.port = h.pick_port(taken); taken[self.port] = true
    self.cert_port = h.pick_port(taken); taken[self.cert_port] = true
    self.http_port = h.pick_port(taken)
    self:_write_config()
    self._shutdown_reg = shutdown.on_shutdown(function() self:stop() end)
    local t1 = time.monotonic()
    self:_start_process()
    self.timings.process = time.monotonic() - t1
    if opts.users then
      local t2 = time.monotonic()
      local jobs = {}
      for user, password in pairs(opts.users) do
        jobs[#jobs + 1] = task.spawn(function() return self:register(user, password) end)
      end
      for _, r in ipairs(task.all(jobs)) do
        if not r.ok then error(r.err, 0) end
      end
      self.timings.users = time.monotonic() - t2
    end
  end)
  if not ok then
    self.stopped = true
    pcall(Server._terminate, self, "SIGKILL")
    self:_forget()
    if h.keep_dirs() then
      note("kept %s after a failed start (log: %s)", dir, self.log_file)
    else
      pcall(h.remove_tree, dir)
      err = tostring(err) .. "\n(removed " .. dir .. "; set SACMRUN_KEEP_TEST_DIRS=1 to keep it)"
    end
    error(err, 2)
  end
  self.timings.start = time.monotonic() - started
  return self
end

return M
