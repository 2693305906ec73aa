-- A program on a real pseudo-terminal, driven as a person would drive it: tmux runs the program in
-- a detached session on a private socket, send-keys types, capture-pane reads the screen as it is
-- drawn (escape sequences applied), so a garbled prompt shows up as garbled text.
--
--   local term = terminal.open({ "./sacmrun" }, { env = { XDG_STATE_HOME = dir } })
--   term:type("1 + 1"); term:key("Enter")
--   term:wait_for("\n2\n")           -- the screen, or an error that shows the screen
--   term:key("C-d"); local status = term:wait_exit()
--   term:close()                     -- always (stops the tmux server); idempotent
local proc = require "sacm.proc"
local fs = require "sacm.fs"
local task = require "sacm.task"
local shutdown = require "sacm.shutdown"

local M = {}

local Terminal = {}
Terminal.__index = Terminal

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function tmux(self, ...)
  local argv = { "tmux", "-f", "/dev/null", "-S", self.socket, ... }
  local r, err = proc.run(argv, { timeout = 10 })
  assert(r, tostring(err))
  return r
end

--- open(argv [, opts]) -> terminal. opts.env: extra environment; opts.width/height (100x30).
function M.open(argv, opts)
  opts = opts or {}
  local dir = os.tmpname()
  os.remove(dir)
  assert(fs.mkdir(dir, { mode = tonumber("700", 8) }))
  local self = setmetatable({ dir = dir, socket = dir .. "/tmux.sock", status_file = dir .. "/status" }, Terminal)
  -- The program's environment is spelled out: a tmux server passes on its own, not ours.
  local env = { "env", "INPUTRC=/dev/null", "HOME=" .. dir, "LC_ALL=C.UTF-8" }
  for k, v in pairs(opts.env or {}) do env[#env + 1] = k .. "=" .. v end
  local words = {}
  for _, w in ipairs(env) do words[#words + 1] = quote(w) end
  for _, w in ipairs(argv) do words[#words + 1] = quote(w) end
  -- The shell outlives the program just long enough to write its exit status. Ctrl-C reaches
  -- the shell too: the trap keeps it alive (and, being a trap, not inherited by the program).
  local command = "trap : INT; " .. table.concat(words, " ") .. "; echo $? > " .. quote(self.status_file)
  self.shutdown = shutdown.on_shutdown(function() self:close() end)
  local r = tmux(self, "new-session", "-d", "-x", tostring(opts.width or 100), "-y", tostring(opts.height or 30),
    "sh", "-c", command)
  assert(r.code == 0, "tmux new-session failed: " .. r.stderr)
  return self
end

--- type(text): types text literally (no key names).
function Terminal:type(text)
  tmux(self, "send-keys", "-t", "0", "-l", text)
end

--- key(name, ...): presses keys by tmux name: Enter, Tab, Up, C-c, C-d, C-u.
function Terminal:key(...)
  tmux(self, "send-keys", "-t", "0", ...)
end

--- screen() -> the visible screen, trailing blank lines dropped.
function Terminal:screen()
  local r = tmux(self, "capture-pane", "-p", "-t", "0")
  if r.code ~= 0 then return nil end
  return (r.stdout:gsub("%s+$", ""))
end

--- wait_for(pattern [, timeout [, plain]]) -> screen once pattern (a Lua pattern) is on it.
-- Raises with the screen after timeout seconds (10): a deadline for a hang, not a measurement.
function Terminal:wait_for(pattern, timeout, plain)
  local deadline = os.time() + (timeout or 10)
  local screen
  repeat
    screen = self:screen() or ""
    if screen:find(pattern, 1, plain) then return screen end
    task.sleep(0.05)
  until os.time() > deadline
  error(("terminal: %q did not appear; the screen was:\n%s"):format(pattern, screen), 2)
end

--- count(text) -> how many times text (plain) is on the screen.
function Terminal:count(text)
  local screen, n, at = self:screen() or "", 0, 1
  while true do
    local s, e = screen:find(text, at, true)
    if not s then return n end
    n, at = n + 1, e + 1
  end
end

--- wait_exit([timeout]) -> the program's exit status once it ended.
function Terminal:wait_exit(timeout)
  local deadline = os.time() + (timeout or 10)
  repeat
    local text = fs.read(self.status_file)
    if text and text:match("%d") then return tonumber(text:match("%d+")) end
    task.sleep(0.05)
  until os.time() > deadline
  error("terminal: the program did not exit; the screen was:\n" .. tostring(self:screen()), 2)
end

--- close(): stops the tmux server (and with it the program) and removes the directory.
function Terminal:close()
  if self.closed then return end
  self.closed = true
  proc.run({ "tmux", "-f", "/dev/null", "-S", self.socket, "kill-server" }, { timeout = 10 })
  for _, e in ipairs(fs.list(self.dir) or {}) do fs.remove(self.dir .. "/" .. e.name) end
  fs.remove(self.dir)
  if self.shutdown then self.shutdown.cancel() end
end
Terminal.__close = Terminal.close

return M
