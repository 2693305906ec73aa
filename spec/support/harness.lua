--- spec/support/harness.lua: what the private test servers (spec/support/prosody.lua and
-- spec/support/ejabberd.lua) have in common: free loopback ports, the listeners of a process, and
-- M.Server, the part of a server object that runs, watches and stops its process and owns its
-- private directory. Directories come from support.tmp, certificates from support.certs.
--
-- Waiting calls must run in a task. Failures raise: in test support a server that cannot be set
-- up is a failed test.
local core = require "sacm._proc"
local fs = require "sacm.fs"
local task = require "sacm.task"
local sync = require "sacm.sync"
local crypto = require "sacm.crypto"
local time = require "sacm.time"
local shutdown = require "sacm.shutdown"
local certs = require "support.certs"
local tmp = require "support.tmp"

local M = {}

M.PORT_RANGE = { 20000, 32767 } -- below Linux's default ephemeral range (32768-60999)
M.SETPRIV = "/usr/bin/setpriv" -- util-linux (Essential in Debian): --pdeathsig

function M.keep_dirs()
  local v = os.getenv("SACMRUN_KEEP_TEST_DIRS")
  return v ~= nil and v ~= "" and v ~= "0"
end

--- note(tag, fmt, ...): a line on stderr, "[support.TAG] ..."
function M.note(tag, fmt, ...)
  io.stderr:write("[support.", tag, "] ", fmt:format(...), "\n")
  io.stderr:flush()
end

function M.must(ok, err, what)
  if not ok then error(("%s: %s"):format(what, tostring(err)), 2) end
  return ok
end

