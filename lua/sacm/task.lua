--- sacm.task: tasks are coroutines that wait without blocking the loop.
--
-- A task runs until it waits (sleep, await, a queue, I/O); the wait registers with libuv and the
-- task is resumed from the callback. Tasks made ready by a callback run before control returns to
-- libuv (see dispatch), so a wakeup never waits for another loop iteration.
--
-- Outcomes: a task that returns is "done"; one that raises is "failed" and its error propagates to
-- whoever awaits it (and is logged if nobody is waiting at that moment); one that is cancelled is
-- "cancelled" and awaiting it returns nil plus a `cancelled` error.
local loop = require "sacm._loop"
local new_timer = require("sacm._timer").new
local errors = require "sacm.error"
local log = require("sacm.log").new("task")

local M = {}

---@class sacm.Task
---@field id integer
---@field name string
---@field status "ready"|"running"|"suspended"|"done"|"failed"|"cancelled"
---@field error any what it raised (failed) or the cancelled error
---@field results table? table.pack of what its function returned (done)
---@field traceback string? where it failed
local Task = {}
Task.__index = Task
Task.__fields = { id = true, name = true, status = true, error = true, results = true, traceback = true }
M.Task = Task

local SUSPENDED = setmetatable({}, { __name = "sacm.task.suspended" })
local FINISHED = setmetatable({}, { __name = "sacm.task.finished" })
local CANCEL = setmetatable({}, { __name = "sacm.task.cancel" })

local current -- the task whose coroutine is running, if any
local next_id = 0

-- The ready queue: tasks to resume, with the values to resume them with. Nearly every wake
-- passes one or two values: those are kept in ready_a/ready_b (ready_n says how many) rather
-- than packed in a table per wake; more are packed (ready_n is then -1).
local ready_tasks, ready_n, ready_a, ready_b = {}, {}, {}, {}
local ready_head, ready_tail = 1, 0
local draining = false

local pack, unpack = table.pack, table.unpack
local resume, yield, create, close = coroutine.resume, coroutine.yield, coroutine.create, coroutine.close

local function enqueue(task, n, a, b)
  local i = ready_tail + 1
  ready_tail = i
  ready_tasks[i], ready_n[i], ready_a[i], ready_b[i] = task, n, a, b
end

local function seconds_to_ms(seconds, what)
  if type(seconds) ~= "number" or seconds ~= seconds or seconds < 0 then
    error(("%s must be a non-negative number of seconds, got %s"):format(what, tostring(seconds)), 3)
  end
  if seconds == math.huge then return nil end
  return math.floor(seconds * 1000 + 0.5)
end
M._seconds_to_ms = seconds_to_ms

--- current() -> the running task, or nil outside a task.
---@return sacm.Task? task the running task, nil outside one
function M.current()
  return current
end

local function require_task(what, level)
  local t = current
  if t == nil or coroutine.running() ~= t.co then
    if t ~= nil then
      error(what .. " was called from a coroutine nested inside a task; call it from the task itself", level or 3)
    end
    error(what .. " must be called inside a task (a script, a handler, or a function run with sacm.spawn)", level or 3)
  end
  return t
end
M._require_task = require_task

--- can_wait() -> true when the caller may wait (sleep, iq, await): it runs in a task, on the
-- task's own coroutine. Close handlers use it to fall back to a close that does not wait when
-- they run elsewhere (a __gc, a variable closed outside any task), instead of raising.
---@return boolean
function M.can_wait()
  local t = current
  return t ~= nil and coroutine.running() == t.co and coroutine.isyieldable()
end

local function report_failure(t)
  log.error("task %s failed: %s", t.name, t.traceback or errors.message(t.error))
end

local function settle(t)
  local waiters = t.waiters
  t.waiters = nil
  if waiters then
    for i = 1, #waiters do waiters[i](t) end
  end
  if t.status == "failed" and not waiters and not t.silent and not t.observed then
    if M.on_unhandled_failure and M.on_unhandled_failure(t) then return end
    report_failure(t)
  end
end

