--- sacm.repl: the interactive REPL. `sacmrun` with no script on a terminal, or `sacmrun -i`,
-- runs M.run in the first task. See docs/repl.md.
--
-- Lua semantics are lua.c's: a first line is tried as `return <line>` (an expression prints its
-- values), input is incomplete while the compiler stops at <eof>, and an error prints with its
-- traceback. Each line runs as a task of its own, so waiting calls work and Ctrl-C cancels it;
-- the loop (timers, processes, XMPP) runs the whole time. The terminal itself is sacm._repl (C).
local task = require "sacm.task"
local errors = require "sacm.error"
local shutdown = require "sacm.shutdown"
local pretty = require "sacm.pretty"
local completion = require "sacm._complete"
local fs = require "sacm.fs"
local log = require("sacm.log").new("repl")

local M = {
  prompt = "> ",
  prompt2 = ">> ",
  history_size = 1000,
}

local pack, unpack, concat = table.pack, table.unpack, table.concat

-- What the reading task is woken with besides a line.
local EOF = setmetatable({}, { __name = "sacm.repl.eof" })
local INTERRUPTED = setmetatable({}, { __name = "sacm.repl.interrupted" })

--- history_path() -> the history file, and the directory to create for it (or nil: no history).
-- SACMRUN_HISTORY names the file (empty: none); else $XDG_STATE_HOME/sacmrun/history; else
-- ~/.sacmrun_history.
function M.history_path()
  local explicit = os.getenv("SACMRUN_HISTORY")
  if explicit then
    if explicit == "" then return nil end
    return explicit
  end
  local state = os.getenv("XDG_STATE_HOME")
  if state and state:sub(1, 1) == "/" then -- the spec ignores relative paths
    return state .. "/sacmrun/history", state .. "/sacmrun"
  end
  local home = os.getenv("HOME")
  if home and home ~= "" then return home .. "/.sacmrun_history" end
end

--- compile(buffer, first) -> chunk | nil, "incomplete" | nil, message.
-- A first line is tried as an expression first, as lua.c does.
function M.compile(buffer, first)
  if first then
    local chunk = load("return " .. buffer, "=stdin", "t")
    if chunk then return chunk end
  end
  local chunk, err = load(buffer, "=stdin", "t")
  if chunk then return chunk end
  if err:sub(-5) == "<eof>" then return nil, "incomplete" end
  return nil, err
end