--- tail(text [, lines]) -> the last lines of text (default 30)
function M.tail(text, lines)
  lines = lines or 30
  local all = {}
  for line in (text or ""):gmatch("[^\n]*\n?") do
    if line ~= "" then all[#all + 1] = line end
  end
  return table.concat(all, "", math.max(1, #all - lines + 1))
end

--- environ(changes) -> this process's environment as a sorted list of "NAME=value", with
-- changes ({NAME = value, or false to leave NAME out}) applied.
function M.environ(changes)
  local vars = core.environ()
  for name, value in pairs(changes) do vars[name] = value or nil end
  local env = {}
  for name, value in pairs(vars) do env[#env + 1] = name .. "=" .. value end
  table.sort(env)
  return env
end

-- From the CSPRNG: busted seeds math.random with the time, so two runs started in the same
-- second would otherwise try the same ports.
local function random_int(lo, hi)
  local n = string.unpack("<I4", crypto.random(4))
  return lo + n % (hi - lo + 1)
end

---------------------------------------------------------------------------- ports
-- {port = true} for every local TCP port in use (any state, IPv4 and IPv6).
function M.used_ports()
  local used = {}
  for _, file in ipairs({ "/proc/net/tcp", "/proc/net/tcp6" }) do
    local text = fs.read(file)
    if text then
      for port in text:gmatch("\n%s*%d+:%s+%x+:(%x+)") do used[tonumber(port, 16)] = true end
    end
  end
  return used
end

--- listening(port) -> whether a socket listens on 127.0.0.1:port (or the IPv4 wildcard)
function M.listening(port)
  local text = fs.read("/proc/net/tcp")
  if not text then return false end
  for addr, p, state in text:gmatch("\n%s*%d+:%s+(%x+):(%x+)%s+%x+:%x+%s+(%x+)") do
    if state == "0A" and tonumber(p, 16) == port and (addr == "0100007F" or addr == "00000000") then
      return true
    end
  end
  return false
end

--- listeners(pid) -> list of {address = "127.0.0.1" | hex, port = n} the process listens on
-- (its socket descriptors matched against /proc/net/tcp and tcp6 by inode).
function M.listeners(pid)
  local fd_dir = "/proc/" .. pid .. "/fd"
  local inodes = {}
  for _, e in ipairs(M.must(fs.list(fd_dir), nil, "listing " .. fd_dir)) do
    -- a descriptor may close between the listing and the readlink
    local target = fs.readlink(fd_dir .. "/" .. e.name)
    local inode = target and target:match("^socket:%[(%d+)%]$")
    if inode then inodes[inode] = true end
  end
  local found = {}
  for _, file in ipairs({ "/proc/net/tcp", "/proc/net/tcp6" }) do
    local text = fs.read(file) or ""
    for line in text:gmatch("[^\n]+") do
      local addr, p, state, inode = line:match("^%s*%d+:%s+(%x+):(%x+)%s+%x+:%x+%s+(%x+)%s+%S+%s+%S+%s+%S+%s+%S+%s+%S+%s+(%d+)")
      if state == "0A" and inodes[inode] then
        found[#found + 1] = { address = addr == "0100007F" and "127.0.0.1" or addr, port = tonumber(p, 16) }
      end
    end
  end
  return found
end

--- pick_port(avoid) -> a port in PORT_RANGE that no socket uses and that is not in avoid
function M.pick_port(avoid)
  local used = M.used_ports()
  for _ = 1, 200 do
    local port = random_int(M.PORT_RANGE[1], M.PORT_RANGE[2])
    if not used[port] and not avoid[port] then return port end
  end
  error("no free port found in " .. table.concat(M.PORT_RANGE, "-"))
end

---------------------------------------------------------------------------- shipped configurations
-- The server configurations shipped to users (examples/servers/) are what the "shipped" mode of
-- the server modules starts, with only the deployment-specific values substituted. The
-- substitution is strict so that file and harness cannot drift apart unnoticed: every expected
-- setting must be found exactly as written, and no other setting may still hold a deployment
-- value (a new certificate path, say, would otherwise make the test server read /etc/sacm).

-- The repository's root, from where this file is (spec/support/harness.lua): the specs run from
-- anywhere, the shipped files are always beside them.
local function repository_root()
  local here = debug.getinfo(1, "S").source:match("^@(.*)$")
  local root = here and (here:match("^(.*)/spec/support/harness%.lua$")
    or (here:match("^spec/support/harness%.lua$") and "."))
  if not root then error("support.harness: cannot tell the repository's root from " .. tostring(here), 0) end
  return root == "" and "/" or root
end

--- shipped_file(name) -> the path of examples/servers/NAME in this repository
function M.shipped_file(name)
  return repository_root() .. "/examples/servers/" .. name
end

local function strip_comment(line, marker)
  -- a comment starts at the marker at the start of the line or after a blank; none of the
  -- shipped settings holds the marker inside a string
  local at = line:find(marker, 1, true)
  while at and at > 1 and not line:sub(at - 1, at - 1):match("%s") do
    at = line:find(marker, at + 1, true)
  end
  return at and line:sub(1, at - 1) or line
end

--- substitute(text, spec) -> text with the rules applied; raises when the file does not match.
-- spec.file: the file's name (for messages); spec.tag: the harness ("prosody"); spec.comment:
-- the comment marker ("--", "#"); spec.rules: list of
--   {what = "the c2s port", from = 'c2s_ports = { 5222 }', to = 'c2s_ports = { 20123 }' [, count = n]}
-- A rule applies to each line whose text after its indentation is `from` (plain, not a pattern),
-- alone or followed by blanks (and a comment); that text becomes `to`, indentation and comment
-- stay. It must apply to exactly `count` lines (default 1). spec.leftovers: plain strings (the
-- shipped deployment values: "grid.example", "/etc/") that no line the rules left alone may
-- hold outside a comment.
function M.substitute(text, spec)
  local lines = {}
  for line in (text .. (text:sub(-1) == "\n" and "" or "\n")):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
  local touched = {}
  local function fail(fmt, ...)
    error(("support.%s: the shipped configuration %s does not match the harness: %s. The harness "
      .. "substitutes the deployment values of that file for the test server's (rules in "
      .. "spec/support/%s.lua); change the file and the rules together."):format(spec.tag, spec.file,
      fmt:format(...), spec.tag), 0)
  end
  for _, rule in ipairs(spec.rules) do
    local found = {}
    for i, line in ipairs(lines) do
      local indent, rest = line:match("^(%s*)(.*)$")
      if rest:sub(1, #rule.from) == rule.from and rest:sub(#rule.from + 1):match("^%s") ~= nil
        or rest == rule.from then
        found[#found + 1] = i
        if touched[i] then fail("line %d is matched by two rules (%s)", i, rule.what) end
        touched[i] = true
        lines[i] = indent .. rule.to .. rest:sub(#rule.from + 1)
      end
    end
    local want = rule.count or 1
    if #found ~= want then
      fail("%d line(s) read `%s` (%s), expected %d%s", #found, rule.from, rule.what, want,
        #found > 0 and (" (lines " .. table.concat(found, ", ") .. ")") or "")
    end
  end
  for i, line in ipairs(lines) do
    if not touched[i] then
      local code = strip_comment(line, spec.comment)
      for _, value in ipairs(spec.leftovers or {}) do
        if code:find(value, 1, true) then
          fail("line %d still holds the deployment value `%s` after substitution: `%s` (add a rule "
            .. "for it)", i, value, line)
        end
      end
    end
  end
  return table.concat(lines, "\n") .. "\n"
end

---------------------------------------------------------------------------- the server process
--- M.Server: the methods a server object inherits. A server class sets
--   NAME          "prosody": the directory prefix, and the tag of messages and errors
--   PORTS         the fields holding its listening ports, the first is `port`: { "port", ... }
--   ABORT_SIGNAL  what ends a start-up that failed (nil: SIGTERM)
--   POLL          seconds between checks while it starts
--   SUBDIRS       the subdirectories of its directory that start() makes (mode 0700)
-- and implements
--   _argv()                 the command line
--   _env()                  the environment (a list, see M.environ)
--   _config()               the text of config_file
--   _ready(log, state)      while starting, with the log written since the launch: true when it
--                           serves, or false, text when a port is taken
-- and may override _exit_reason(log, result) ("port" or "exited": how a start-up exit is read).
-- The object's fields: dir, config_file, log_file, domain, pubsub, start_timeout, stop_grace,
-- pdeathsig; pid while the process runs.
local Server = {}
M.Server = Server
Server.ABORT_SIGNAL = nil
Server.POLL = 0.01

function Server:log() return fs.read(self.log_file) or "" end

--- server:log_tail([lines]) -> the last lines of the log (default 30)
function Server:log_tail(lines) return M.tail(self:log(), lines) end

function Server:running() return self._proc ~= nil end

--- server:jid(user) -> "user@domain"
function Server:jid(user) return user .. "@" .. self.domain end

function Server:_note(fmt, ...) M.note(self.NAME, fmt, ...) end

function Server:_ports()
  local ports = {}
  for i, field in ipairs(self.PORTS) do ports[i] = self[field] end
  return ports
end

-- Gives every port field a free port that is not in `taken`.
function Server:_pick_ports(taken)
  for _, field in ipairs(self.PORTS) do
    self[field] = M.pick_port(taken)
    taken[self[field]] = true
  end
end

function Server:_write_config()
  M.must(fs.write(self.config_file, self:_config()), nil, "writing " .. self.config_file)
end

function Server:_exit_reason() return "exited" end

-- Starts the process, which becomes self._state.p / self.pid until it exits.
function Server:_spawn()
  local state = { exited = sync.event() }
  local args = self:_argv()
  local program = args[1]
  if self.pdeathsig then
    -- If the spec run dies without a chance to stop it (SIGKILL, a crash), the kernel sends the
    -- server SIGTERM. setpriv execs the program, so the pid stays the same.
    table.move(args, 1, #args, 5)
    args[1], args[2], args[3], args[4] = self.pdeathsig, "--pdeathsig", "TERM", "--"
  end
  local p, err = core.spawn({
    file = args[1], args = args, env = self:_env(), cwd = self.dir, max_output = 64 * 1024,
  }, function(raw)
    state.result = raw
    if self._state == state then self._proc, self.pid = nil, nil end
    if state.p then state.p:close() end
    state.exited:set()
  end)
  if not p then
    local hint = err.condition == "ENOENT" and " (is it installed? run tools/install-deps.sh)" or ""
    error(("support.%s: cannot start %s: %s%s"):format(self.NAME, program, tostring(err), hint), 0)
  end
  -- the callback runs from the loop, never before spawn returns
  state.p = p
  self._state = state
  self._proc, self.pid = p, p:pid()
  return state
end

-- Starts the process and waits until it serves. Returns true, or false, reason ("port" when a
-- port was taken, so the caller may pick others; "exited"; "timeout") and text.
function Server:_launch(deadline)
  local before = #self:log()
  local state = self:_spawn()
  while true do
    local log = self:log():sub(before + 1)
    if state.result then
      local r = state.result
      return false, self:_exit_reason(log, r), ("%s exited during start-up (%s)\n%s%s%s"):format(self.NAME,
        r.signal and ("signal " .. r.signal) or ("status " .. tostring(r.code)), M.tail(log), r.stdout, r.stderr)
    end
    local ready, clash = self:_ready(log, state)
    if ready then return true end
    if clash then
      self:_terminate(self.ABORT_SIGNAL)
      return false, "port", clash .. "\n" .. M.tail(log)
    end
    if time.monotonic() > deadline then
      self:_terminate(self.ABORT_SIGNAL)
      return false, "timeout", ("%s did not listen on 127.0.0.1 port %s within %gs\n%s"):format(self.NAME,
        table.concat(self:_ports(), ", "), self.start_timeout, M.tail(log))
    end
    task.sleep(self.POLL)
  end
end

-- Ends the process: `signal` (default SIGTERM), then SIGKILL after stop_grace. Waits for the
-- exit. Returns the exit result, or nil if it was not running.
function Server:_terminate(signal)
  local state = self._state
  if not state or state.result then return state and state.result end
  local p = state.p
  p:kill(signal or "SIGTERM")
  -- a paused server would hold the signal until it runs again
  if self.paused then p:kill("SIGCONT"); self.paused = false end
  if not state.exited:wait(signal == "SIGKILL" and 5 or self.stop_grace) then
    self:_note("%s (pid %s) ignored %s for %gs: SIGKILL", self.NAME, tostring(self.pid), signal or "SIGTERM",
      self.stop_grace)
    if not state.result then p:kill("SIGKILL") end
    if not state.exited:wait(5) then
      error(("support.%s: %s (pid %s) did not exit after SIGKILL"):format(self.NAME, self.NAME, tostring(self.pid)), 0)
    end
  end
  return state.result
end

-- Launches until the server serves; when a port turns out to be taken (and the ports are not
-- fixed), with other ports until start_timeout.
function Server:_start_process()
  local deadline = time.monotonic() + self.start_timeout
  local tried = {}
  while true do
    local ok, reason, text = self:_launch(deadline)
    if ok then return end
    if reason == "port" and not self.fixed_ports and time.monotonic() < deadline then
      for _, port in ipairs(self:_ports()) do tried[port] = true end
      self:_pick_ports(tried)
      self:_write_config()
    else
      error(("support.%s: %s\n(log: %s)"):format(self.NAME, text, self.log_file), 0)
    end
  end
end

-- Makes the test CA (certs/ca.crt) and a server certificate for the domain and its pubsub
-- service (certs/server.crt, .key). Returns the server's {cert, key}.
function Server:_make_certificates()
  local t0 = time.monotonic()
  self._ca = certs.ca(self.dir .. "/certs", "ca", "sacmrun test CA")
  local pair = certs.server(self._ca, self.dir .. "/certs/server", { cn = self.domain, dns = { self.domain, self.pubsub } })
  self.timings.certificates = time.monotonic() - t0
  return pair
end

-- Registers {name = password} with self:register, all at once.
function Server:_register_all(users)
  local t0 = time.monotonic()
  local jobs = {}
  for user, password in pairs(users) do
    jobs[#jobs + 1] = task.spawn(function() return self:register(user, password) end)
  end
  for _, r in ipairs(task.all(jobs)) do
    if not r.ok then error(r.err, 0) end
  end
  self.timings.users = time.monotonic() - t0
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
    self._untrusted_ca = self._untrusted_ca or certs.ca(self.dir .. "/certs", "untrusted-ca", "sacmrun untrusted test CA")
    ca = self._untrusted_ca
  end
  self._client_seq = self._client_seq + 1
  local base = ("%s/clients/%d-%s"):format(self.dir, self._client_seq, (jids[1]:gsub("[^%w@.-]", "_")))
  return certs.client(ca, base, { cn = jids[1], xmpp = jids })
end

--- server:pause() / server:resume(): SIGSTOP / SIGCONT. While paused its sockets stay open and
-- nothing answers (a hung server, a partition). stop(), kill() and restart() resume it first.
local function send_signal(self, signal, what)
  if not self._proc then error(("server:%s: the server is not running"):format(what), 3) end
  local ok, err = self._proc:kill(signal)
  M.must(ok, err, ("%s: %s"):format(what, self.NAME))
end

function Server:pause()
  send_signal(self, "SIGSTOP", "pause")
  self.paused = true
end

function Server:resume()
  send_signal(self, "SIGCONT", "resume")
  self.paused = false
end

function Server:_forget()
  if self._shutdown_reg then
    self._shutdown_reg.cancel()
    self._shutdown_reg = nil
  end
end

--- server:stop(): SIGTERM, wait (SIGKILL after stop_grace), remove the directory (unless
-- SACMRUN_KEEP_TEST_DIRS is set). Idempotent.
function Server:stop()
  if self.stopped then return end
  self.stopped = true
  self:_terminate()
  self:_forget()
  if M.keep_dirs() then
    self:_note("kept %s (log: %s)", self.dir, self.log_file)
  else
    tmp.remove(self.dir)
  end
end

--- server:kill(): SIGKILL, as a crash; the data stays, restart() brings the server back.
function Server:kill()
  if self.stopped then error("server:kill: the server was stopped", 2) end
  return self:_terminate("SIGKILL")
end

--- server:restart(): stops the process (if it runs) and starts it again on the same ports, with
-- the same data and certificates.
function Server:restart()
  if self.stopped then error("server:restart: the server was stopped", 2) end
  self:_terminate()
  self.fixed_ports = true -- clients reconnect to the same address
  self:_start_process()
end

--- shipped_option(opts, name, changes, default) -> the shipped configuration file a start() runs
-- (opts.shipped: true for default, or a path), or nil. Options in `changes` would change the
-- file, so with shipped they raise at the caller of <name>.start.
function M.shipped_option(opts, name, changes, default)
  local shipped = opts.shipped
  if shipped == nil or shipped == false then return nil end
  if shipped ~= true and type(shipped) ~= "string" then
    error(("%s.start: shipped must be true or the path of a configuration file"):format(name), 3)
  end
  for _, option in ipairs(changes) do
    if opts[option] ~= nil then
      error(("%s.start: option %s changes the configuration, but shipped mode runs the shipped file as it is "
        .. "(only its deployment values substituted); drop %s, or start without shipped"):format(name, option, option), 3)
    end
  end
  return shipped == true and default or shipped
end

---------------------------------------------------------------------------- start
--- start(class, init, setup) -> server
-- Makes the private directory $TMPDIR/sacmrun-NAME-XXXXXXXXXXXX and the object (class as its
-- metatable; dir, pdeathsig, timings set), then init(server) sets the class's fields, the
-- subdirectories class.SUBDIRS are made, a shutdown handler that stops the server is registered,
-- and setup(server) makes certificates, config and process. If any of that fails, the process is
-- killed and the directory removed (unless SACMRUN_KEEP_TEST_DIRS is set), and it raises at the
-- level of whoever called the server module's start.
function M.start(class, init, setup)
  local started = time.monotonic()
  local name = class.NAME
  -- `make test-fast` promises no servers: a spec that starts one there lacks its #e2e tag
  if os.getenv("SACMRUN_TEST_LAYER") == "fast" then
    local where = "this spec"
    for level = 2, 20 do
      local info = debug.getinfo(level, "Sl")
      if not info then break end
      if info.short_src:match("_spec%.lua$") then where = info.short_src .. ":" .. info.currentline break end
    end
    error(("%s.start in the fast layer (make test-fast) from %s: tag its describe #e2e "
      .. "(docs/testing.md)"):format(name, where), 0)
  end
  local ok_dir, dir = pcall(tmp.dir, name)
  if not ok_dir then error(name .. ".start: " .. tostring(dir), 3) end
  local self = setmetatable({
    dir = dir,
    pdeathsig = fs.exists(M.SETPRIV) and M.SETPRIV or nil,
    _client_seq = 0,
    timings = {},
  }, class)

  local ok, err = pcall(function()
    init(self)
    if M.keep_dirs() then self:_note("%s test dir: %s (log: %s)", name, dir, self.log_file) end
    for _, sub in ipairs(class.SUBDIRS) do
      M.must(fs.mkdir(dir .. "/" .. sub, { mode = tonumber("700", 8) }), nil, "creating " .. sub)
    end
    self._shutdown_reg = shutdown.on_shutdown(function() self:stop() end)
    setup(self)
  end)
  if not ok then
    self.stopped = true
    pcall(Server._terminate, self, "SIGKILL")
    self:_forget()
    if M.keep_dirs() then
      self:_note("kept %s after a failed start (log: %s)", dir, tostring(self.log_file))
    else
      pcall(tmp.remove, dir)
      err = tostring(err) .. "\n(removed " .. dir .. "; set SACMRUN_KEEP_TEST_DIRS=1 to keep it)"
    end
    error(err, 3)
  end
  self.timings.start = time.monotonic() - started
  return self
end

return M