-- Tasks waiting for the loop's next turn (yield): resumed together once the loop has polled for
-- I/O (sacm._loop.after_poll). A 0 ms timer would not do: libuv runs a timer started from a timer
-- callback in the same phase, so tasks yielding that way would starve sockets and pipes.
local yielders, yielder_index = {}, {}
local forget_yielder
local function resume_yielders()
  local list = yielders
  yielders, yielder_index = {}, {}
  for _, t in ipairs(list) do
    if t then
      if t.on_cancel == forget_yielder then t.on_cancel, t.on_cancel_arg = nil, nil end
      M.wake(t)
    end
  end
end
function forget_yielder(t)
  local i = yielder_index[t]
  if i then
    yielders[i], yielder_index[t] = false, nil -- a cancelled task stays out; the list keeps its order
  end
end

local function next_turn(t)
  yielders[#yielders + 1] = t
  yielder_index[t] = #yielders
  if #yielders == 1 then loop.after_poll(resume_yielders) end
end

local function bare_yield(t)
  -- A plain coroutine.yield() inside a task: let the loop run once, then continue.
  t.status = "suspended"
  t.on_cancel, t.on_cancel_arg = forget_yielder, t
  next_turn(t)
end

-- A traceback without the scheduler's own frames at the bottom (run_current, worker, and the
-- xpcall that runs the task's function).
local function trim_scheduler_frames(tb)
  while true do
    local cut = tb:find("\n[^\n]*sacm/task%.lua:%d+: in [^\n]*$")
        or tb:find("\n%s*%[C%]: in function 'xpcall'$")
    if not cut then return tb end
    tb = tb:sub(1, cut - 1)
  end
end

local function traceback_of(t, err)
  return trim_scheduler_frames(debug.traceback(t.co, errors.message(err)))
end

-- The message handler of every task's function. It runs where the error was raised, before
-- the task's to-be-closed variables are closed, so it keeps the error and the stack as they
-- were. Those variables are then closed inside the task (their __close may wait, as on a normal
-- exit). If one of them raises while the error unwinds, Lua would let that error replace the
-- original: the task keeps the original and the close failure is logged instead.
local function task_msgh(err)
  local t = current
  if t == nil or coroutine.running() ~= t.co then return err end
  if not t.__raised then
    t.__raised = true
    t.error = err
    t.traceback = trim_scheduler_frames(debug.traceback(errors.message(err), 2))
  else
    log.warn("task %s: a to-be-closed variable failed to close while an error propagated "
      .. "(the original error is kept): %s", t.name, errors.message(err))
  end
  return err
end

-- Task coroutines are pooled: a short task (a stanza handler, a timer callback) reuses the
-- coroutine and stack of one that finished, instead of creating and collecting its own. The
-- task's function runs under xpcall inside the coroutine, so a task that raised leaves it fit
-- for reuse too.
local POOL_LIMIT = 32
local pool, pooled = {}, 0

local function finish_run(t, ok, ...)
  if ok then
    t.results = pack(...)
  elseif not t.__raised then
    -- raised without the message handler (out of memory, or an error in the handler itself)
    t.__raised = true
    t.error = ...
    t.traceback = errors.message((...))
  end
end

-- Runs the current task's function and keeps its results. A function of its own, so that
-- nothing of the task stays referenced from the pooled coroutine's stack afterwards.
local function run_current()
  local t = current
  local fn, args = t.__fn, t.__args
  t.__fn, t.__args = nil, nil
  t.started = true
  finish_run(t, xpcall(fn, task_msgh, unpack(args, 1, args.n)))
end

local function worker()
  while true do
    run_current()
    yield(FINISHED)
  end
end

local function fail(t, err, traceback)
  if errors.is_condition(err, "cancelled") and t.cancelled then
    t.status = "cancelled"
    t.error = err
    t.traceback = nil
  else
    t.status = "failed"
    t.error = err
    t.traceback = traceback
  end
  settle(t)
end

-- Resumes t with n values a, b (n == -1: a is a table.pack of them).
local function step(t, n, a, b)
  if t.cancel_pending then
    t.cancel_pending = nil
    n, a = 1, CANCEL
  end
  local co = t.co
  if co == nil then
    if pooled > 0 then
      co = pool[pooled]
      pool[pooled] = nil
      pooled = pooled - 1
    else
      co = create(worker)
    end
    t.co = co
  end
  local previous = current
  current = t
  t.status = "running"
  local ok, what
  if n == 0 then
    ok, what = resume(co)
  elseif n == 1 then
    ok, what = resume(co, a)
  elseif n == 2 then
    ok, what = resume(co, a, b)
  else
    ok, what = resume(co, unpack(a, 1, a.n))
  end
  current = previous
  if ok then
    if what == SUSPENDED then return end
    if what ~= FINISHED then return bare_yield(t) end
    t.co = nil
    if pooled < POOL_LIMIT then
      pooled = pooled + 1
      pool[pooled] = co
    end
    if t.__raised then
      t.__raised = nil
      return fail(t, t.error, t.traceback)
    end
    t.status = "done"
    return settle(t)
  end
  -- The coroutine itself died: an error outside the task's xpcall (the scheduler's own code).
  local err = what
  local traceback = traceback_of(t, err) -- while the coroutine's stack is still there
  local closed, close_err = close(co)
  if not closed and close_err ~= err then
    log.warn("task %s: closing its coroutine failed (the original error is kept): %s", t.name,
      errors.message(close_err))
  end
  t.__raised = nil
  fail(t, err, traceback)
