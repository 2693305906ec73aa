--- spec/support/wait.lua: waiting in a spec for something another task or process brings about.
local task = require "sacm.task"
local time = require "sacm.time"

local M = {}

--- wait.until_true(pred [, timeout [, what]]) -> pred's first truthy value. Polls pred every
-- 10 ms (some specs wait for a state that passes, e.g. sessions open at once); raises
-- "<what> not met in time" after timeout seconds (default 10), at the caller.
function M.until_true(pred, timeout, what)
  local deadline = time.monotonic() + (timeout or 10)
  while true do
    local v = pred()
    if v then return v end
    if time.monotonic() > deadline then error((what or "condition") .. " not met in time", 2) end
    task.sleep(0.01)
  end
end

return M
