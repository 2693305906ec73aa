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
-- group when the Lua state closes. See docs/testing.md.
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
local core = require "sacm._proc"
local fs = require "sacm.fs"
local task = require "sacm.task"
local sync = require "sacm.sync"
local crypto = require "sacm.crypto"
local time = require "sacm.time"
local shutdown = require "sacm.shutdown"
local certs = require "support.certs"

local M = {}

M.START_TIMEOUT = 10      -- seconds until the c2s port must listen
M.STOP_GRACE = 5          -- seconds between SIGTERM and SIGKILL
M.PORT_RANGE = { 20000, 32767 } -- below Linux's default ephemeral range (32768-60999)
M.MODULES = { "tls", "saslauth", "disco", "roster", "ping", "register", "adhoc", "smacks", "pep", "posix" }
M.CERT_DAYS = 2
local SETPRIV = "/usr/bin/setpriv" -- util-linux (Essential in Debian): --pdeathsig

local function keep_dirs()
  local v = os.getenv("SACMRUN_KEEP_TEST_DIRS")
  return v ~= nil and v ~= "" and v ~= "0"
end

local function note(fmt, ...)
  io.stderr:write("[support.prosody] ", fmt:format(...), "\n")
  io.stderr:flush()
end

-- Runs a program to completion; raises with its output if it cannot start or fails.
local function run(argv, what, opts)
  opts = opts or {}
  if opts.timeout == nil then opts.timeout = 20 end
  local r, err = proc.run(argv, opts)
  if not r then error(("%s: %s"):format(what, tostring(err)), 3) end
  if not r.ok then
    error(("%s: %s exited with %s\n%s%s"):format(what, argv[1], r.signal or r.code, r.stdout, r.stderr), 3)
  end
  return r
end

local function must(ok, err, what)
  if not ok then error(("%s: %s"):format(what, tostring(err)), 3) end
  return ok
end

