--- sacm.shutdown: an orderly end. SIGINT, SIGTERM or sacm.exit(code) run the registered
-- handlers (each as a task, all at once, within a grace period), then stop the loop.
-- A second SIGINT exits at once (handled in C, so it works even if Lua is stuck).
local task = require "sacm.task"
local loop = require "sacm._loop"
local errors = require "sacm.error"
local log = require("sacm.log").new("shutdown")

local M = { grace = 5 }

local handlers = {}
local exit_code
local begun = false

--- on_shutdown(fn) -> registration with :cancel(). fn(reason) runs as a task at shutdown.
---@param fn fun(reason: string?)
---@return {cancel: fun()} registration
function M.on_shutdown(fn)
  if type(fn) ~= "function" then error("on_shutdown expects a function", 2) end
  local reg = { fn = fn }
  handlers[#handlers + 1] = reg
  function reg.cancel()
    for i = #handlers, 1, -1 do
      if handlers[i] == reg then table.remove(handlers, i) end
    end
  end
  return reg
end

--- begin(code, reason): starts the shutdown once; later calls only keep the first code.
---@param code integer the exit status
---@param reason? string for the debug log
function M.begin(code, reason)
  if begun then return end
  begun = true
  exit_code = code
  log.debug("shutting down (%s)", reason or "requested")
  local pending = handlers
  handlers = {}
  task._spawn("shutdown", true, function()
    local running = {}
    for i, reg in ipairs(pending) do
      running[i] = task._spawn("shutdown handler", true, reg.fn, reason)
    end
    local results = task.all(running, M.grace)
    for _, r in ipairs(results) do
      if not r.ok then log.warn("shutdown handler: %s", errors.message(r.err)) end
    end
    loop.stop()
  end)
end

---@return integer? code the exit status once shutdown began
function M.exit_code()
  return exit_code
end

---@return boolean
function M.is_shutting_down()
  return begun
end

--- exit([code]): shuts down with this exit status. Inside a task it does not return.
---@param code? integer|boolean true or nil: 0, false: 1
function M.exit(code)
  if code == true or code == nil then code = 0 elseif code == false then code = 1 end
  if math.type(code) ~= "integer" then error("exit code must be an integer or boolean", 2) end
  M.begin(code, "exit requested")
  local t = task.current()
  if t and coroutine.running() == t.co then
    task.suspend()
  end
end

---(no parameters, no results)
function M.install_signal_handler()
  loop.on_signal(function(name, signum)
    if begun then return end
    log.info("%s received, shutting down", name)
    M.begin(128 + signum, name)
  end)
end

return M