end

--- Runs every ready task. Called after each callback from the loop.
---(no parameters, no results)
function M.run_ready()
  if draining then return end
  draining = true
  while ready_head <= ready_tail do
    local i = ready_head
    local t, n, a, b = ready_tasks[i], ready_n[i], ready_a[i], ready_b[i]
    ready_tasks[i], ready_a[i], ready_b[i] = nil, nil, nil
    ready_head = i + 1
    if t.status == "ready" then
      local ok, err = xpcall(step, debug.traceback, t, n, a, b)
      if not ok then log.error("scheduler error: %s", err) end
    end
  end
  ready_head, ready_tail = 1, 0
  draining = false
end

local function msgh(err)
  return debug.traceback(errors.message(err), 2)
end

--- The entry point for every libuv callback into Lua (installed in the C core).
local function dispatch(fn, ...)
  local ok, err = xpcall(fn, msgh, ...)
  if not ok then log.error("callback failed: %s", err) end
  M.run_ready()
end
require("sacm._dispatch").set_dispatcher(dispatch)

--- spawn(fn, ...) -> task. fn(...) starts running soon (when the caller waits or returns).
-- opts form: spawn({name = "collect", silent = true}, fn, ...) names the task for logs;
-- silent tasks do not log an unawaited failure.
---@param fn function
---@param ... any arguments for fn
---@return sacm.Task task
function M.spawn(fn, ...)
  local name, silent
  if type(fn) == "table" then
    local opts = fn
    name, silent = opts.name, opts.silent
    fn = ...
    return M._spawn(name, silent, fn, select(2, ...))
  end
  return M._spawn(nil, nil, fn, ...)
end

function M._spawn(name, silent, fn, ...)
  if type(fn) ~= "function" then
    error("spawn expects a function, got " .. type(fn), 3)
  end
  next_id = next_id + 1
  -- the coroutine is taken when the task first runs (step), so a task cancelled before it
  -- started never needs one
  local t = setmetatable({
    id = next_id,
    name = name or ("#" .. next_id),
    silent = silent,
    status = "ready",
    started = false,
    -- what to run, until it starts (double underscore: internal, hidden from REPL completion)
    __fn = fn,
    __args = pack(...),
  }, Task)
  enqueue(t, 0)
  return t
end

--- suspend([on_cancel [, arg]]) -> values passed to wake. The primitive every waiting call is built
-- on: the running task sleeps until wake(task, ...) is called. on_cancel(arg) runs if the task is
-- cancelled while suspended (also when the cancel comes after a wake, before the task resumed);
-- it must undo the wait (stop the timer, forget the waiter) so nothing wakes the task later. arg
-- lets hot paths pass one shared function instead of making a closure per wait.
local function resumed(t, first, ...)
  local cleanup, arg = t.on_cancel, t.on_cancel_arg
  t.on_cancel, t.on_cancel_arg = nil, nil
  if first == CANCEL then
    -- Cancelled after a wake but before resuming: the wait's cleanup has not run yet.
    if cleanup then cleanup(arg) end
    error(t.cancel_error, 0)
  end
  return first, ...
