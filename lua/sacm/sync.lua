--- sacm.sync: events and queues for tasks.
-- event: one task sets it, any number wait for it. queue: bounded FIFO between producers and
-- consumers, closable, with timeouts on both ends. Both are for tasks in one runtime; nothing here
-- blocks the loop.
local task = require "sacm.task"
local errors = require "sacm.error"

local M = {}

local TIMEOUT = task.TIMED_OUT
-- What a waiting getter is woken with when the queue closes (a value itself may be false).
local CLOSED = setmetatable({}, { __name = "sacm.sync.closed" })

-- Suspends the running task in `waiters` (a list of tasks) until woken, or until `timeout`
-- seconds pass. Returns the wake value, or TIMEOUT.
local function wait_in(waiters, timeout, what)
  return task.wait_in(waiters, task.current(), timeout, what)
end

-- Wakes the first waiter still waiting; returns it, or nil.
local function wake_first(waiters, value)
  while #waiters > 0 do
    local waiter = table.remove(waiters, 1)
    if task.wake(waiter, value) then return waiter end
  end
end

---------------------------------------------------------------------------- event
---@class sacm.Event
local Event = {}
Event.__index = Event

---@return sacm.Event event
function M.event()
  return setmetatable({ is_set_ = false, waiters = {} }, Event)
end

--- event:set(): wakes every waiter; later waits return at once until clear().
---(no parameters, no results)
function Event:set()
  self.is_set_ = true
  local waiters = self.waiters
  self.waiters = {}
  for _, waiter in ipairs(waiters) do task.wake(waiter, true) end
end

---(no parameters, no results)
function Event:clear() self.is_set_ = false end
function Event:__tostring()
  return ("event (%s, %d waiting)"):format(self.is_set_ and "set" or "not set", #self.waiters)
end
---@return boolean
function Event:is_set() return self.is_set_ end

--- event:wait([timeout]) -> true, or nil, err (timeout).
---@param timeout? number seconds
---@return true? set
---@return sacm.Error? err timeout
function Event:wait(timeout)
  if self.is_set_ then return true end
  local value = wait_in(self.waiters, timeout, "event:wait")
  if value == TIMEOUT then
    return nil, errors.new("timeout", ("event not set within %gs"):format(timeout))
  end
  return true
end

---------------------------------------------------------------------------- queue
---@class sacm.Queue
---@field max integer? its maxsize
---@field closed boolean?
local Queue = {}
Queue.__index = Queue

--- queue([maxsize]) -> queue. Without maxsize it is unbounded.
---@param maxsize? integer at most this many values queued (unbounded without it)
---@return sacm.Queue queue
function M.queue(maxsize)
  if maxsize ~= nil and (math.type(maxsize) ~= "integer" or maxsize < 1) then
    error("queue size must be a positive integer", 2)
  end
  return setmetatable({
    items = {}, head = 1, tail = 0, max = maxsize,
    getters = {}, putters = {}, closed = false,
  }, Queue)
end

---@return integer count values queued
function Queue:len() return self.tail - self.head + 1 end
Queue.__len = Queue.len
function Queue:__tostring()
  return ("queue (%d items%s%s)"):format(self:len(), self.max and (" of " .. self.max) or "",
    self.closed and ", closed" or "")
end

local function push(self, value)
  self.tail = self.tail + 1
  self.items[self.tail] = value
end

local function pop(self)
  local value = self.items[self.head]
  self.items[self.head] = nil
  self.head = self.head + 1
  if self.head > self.tail then self.head, self.tail = 1, 0 end
  return value
end

--- queue:put(value [, timeout]) -> true, or nil, err (timeout | closed). Waits while full.
---@param value any not nil
---@param timeout? number seconds to wait while full
---@return true? ok
---@return sacm.Error? err timeout | closed
function Queue:put(value, timeout)
  if value == nil then error("a queue cannot hold nil", 2) end
  while true do
    if self.closed then return nil, errors.new("closed", "queue is closed") end
    if #self.getters > 0 and wake_first(self.getters, value) then
      return true
    end
    if not self.max or self:len() < self.max then
      push(self, value)
      return true
    end
    local woke = wait_in(self.putters, timeout, "queue:put")
    if woke == TIMEOUT then
      return nil, errors.new("timeout", ("queue stayed full for %gs"):format(timeout))
    end
  end
end

--- queue:try_put(value) -> true, or false when full or closed. Never waits (usable from any code).
---@param value any not nil
---@return boolean ok false when full or closed
function Queue:try_put(value)
  if value == nil then error("a queue cannot hold nil", 2) end
  if self.closed then return false end
  if #self.getters > 0 and wake_first(self.getters, value) then return true end
  if self.max and self:len() >= self.max then return false end
  push(self, value)
  return true
end

--- queue:get([timeout]) -> value, or nil, err (timeout | closed once drained).
---@param timeout? number seconds
---@return any value nil on failure
---@return sacm.Error? err timeout | closed (once drained)
function Queue:get(timeout)
  if self:len() > 0 then
    local value = pop(self)
    wake_first(self.putters, true)
    return value
  end
  if self.closed then return nil, errors.new("closed", "queue is closed") end
  local woke = wait_in(self.getters, timeout, "queue:get")
  if woke == TIMEOUT then
    return nil, errors.new("timeout", ("nothing arrived within %gs"):format(timeout))
  end
  if woke == CLOSED then return nil, errors.new("closed", "queue is closed") end
  return woke
end

--- queue:close(): no more puts; getters drain what is left, then get nil, closed.
---(no parameters, no results)
function Queue:close()
  if self.closed then return end
  self.closed = true
  for _, waiter in ipairs(self.getters) do task.wake(waiter, CLOSED) end
  for _, waiter in ipairs(self.putters) do task.wake(waiter, false) end
  self.getters, self.putters = {}, {}
end

--- for value in queue:iter() do ... end: until the queue is closed and drained.
---@return fun(): any iterator the next value, nil once closed and drained
function Queue:iter()
  return function()
    local value = self:get()
    return value
  end
end

return M
