--- sacm.proc: run programs and collect their output without blocking the loop.
--
--   local r, err = proc.run({ "uname", "-r" }, { timeout = 5 })
--   if not r then return nil, err end        -- could not start, or timed out
--   if r.code ~= 0 then ... end              -- a non-zero exit is a result, not an error
--
-- No shell is involved (proc.shell is the exception, by name). Every child gets its own session
-- and process group, so a timeout or a cancellation kills everything it started.
local core = require "sacm._proc"
local task = require "sacm.task"
local errors = require "sacm.error"
local loop = require "sacm._loop"
local new_timer = require("sacm._timer").new

local M = {}

M.DEFAULT_MAX_OUTPUT = 1024 * 1024
M.DEFAULT_KILL_GRACE = 0.5
-- After SIGKILL, how long the pipes may stay open (held by something that left the process
-- group) before the result is delivered without waiting for them.
local ABANDON_AFTER = 0.5

local signal_names = {}
for name, number in pairs(core.signals) do signal_names[number] = name end

--- signal_name(n) -> "SIGTERM", or nil for an unknown number.
---@param n integer
---@return string? name
function M.signal_name(n)
  return signal_names[n]
end

local function check_argv(argv, level)
  if type(argv) ~= "table" then
    error(("proc.run: argv must be a table of strings, got %s"):format(type(argv)), level)
  end
  local n = #argv
  if n == 0 then error("proc.run: argv must name a program (argv[1])", level) end
  local args = {}
  for i = 1, n do
    local a = argv[i]
    if type(a) == "number" then a = tostring(a) end
    if type(a) ~= "string" then
      error(("proc.run: argv[%d] must be a string, got %s"):format(i, type(a)), level)
    end
    if a:find("\0", 1, true) then error(("proc.run: argv[%d] contains a NUL byte"):format(i), level) end
    args[i] = a
  end
  if args[1] == "" then error("proc.run: argv[1] (the program) is empty", level) end
  return args
end

local function check_type(opts, key, want, level)
  local v = opts[key]
  if v ~= nil and type(v) ~= want then
    error(("proc.run: opts.%s must be a %s, got %s"):format(key, want, type(v)), level)
  end
  return v
end

local function check_seconds(opts, key, level)
  local v = opts[key]
  if v ~= nil and (type(v) ~= "number" or v ~= v or v < 0) then
    error(("proc.run: opts.%s must be a non-negative number of seconds, got %s"):format(key, tostring(v)), level)
  end
  return v
end