end

---@param on_cancel? fun(arg: any) runs if the task is cancelled while parked
---@param arg? any
---@return any ... what wake passed
function M.suspend(on_cancel, arg)
  local t = require_task("suspend")
  t.status = "suspended"
  t.on_cancel, t.on_cancel_arg = on_cancel, arg
  return resumed(t, yield(SUSPENDED))
end

--- wake(task, ...) -> true if the task was suspended and is now ready to resume with the values.
---@param t sacm.Task
---@param ... any
---@return boolean woken false when t was not parked
function M.wake(t, ...)
  if t.status ~= "suspended" then return false end
  t.status = "ready"
  local n = select("#", ...)
  if n <= 2 then
    enqueue(t, n, ...)
  else
    enqueue(t, -1, pack(...))
  end
  return true
end

--- sleep(seconds): suspends the running task; other tasks and I/O go on.
---@param seconds number
function M.sleep(seconds)
  local t = require_task("sleep")
  local ms = seconds_to_ms(seconds or 0, "sleep duration")
  local timer = new_timer()
  timer:start(ms or math.maxinteger // 1, 0, function() M.wake(t) end)
  M.suspend(function() timer:close() end)
  timer:close()
end

--- yield(): lets the loop and other tasks run once, then continues: the task resumes after the
-- loop has polled for I/O, so a long computation that yields keeps sockets served.
---(no parameters, no results)
function M.yield()
  local t = require_task("yield")
  next_turn(t)
  M.suspend(forget_yielder, t)
end

--- The value wait_in returns when its timeout passed first.
M.TIMED_OUT = setmetatable({}, { __name = "sacm.task.timed_out" })

--- wait_in(list, entry, timeout, what) -> the first value passed to wake, or task.TIMED_OUT.
-- Appends entry to list (for whoever will wake the running task), suspends until woken or until
-- `timeout` seconds pass, and always removes entry and stops its timer again, also when the task
-- is cancelled. The building block of await, events and queues.
-- A task is in at most one wait_in at a time, so the wait's state lives on the task (no table
-- or closure per wait: queues and events wait through here for every item).
-- Ends the wait (woken, timed out or cancelled): stops its timer, removes its entry.
local function forget(t)
  local timer = t.wait_timer
  if timer then
    timer:close()
    t.wait_timer = nil
  end
  local list, entry = t.wait_list, t.wait_entry
  t.wait_list, t.wait_entry = nil, nil
  if list == nil then return end
  for i = #list, 1, -1 do
    if list[i] == entry then
      table.remove(list, i)
      break
    end
  end
end