local function tail(text, lines)
  lines = lines or 30
  local all = {}
  for line in (text or ""):gmatch("[^\n]*\n?") do
    if line ~= "" then all[#all + 1] = line end
  end
  local first = math.max(1, #all - lines + 1)
  return table.concat(all, "", first)
end

local function random_hex(bytes)
  return crypto.hex(crypto.random(bytes))
end

-- A uniformly random integer in [lo, hi] from the CSPRNG: busted seeds math.random with the time,
-- so two runs started in the same second would otherwise try the same ports.
local function random_int(lo, hi)
  local n = string.unpack("<I4", crypto.random(4))
  return lo + n % (hi - lo + 1)
end

---------------------------------------------------------------------------- ports
-- {port = true} for every local TCP port in use (any state, IPv4 and IPv6).
local function used_ports()
  local used = {}
  for _, file in ipairs({ "/proc/net/tcp", "/proc/net/tcp6" }) do
    local text = fs.read(file)
    if text then
      for port in text:gmatch("\n%s*%d+:%s+%x+:(%x+)") do used[tonumber(port, 16)] = true end
    end
  end
  return used
end

-- Whether some socket listens on 127.0.0.1:port (or the wildcard address).
local function listening(port)
  local text = fs.read("/proc/net/tcp")
  if not text then return false end
  for addr, p, state in text:gmatch("\n%s*%d+:%s+(%x+):(%x+)%s+%x+:%x+%s+(%x+)") do
    if state == "0A" and tonumber(p, 16) == port and (addr == "0100007F" or addr == "00000000") then
      return true
    end
  end
  return false
end

local function pick_port(avoid)
  local used = used_ports()
  for _ = 1, 200 do
    local port = random_int(M.PORT_RANGE[1], M.PORT_RANGE[2])
    if not used[port] and not avoid[port] then return port end
  end
  error("support.prosody: no free port found in " .. table.concat(M.PORT_RANGE, "-"))
end

---------------------------------------------------------------------------- certificates
local function make_ca(dir, name, cn)
  return certs.ca(dir, name, cn, M.CERT_DAYS)
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

---------------------------------------------------------------------------- the server
local Server = {}
Server.__index = Server

local function prosody_program()
  return os.getenv("SACMRUN_PROSODY") or "prosody"
end

local function prosodyctl_program()
  local p = os.getenv("SACMRUN_PROSODY")
  if p and p:find("/", 1, true) then return (p:gsub("[^/]*$", "prosodyctl")) end
  return "prosodyctl"
end

-- The environment for prosody and prosodyctl: ours without Lua search paths that were meant for
-- sacmrun (prosody is a lua5.4 script and would pick them up).
local function child_env()
  local vars = core.environ()
  for _, name in ipairs({ "LUA_PATH", "LUA_CPATH", "LUA_PATH_5_4", "LUA_CPATH_5_4", "LUA_INIT", "LUA_INIT_5_4" }) do
    vars[name] = nil
  end
  local env = {}
  for name, value in pairs(vars) do env[#env + 1] = name .. "=" .. value end
  table.sort(env)
  return env
end

function Server:log()
  return fs.read(self.log_file) or ""
end

--- server:log_tail([lines]) -> the last lines of prosody.log (default 30).
function Server:log_tail(lines)
  return tail(self:log(), lines)
end

function Server:running()
  return self._proc ~= nil
end

--- server:jid(user) -> "user@domain"
function Server:jid(user)
  return user .. "@" .. self.domain
end

-- Starts the process and waits for the c2s port. Returns true, or false, reason ("port" when the
-- port was taken, so the caller may pick another) and text.
function Server:_launch(deadline)
  local before = #self:log()
  local exited = sync.event()
  local state = { exited = exited }
  local args = { self.program, "--config", self.config_file, "-F" }
  if self.pdeathsig then
    -- If the spec run dies without a chance to stop it (SIGKILL, a crash), the kernel sends
    -- prosody SIGTERM. setpriv execs prosody: the pid stays the same.
    table.move(args, 1, #args, 5)
    args[1], args[2], args[3], args[4] = self.pdeathsig, "--pdeathsig", "TERM", "--"
  end
  local p, err = core.spawn({
    file = args[1],
    args = args,
    env = child_env(),
    cwd = self.dir,
    max_output = 64 * 1024,
  }, function(raw)
    state.result = raw
    if self._state == state then
      self._proc, self.pid = nil, nil
    end
    if state.p then state.p:close() end
    exited:set()
  end)
  if not p then
    local hint = err.condition == "ENOENT" and " (is it installed? run tools/install-deps.sh)" or ""
    error(("support.prosody: cannot start %s: %s%s"):format(self.program, tostring(err), hint), 0)
  end
  -- the callback runs from the loop, never before spawn returns
  state.p = p
  self._state = state
  self._proc, self.pid = p, p:pid()

  local want = ("Activated service 'c2s' on [127.0.0.1]:%d"):format(self.port)
  local clash = ("Failed to open server port %d on 127.0.0.1"):format(self.port)
  while true do
    local log = self:log():sub(before + 1)
    if state.result then
      local r = state.result
      return false, "exited", ("prosody exited during start-up (%s)\n%s%s%s"):format(
        r.signal and ("signal " .. r.signal) or ("status " .. tostring(r.code)), tail(log), r.stdout, r.stderr)
    end
    if log:find(clash, 1, true) then
      self:_terminate()
      return false, "port", ("port %d is taken\n%s"):format(self.port, tail(log))
    end
    if log:find(want, 1, true) and listening(self.port) and self:_handles_sigterm(state) then return true end
    if time.monotonic() > deadline then
      self:_terminate()
      return false, "timeout", ("prosody did not listen on 127.0.0.1:%d within %gs\n%s"):format(
        self.port, self.start_timeout, tail(log))
    end
    task.sleep(0.005)
  end
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

-- Ends the process: `signal` (default SIGTERM), then SIGKILL after the grace period. Waits for
-- the exit. Returns the exit result, or nil if it was not running.
function Server:_terminate(signal)
  local state = self._state
  if not state or state.result then return state and state.result end
  local p = state.p
  p:kill(signal or "SIGTERM")
  -- a paused server would hold the signal until it runs again
  if self.paused then p:kill("SIGCONT"); self.paused = false end
  if not state.exited:wait(signal == "SIGKILL" and 5 or M.STOP_GRACE) then
    note("prosody (pid %s) ignored %s for %gs: SIGKILL", tostring(self.pid), signal or "SIGTERM", M.STOP_GRACE)
    if not state.result then p:kill("SIGKILL") end
    if not state.exited:wait(5) then
      error(("support.prosody: prosody (pid %s) did not exit after SIGKILL"):format(tostring(self.pid)), 0)
    end
  end
  return state.result
end

function Server:_start_process()
  local deadline = time.monotonic() + self.start_timeout
  local tried = {}
  while true do
    local ok, reason, text = self:_launch(deadline)
    if ok then return end
    if reason == "port" and not self.fixed_port and time.monotonic() < deadline then
      tried[self.port] = true
      self.port = pick_port(tried)
      self:_write_config()
    else
      error("support.prosody: " .. text .. "\n(log: " .. self.log_file .. ")", 0)
    end
  end
end

function Server:_write_config()
  must(fs.write(self.config_file, M._config(self)), nil, "writing " .. self.config_file)
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

--- server:client_cert(jid [, {untrusted = true}]) -> {cert = path, key = path}
-- A client certificate with jid (a string, or a list of JIDs) in subjectAltName otherName
-- id-on-xmppAddr (1.3.6.1.5.5.7.8.5, UTF8String), signed by the test CA, or with untrusted by a
-- second CA the server does not know.
function Server:client_cert(jid, opts)
  opts = opts or {}
  local jids = type(jid) == "table" and jid or { jid }
  if #jids == 0 then error("server:client_cert: no JID", 2) end
  for _, j in ipairs(jids) do
    if type(j) ~= "string" or j == "" then error("server:client_cert: a JID must be a non-empty string", 2) end
  end
  local ca = self._ca
  if opts.untrusted then
    self._untrusted_ca = self._untrusted_ca or make_ca(self.dir .. "/certs", "untrusted-ca", "sacmrun untrusted test CA")
    ca = self._untrusted_ca
  end
  self._client_seq = self._client_seq + 1
  local safe = jids[1]:gsub("[^%w@.-]", "_")
  local pair = certs.client(ca, ("%s/clients/%d-%s"):format(self.dir, self._client_seq, safe),
    { cn = jids[1], xmpp = jids, days = M.CERT_DAYS })
  return pair
end

local function remove_tree(dir)
  run({ "rm", "-rf", "--", dir }, "removing " .. dir)
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
  if keep_dirs() then
    note("kept %s (log: %s)", self.dir, self.log_file)
  else
    remove_tree(self.dir)
  end
end

--- server:kill(): SIGKILL, as a crash; the data stays, restart() brings the server back.
function Server:kill()
  if self.stopped then error("server:kill: the server was stopped", 2) end
  return self:_terminate("SIGKILL")
end

--- server:restart(): stops the process (if it runs) and starts it again on the same port, with the
-- same data, certificates and accounts.
function Server:restart()
  if self.stopped then error("server:restart: the server was stopped", 2) end
  self:_terminate()
  self.fixed_port = true -- clients reconnect to the same address
  self:_start_process()
end

--- server:pause(): SIGSTOP, so its sockets stay open but nothing answers (a hung server, a
-- partition). server:resume() (SIGCONT) lets it run on; stop() and restart() resume it first.
function Server:pause()
  if not self._proc then error("server:pause: the server is not running", 2) end
  local ok, err = self._proc:kill("SIGSTOP")
  must(ok, err, "pausing prosody")
  self.paused = true
end

function Server:resume()
  if not self._proc then error("server:resume: the server is not running", 2) end
  local ok, err = self._proc:kill("SIGCONT")
  must(ok, err, "resuming prosody")
  self.paused = false
end

Server.__close = Server.stop

---------------------------------------------------------------------------- start
--- prosody.start([opts]) -> server
-- opts: domain ("localhost"), port (default: a free one), admins (users or JIDs allowed to create
-- pubsub nodes; bare names get @domain), users ({name = password}, registered before start),
-- client_certs (SASL EXTERNAL with mod_auth_ccert instead of passwords), allow_registration
-- (in-band registration, default false), modules (replaces M.MODULES), extra_modules,
-- log_level ("info", or SACMRUN_PROSODY_LOG_LEVEL), global_config / host_config / pubsub_config
-- (Lua text added to the global, VirtualHost and pubsub Component sections), start_timeout.
function M.start(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("prosody.start: opts must be a table", 2) end
  local started = time.monotonic()
  local base = os.getenv("TMPDIR") or "/tmp"
  if base:sub(1, 1) ~= "/" then error("prosody.start: TMPDIR must be an absolute path", 2) end
  base = base:gsub("/+$", "")
  local dir
  for _ = 1, 10 do
    local candidate = base .. "/sacmrun-prosody-" .. random_hex(6)
    local ok, err = fs.mkdir(candidate, { mode = tonumber("700", 8) })
    if ok then dir = candidate break end
    if err.condition ~= "EEXIST" then error("prosody.start: " .. tostring(err), 2) end
  end
  if not dir then error("prosody.start: could not create a directory in " .. base, 2) end

  local domain = opts.domain or "localhost"
  local modules = {}
  for _, m in ipairs(opts.modules or M.MODULES) do modules[#modules + 1] = m end
  for _, m in ipairs(opts.extra_modules or {}) do modules[#modules + 1] = m end
  local posix = false
  for _, m in ipairs(modules) do posix = posix or m == "posix" end

  local self = setmetatable({
    domain = domain,
    host = "127.0.0.1",
    pubsub = "pubsub." .. domain,
    dir = dir,
    data_dir = dir .. "/data",
    config_file = dir .. "/prosody.cfg.lua",
    log_file = dir .. "/prosody.log",
    ca_file = dir .. "/certs/ca.crt",
    cert_file = dir .. "/certs/server.crt",
    key_file = dir .. "/certs/server.key",
    client_certs = opts.client_certs and true or false,
    allow_registration = opts.allow_registration and true or false,
    admins = opts.admins or {},
    modules = modules,
    log_level = opts.log_level or os.getenv("SACMRUN_PROSODY_LOG_LEVEL") or "info",
    global_config = opts.global_config,
    host_config = opts.host_config,
    pubsub_config = opts.pubsub_config,
    start_timeout = opts.start_timeout or M.START_TIMEOUT,
    program = prosody_program(),
    ctl = prosodyctl_program(),
    fixed_port = opts.port ~= nil,
    _posix = posix,
    _client_seq = 0,
    timings = {},
  }, Server)

  -- From here on, a failure removes what was made (unless asked to keep it).
  local ok, err = pcall(function()
    if fs.exists(SETPRIV) then self.pdeathsig = SETPRIV end
    if keep_dirs() then note("prosody test dir: %s (log: %s)", dir, self.log_file) end
    for _, sub in ipairs({ "certs", "data", "clients" }) do
      must(fs.mkdir(dir .. "/" .. sub, { mode = tonumber("700", 8) }), nil, "creating " .. sub)
    end
    local t0 = time.monotonic()
    self._ca = make_ca(dir .. "/certs", "ca", "sacmrun test CA")
    local pair = certs.server(self._ca, dir .. "/certs/server", { cn = domain, dns = { domain, self.pubsub }, days = M.CERT_DAYS })
    assert(pair.cert == self.cert_file and pair.key == self.key_file)
    self.timings.certificates = time.monotonic() - t0

    self.port = opts.port or pick_port({})
    self:_write_config()
    if opts.users then
      local t1 = time.monotonic()
      local jobs = {}
      for user, password in pairs(opts.users) do
        jobs[#jobs + 1] = task.spawn(function() return self:register(user, password) end)
      end
      for _, r in ipairs(task.all(jobs)) do
        if not r.ok then error(r.err, 0) end
      end
      self.timings.users = time.monotonic() - t1
    end
    self._shutdown_reg = shutdown.on_shutdown(function() self:stop() end)
    local t2 = time.monotonic()
    self:_start_process()
    self.timings.process = time.monotonic() - t2
  end)
  if not ok then
    self.stopped = true
    pcall(Server._terminate, self, "SIGKILL")
    self:_forget()
    if keep_dirs() then
      note("kept %s after a failed start (log: %s)", dir, self.log_file)
    else
      pcall(remove_tree, dir)
      err = tostring(err) .. "\n(removed " .. dir .. "; set SACMRUN_KEEP_TEST_DIRS=1 to keep it)"
    end
    error(err, 2)
  end
  self.timings.start = time.monotonic() - started
  return self
end

return M
