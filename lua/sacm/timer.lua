--- sacm.timer: one-shot and repeating timers whose callbacks run as tasks.
-- local t = timer.every(60, collect) ... t:cancel()
local task = require "sacm.task"
local new_timer = require("sacm._timer").new

local M = {}
---@class sacm.Timer
---@field name string
---@field fired integer how many times it fired
---@field skipped integer? ticks skipped while a run was still going
local Timer = {}
Timer.__index = Timer
Timer.__fields = { name = true, fired = true, skipped = true }

local function start(seconds, period, fn, opts)
  if type(fn) ~= "function" then error("timer callback must be a function", 3) end
  local ms = task._seconds_to_ms(seconds, "timer delay") or math.maxinteger
  local period_ms = period and task._seconds_to_ms(period, "timer period") or 0
  if period and period_ms == 0 then error("a repeating timer needs a period above zero", 3) end
  opts = opts or {}
  local self = setmetatable({ fired = 0, name = opts.name or "timer" }, Timer)
  local handle = new_timer()
  self.handle = handle
  handle:start(ms, period_ms, function()
    self.fired = self.fired + 1
    if not period then self:cancel() end
    -- A repeating timer skips a tick while the previous run is still going, so slow work
    -- (a collection that takes longer than its period) never piles up.
    if self.running and not self.running:done() then
      self.skipped = (self.skipped or 0) + 1
      return
    end
    self.running = task.spawn({ name = self.name }, fn, self)
  end)
  if opts.background then handle:unref() end
  return self
end

--- after(seconds, fn [, opts]) -> timer. fn(timer) runs once, as its own task.
---@param seconds number
---@param fn fun(timer: sacm.Timer)
---@param opts? {background?: boolean}
---@return sacm.Timer timer
function M.after(seconds, fn, opts)
  return start(seconds, nil, fn, opts)
end

--- every(seconds, fn [, opts]) -> timer. fn(timer) runs every period, as its own task; a tick is
-- skipped while the previous run is still going. opts.first (seconds) sets the first delay
-- (default: one period); opts.background = true lets the program end while it is pending.
---@param seconds number the period
---@param fn fun(timer: sacm.Timer)
---@param opts? {first?: number, background?: boolean}
---@return sacm.Timer timer
function M.every(seconds, fn, opts)
  local first = opts and opts.first or seconds
  return start(first, seconds, fn, opts)
end

--- timer:cancel(): stops it; a run already started goes on.
---(no parameters, no results)
function Timer:cancel()
  if self.handle then
    self.handle:close()
    self.handle = nil
  end
end

function Timer:__tostring()
  return ("timer %s (%s, fired %d times)"):format(self.name, self:active() and "active" or "stopped", self.fired)
end

---@return boolean
function Timer:active()
  return self.handle ~= nil and self.handle:active()
end

Timer.__close = require("sacm.error").closer(Timer.cancel)

return M