---@param list table the waiters' list the entry goes into
---@param entry any what a waker finds in list
---@param timeout? number seconds
---@param what string the caller's name, for errors
---@return any value the first value passed to wake, or task.TIMED_OUT
function M.wait_in(list, entry, timeout, what)
  local me = require_task(what, 4)
  local ms = timeout and seconds_to_ms(timeout, what .. " timeout")
  list[#list + 1] = entry
  me.wait_list, me.wait_entry = list, entry
  if ms then
    local timer = new_timer()
    me.wait_timer = timer
    timer:start(ms, 0, function() M.wake(me, M.TIMED_OUT) end)
  end
  local value = M.suspend(forget, me)
  forget(me)
  return value
end

local function outcome(t)
  if t.status == "done" then
    return unpack(t.results, 1, t.results.n)
  elseif t.status == "failed" then
    error(t.error, 0)
  else
    return nil, t.error
  end
end

local function finished(t)
  return t.status == "done" or t.status == "failed" or t.status == "cancelled"
end

--- task:await([timeout]) -> the task's results.
-- A failure is raised again here; a cancelled task gives nil, err (cancelled); a timeout gives
-- nil, err (timeout) and leaves the task running.
---@param timeout? number seconds
---@return any ... the task's results; nil, err (cancelled | timeout)
function Task:await(timeout)
  if not finished(self) then
    local me = require_task("await")
    if me == self then error("a task cannot await itself", 2) end
    self.waiters = self.waiters or {}
    local waiters = self.waiters
    local why = M.wait_in(waiters, function() M.wake(me, true) end, timeout, "await")
    if why == M.TIMED_OUT and not finished(self) then
      if #waiters == 0 and self.waiters == waiters then self.waiters = nil end
      return nil, errors.new("timeout", ("task %s did not finish within %gs"):format(self.name, timeout))
    end
  end
  return outcome(self)
end

--- task:cancel([reason]) -> true if the task was still running and is now being cancelled.
-- The task sees a `cancelled` error raised where it waits, so its pcall/<close> cleanup runs.
---@param reason? string the cancelled error's text
---@return boolean cancelling
function Task:cancel(reason)
  if finished(self) or self.cancelled then return false end
  self.cancelled = true
  self.cancel_error = errors.new("cancelled", reason or ("task " .. self.name .. " was cancelled"))
  if self == current then
    error(self.cancel_error, 2)
  end
  if not self.started then
    -- Never ran: it ends here, without running any of its code.
    self.status = "cancelled"
    self.error = self.cancel_error
    self.__fn, self.__args = nil, nil
    settle(self)
  elseif self.status == "suspended" then
    local on_cancel, arg = self.on_cancel, self.on_cancel_arg
    self.on_cancel, self.on_cancel_arg = nil, nil
    if on_cancel then
      local ok, err = pcall(on_cancel, arg)
      if not ok then log.warn("cleanup of cancelled task %s failed: %s", self.name, errors.message(err)) end
    end
    self.status = "ready"
    enqueue(self, 1, CANCEL)
  else
    self.cancel_pending = true
  end
  return true
end

--- task:done() -> true once the task finished (done, failed or cancelled).
---@return boolean
function Task:done()
  return finished(self)
end

--- task:result() -> ok, values... or false, err without waiting (nil if not finished).
---@return boolean? ok nil while it runs
---@return any ... its results, or its error
function Task:result()
  if self.status == "done" then return true, unpack(self.results, 1, self.results.n) end
  if self.status == "failed" or self.status == "cancelled" then return false, self.error end
  return nil
end

function Task:__tostring()
  return ("task %s (%s)"):format(self.name, self.status)
end

--- all(tasks [, timeout]) -> results. Waits for every task, or until the deadline.
-- results[i] = {ok = true, value = first, values = {n=..., ...}} or {ok = false, err = err};
-- tasks still running at the deadline get a `timeout` error and are left running.
---@param tasks sacm.Task[]
---@param timeout? number seconds
---@return {ok: boolean, value: any, err: sacm.Error?}[] results in the order of tasks
function M.all(tasks, timeout)
  require_task("all")
  local deadline = timeout and (loop.hrtime() / 1e9 + timeout)
  local results = {}
  -- Their failures are ours to report now, even those that happen before we get to them.
  for _, t in ipairs(tasks) do t.observed = true end
  for i, t in ipairs(tasks) do
    local remaining
    if deadline then remaining = math.max(0, deadline - loop.hrtime() / 1e9) end
    local r = pack(pcall(t.await, t, remaining))
    if not r[1] then
      results[i] = { ok = false, err = r[2] }
    elseif r[2] == nil and errors.is(r[3]) and (r[3].condition == "timeout" or r[3].condition == "cancelled")
        and t.status ~= "done" then
      results[i] = { ok = false, err = r[3] }
    else
      local values = pack(unpack(r, 2, r.n))
      results[i] = { ok = true, value = values[1], values = values }
    end
  end
  return results
end

--- with_timeout(seconds, fn, ...) -> fn's results, or nil, err (timeout) after cancelling it.
---@param seconds number
---@param fn function
---@param ... any
---@return any ... what fn returned, or nil, err (timeout)
function M.with_timeout(seconds, fn, ...)
  require_task("with_timeout")
  local t = M._spawn("with_timeout", true, fn, ...)
  local r = pack(t:await(seconds))
  if r[1] == nil and errors.is_condition(r[2], "timeout") and not finished(t) then
    t:cancel("timed out")
    return nil, errors.new("timeout", ("did not finish within %gs"):format(seconds))
  end
  return unpack(r, 1, r.n)
end

return M
