--- sacm._boot: runs the command line's work as the first task and decides the exit status.
-- Called by runtime/main.c; not for playbooks.
local task = require "sacm.task"
local errors = require "sacm.error"
local shutdown = require "sacm.shutdown"
require("sacm._aliases").install() -- the library's old module names keep working for playbooks

local M = {}
local progname = "sacmrun"
local main_task
local status -- nil until something decides it

local function report(msg)
  io.stderr:write(progname, ": ", msg, "\n")
  io.stderr:flush()
end

-- people debug their script, not the boot code that called it: errors._trim_traceback drops the
-- runtime's frames from the bottom of the traceback.
local trim_traceback = errors._trim_traceback

-- error(msg, 2) in a function the main chunk tail-called, or in the chunk itself, names the
-- chunk's caller: that is this file, which says nothing to the script's author (lua.c's caller
-- is C, so its message carries no position there). Drop that position.
local function strip_boot_position(msg)
  return (msg:gsub("^[^\n]-sacm/_boot%.lua:%d+: ", "", 1))
end
-- A script that cannot be loaded is reported by its message alone: a traceback of the loader
-- would only point into the runtime.
local LoadErrorMT = { __tostring = function(e) return e.message end }
local function LoadError(message) return setmetatable({ message = message }, LoadErrorMT) end

local function load_script(path)
  local chunk, err
  if path == "-" then
    chunk, err = load(io.read("a"), "=stdin")
  else
    chunk, err = loadfile(path)
  end
  if not chunk then error(LoadError(err), 0) end
  return chunk
end

local function script_args()
  local args, n = {}, 0
  if arg then
    n = #arg
    for i = 1, n do args[i] = arg[i] end
  end
  return args, n
end

-- Calling through a function result (not a named local) makes tracebacks say "in main chunk",
-- as lua.c's do.
local function the(f) return f end

local function run_actions(actions)
  for _, action in ipairs(actions) do
    local kind, value = action[1], action[2]
    if kind == "e" then
      local chunk, err = load(value, "=(command line)")
      if not chunk then error(LoadError(err), 0) end
      the(chunk)()
    elseif kind == "l" then
      local global, name = value:match("^([^=]+)=(.+)$")
      if not global then global, name = value, value end
      _G[global] = require(name)
    elseif kind == "repl" then
      require("sacm.repl").run()
    elseif kind == "script" then
      local chunk = load_script(value)
      local args, n = script_args()
      the(chunk)(table.unpack(args, 1, n))
    end
  end
end

---@param t sacm.Task
---@return boolean handled
task.on_unhandled_failure = function(t)
  if t ~= main_task then return false end
  if getmetatable(t.error) == LoadErrorMT then
    report(t.error.message)
  else
    report(strip_boot_position(trim_traceback(t.traceback or errors.message(t.error))))
  end
  if status == nil then status = 1 end
  shutdown.begin(status, "the script failed")
  return true
end

function M.start(actions, name)
  progname = name or progname
  _G.sacm = require "sacm"
  shutdown.install_signal_handler()
  main_task = task._spawn("main", false, run_actions, actions)
end

--- The process's exit status once the loop has stopped.
function M.exit_status()
  local requested = shutdown.exit_code()
  if requested then return requested end
  if status then return status end
  if main_task and not main_task:done() then
    report("the script was still waiting when nothing was left that could wake it (main task " ..
      main_task.status .. ")")
    return 1
  end
  return 0
end

return M