-- The traceback of a failed line, without the runtime's frames below the line's own. The
-- message is always kept, whatever it mentions; a position error(msg, level) gives inside this
-- file (an expression line is a tail call: `return f(x)`) is dropped, as lua.c has none there.
local function failure_text(t)
  local err = t.error
  local text = errors._trim_traceback(t.traceback or errors.message(err))
  if errors.is(err) then
    -- the error object with its fields, in place of its one-line message
    local message = errors.message(err)
    if text:sub(1, #message) == message then text = pretty.format(err) .. text:sub(#message + 1) end
    return text
  end
  return (text:gsub("^[^\n]-sacm/repl%.lua:%d+: ", "", 1))
end

-- Calling through a function result gives the chunk no name, so its traceback line reads
-- "in main chunk", as in lua.c.
local function the(f) return f end
local function run_main(chunk)
  local r = pack(the(chunk)())
  return unpack(r, 1, r.n)
end

-- Lua's print and io.write, sent around the prompt.
local function make_print(write)
  return function(...)
    local n = select("#", ...)
    local parts = {}
    for i = 1, n do parts[i] = tostring((select(i, ...))) end
    write(1, concat(parts, "\t") .. "\n")
  end
end

local function make_io_write(write)
  return function(...)
    local parts = {}
    for i = 1, select("#", ...) do
      local v = select(i, ...)
      if math.type(v) == "integer" then
        v = ("%d"):format(v)
      elseif math.type(v) == "float" then
        v = ("%.14g"):format(v)
      elseif type(v) ~= "string" then
        error(("bad argument #%d to 'write' (string expected, got %s)"):format(i, type(v)), 2)
      end
      parts[i] = v
    end
    write(1, concat(parts))
    return io.stdout
  end
end

--- run([opts]) -> when input ends (Ctrl-D). Must run in a task (the runtime's first task does).
-- opts.exit (default true): begin the runtime's shutdown at the end, as Ctrl-D in sacmrun does.
function M.run(opts)
  opts = opts or {}
  local me = task._require_task("repl.run")
  local core = require "sacm._repl"
  local line_task -- the task of the line that is running, if any
  local interrupted -- Ctrl-C cancelled it

  local function on_line(line)
    task.wake(me, line == nil and EOF or line)
  end
  local function on_interrupt()
    if line_task then
      interrupted = line_task:cancel("interrupted")
    elseif core.cancel_input() then
      task.wake(me, INTERRUPTED)
    end
  end
  local tty = core.start({
    on_line = on_line,
    on_interrupt = on_interrupt,
    complete = function(line, start, finish) return completion.complete(line, start, finish) end,
  })

  local saved_print, saved_io_write = _G.print, io.write
  local our_print, our_io_write = make_print(core.write), make_io_write(core.write)
  _G.print, io.write = our_print, our_io_write -- luacheck: ignore 122 (the REPL owns output)

  local stopped = false
  local function stop()
    if stopped then return end
    stopped = true
    core.stop()
    if _G.print == our_print then _G.print = saved_print end
    if io.write == our_io_write then io.write = saved_io_write end -- luacheck: ignore 122
  end
  -- SIGTERM or sacm.exit while the prompt is out: give the terminal back before the handlers run.
  local registration = shutdown.on_shutdown(stop)

  local history_file, last_entry
  if tty then
    local dir
    history_file, dir = M.history_path()
    if dir then
      local ok, err = fs.mkdir(dir, { parents = true, mode = tonumber("700", 8) })
      if not ok then log.warn("no history: %s", errors.message(err)) history_file = nil end
    end
    if history_file then
      local ok, err = core.load_history(history_file, M.history_size)
      if not ok and err.condition ~= "ENOENT" then log.warn("history not loaded: %s", errors.message(err)) end
    end
  end
  local function remember(line)
    -- a line starting with a space stays out of the history (as bash's ignorespace): for secrets
    if not tty or line:match("^%s*$") or line:sub(1, 1) == " " or line == last_entry then return end
    last_entry = line
    local ok, err = core.add_history(line, history_file, M.history_size)
    if not ok then
      log.warn("history not saved: %s", errors.message(err))
      history_file = nil
    end
  end

  local function read_line(prompt)
    core.read(prompt)
    return task.suspend(function() core.cancel_input() end)
  end

  local function run_chunk(chunk)
    local t = task._spawn("repl", true, run_main, chunk)
    line_task, interrupted = t, false
    pcall(t.await, t)
    line_task = nil
    if t.status == "done" then
      if t.results.n > 0 then core.write(1, pretty.format_values(unpack(t.results, 1, t.results.n)) .. "\n") end
    elseif t.status == "cancelled" then
      -- after the terminal's ^C echo, on a line of its own
      core.write(2, (tty and interrupted and "\n" or "") .. errors.message(t.error) .. "\n")
    else
      core.write(2, failure_text(t) .. "\n")
    end
  end

  local ok, err = pcall(function()
    while true do
      local buffer
      local input = read_line(M.prompt)
      while input ~= EOF and input ~= INTERRUPTED do
        remember(input)
        buffer = buffer and (buffer .. "\n" .. input) or input
        local chunk, why = M.compile(buffer, buffer == input)
        if chunk then
          run_chunk(chunk)
          break
        elseif why ~= "incomplete" then
          core.write(2, why .. "\n")
          break
        end
        input = read_line(M.prompt2)
      end
      if input == EOF then break end
    end
  end)
  if not stopped then core.write(1, "\n") end
  stop()
  registration.cancel()
  if not ok then error(err, 0) end
  if opts.exit ~= false then shutdown.begin(0, "end of input") end
end

return M