-- The child's environment as an array of "K=V", or nil to inherit ours unchanged.
local function build_env(opts, level)
  local overrides = opts.env
  if overrides ~= nil and type(overrides) ~= "table" then
    error(("proc.run: opts.env must be a table of name = string|false, got %s"):format(type(overrides)), level)
  end
  if overrides == nil and not opts.clear_env then return nil end
  local vars = opts.clear_env and {} or core.environ()
  for name, value in pairs(overrides or {}) do
    if type(name) ~= "string" or name == "" or name:find("[=\0]") then
      error(("proc.run: opts.env has an invalid variable name %q"):format(tostring(name)), level)
    end
    if value == false then
      vars[name] = nil
    else
      if type(value) == "number" then value = tostring(value) end
      if type(value) ~= "string" then
        error(("proc.run: opts.env.%s must be a string or false, got %s"):format(name, type(value)), level)
      end
      if value:find("\0", 1, true) then
        error(("proc.run: opts.env.%s contains a NUL byte"):format(name), level)
      end
      vars[name] = value
    end
  end
  local names = {}
  for name in pairs(vars) do names[#names + 1] = name end
  table.sort(names)
  local env = {}
  for i, name in ipairs(names) do env[i] = name .. "=" .. vars[name] end
  return env
end

local function shape_result(raw, started)
  return {
    code = raw.code,
    signal = raw.signal and (signal_names[raw.signal] or ("SIG" .. raw.signal)) or nil,
    ok = raw.code == 0,
    stdout = raw.stdout,
    stderr = raw.stderr,
    truncated = { stdout = raw.stdout_truncated, stderr = raw.stderr_truncated },
    pid = raw.pid,
    duration = (loop.hrtime() - started) / 1e9,
  }
end

-- Errors raised by the helpers below name the caller of run/shell: helper (1), run (2),
-- M.run or M.shell (3), the user's code (4). run is never tail-called, so these levels hold.
-- The options run and spawn share, checked, as core.spawn's table. level: of the caller's caller.
local function spawn_options(what, argv, opts, level)
  local args = check_argv(argv, level + 1)
  if opts ~= nil and type(opts) ~= "table" then
    error(("%s: opts must be a table, got %s"):format(what, type(opts)), level)
  end
  opts = opts or {}
  local max_output = opts.max_output or M.DEFAULT_MAX_OUTPUT
  if math.type(max_output) ~= "integer" or max_output < 0 then
    error(("%s: opts.max_output must be a non-negative integer, got %s"):format(what, tostring(opts.max_output)),
      level)
  end
  return {
    file = args[1], args = args, env = build_env(opts, level + 1), max_output = max_output,
    cwd = check_type(opts, "cwd", "string", level + 1), stdin = check_type(opts, "stdin", "string", level + 1),
  }, opts
end

local function run(argv, opts)
  local level = 4
  local spawn_opts
  spawn_opts, opts = spawn_options("proc.run", argv, opts, 4)
  local args = spawn_opts.args
  local timeout = check_seconds(opts, "timeout", level)
  local grace = check_seconds(opts, "kill_grace", level) or M.DEFAULT_KILL_GRACE
  local me = task._require_task("proc.run", level)

  local waiting = true
  local started = loop.hrtime()
  local p, err = core.spawn(spawn_opts, function(raw)
    if waiting then task.wake(me, raw) end
  end)
  if not p then return nil, err end

  local timer, timed_out
  if timeout then
    timer = new_timer()
    -- SIGTERM to the group at the deadline, SIGKILL after the grace period, and finally stop
    -- waiting for pipes that something outside the group keeps open.
    timer:start(task._seconds_to_ms(timeout, "timeout") or math.maxinteger, 0, function()
      timed_out = true
      p:kill("SIGTERM")
      timer:start(task._seconds_to_ms(grace, "kill_grace") or math.maxinteger, 0, function()
        p:kill("SIGKILL")
        timer:start(math.floor(ABANDON_AFTER * 1000), 0, function() p:abandon() end)
      end)
    end)
  end

  local function cleanup()
    waiting = false
    if timer then timer:close() end
    p:close() -- kills the group if the child is still running
  end
  -- pcall: a cancel that lands after the result was delivered (task woken, not yet resumed)
  -- skips on_cancel, and the timer must still be stopped.
  local ok, raw = pcall(task.suspend, cleanup)
  cleanup()
  if not ok then error(raw, 0) end

  local result = shape_result(raw, started)
  if timed_out then
    return nil, errors.new("timeout", ("%s did not finish within %gs and was killed"):format(args[1], timeout),
      { result = result })
  end
  return result
end

--- run(argv [, opts]) -> result | nil, err. Yields the running task until the program is done.
-- argv = {"program", "arg", ...}; a program without a slash is searched in PATH.
-- opts: env (name -> string, or false to unset; merged over the current environment),
-- clear_env, cwd, stdin (string; default /dev/null), timeout (seconds), max_output (bytes kept per
-- stream, default 1 MiB), kill_grace (seconds between SIGTERM and SIGKILL on timeout, default 0.5).
-- result = {code, signal, ok, stdout, stderr, truncated = {stdout, stderr}, pid, duration}.
-- err.condition: ENOENT/EACCES/... when the program could not start, or "timeout" (err.result
-- holds what was read before the kill).
---@param argv string[]
---@param opts? table cwd, env, stdin, timeout, max_output
---@return table? result code, signal, ok, stdout, stderr, truncated, pid, duration
---@return sacm.Error? err
function M.run(argv, opts)
  local result, err = run(argv, opts)
  return result, err
end

---@class sacm.Process
---@field pid integer
---@field argv string[]
---@field result table? run()'s result once it exited
local Process = {}
Process.__index = Process

--- spawn(argv [, opts]) -> process | nil, err. Starts a program that runs alongside the caller
-- (a service, a grid role) instead of waiting for it. opts as for run, except timeout.
-- process.pid; process:kill([signal]) signals its process group (default SIGTERM);
-- process:wait([timeout]) -> the result of run() once it exits, or nil, err (timeout);
-- process:stop([grace]) -> result: SIGTERM, then SIGKILL after grace seconds (default 5);
-- process:close() (also <close>): kills the group if it still runs.
-- Output is captured as for run (opts.max_output per stream, the rest dropped).
---@param argv string[]
---@param opts? table
---@return sacm.Process? process
---@return sacm.Error? err
function M.spawn(argv, opts)
  local spawn_opts = spawn_options("proc.spawn", argv, opts, 3)
  local self = setmetatable({ argv = spawn_opts.args, exited = require("sacm.sync").event() }, Process)
  local started = loop.hrtime()
  local p, err = core.spawn(spawn_opts, function(raw)
    self.result = shape_result(raw, started)
    self:close() -- nothing left to signal; frees the handles
    self.exited:set()
  end)
  if not p then return nil, err end
  self.handle, self.pid = p, p:pid()
  return self
end

---@param signal? string|integer default "SIGTERM"
---@return boolean? sent false when it already exited
---@return sacm.Error? err the signal could not be sent
function Process:kill(signal)
  if self.result or not self.handle then return false end
  return self.handle:kill(signal or "SIGTERM")
end

---@param timeout? number seconds
---@return table? result as proc.run's
---@return sacm.Error? err timeout
function Process:wait(timeout)
  local ok, err = self.exited:wait(timeout)
  if not ok then return nil, err end
  return self.result
end

---@param grace? number seconds between SIGTERM and SIGKILL (5)
---@return table result as proc.run's
function Process:stop(grace)
  if self.result then return self.result end
  self:kill("SIGTERM")
  local r = self:wait(grace or 5)
  if r then return r end
  self:kill("SIGKILL")
  r = self:wait(ABANDON_AFTER + 1)
  if r then return r end
  self.handle:abandon()
  return self:wait()
end

---(no parameters, no results)
function Process:close()
  if self.handle then
    self.handle:close()
    self.handle = nil
  end
end
Process.__close = errors.closer(Process.close)

function Process:__tostring()
  return ("process %s (pid %s)"):format(self.argv[1], tostring(self.pid))
end

--- shell(cmd [, opts]): run({"/bin/sh", "-c", cmd}, opts).
---@param cmd string
---@param opts? table as for run
---@return table? result
---@return sacm.Error? err
function M.shell(cmd, opts)
  if type(cmd) ~= "string" then
    error(("proc.shell: cmd must be a string, got %s"):format(type(cmd)), 2)
  end
  local result, err = run({ "/bin/sh", "-c", cmd }, opts)
  return result, err
end

return M
