local task = require "sacm.task"
local errors = require "sacm.error"
local loop = require "sacm._loop"

local function ms_since(start) return (loop.hrtime() - start) / 1e6 end

describe("sacm.task", function()
  it("wakes sleepers in deadline order, concurrently (all asleep at once), never early", function()
    local order, asleep, slept = {}, 0, {}
    local most_asleep = 0
    local tasks = {}
    for _, ms in ipairs({ 30, 10, 20 }) do
      tasks[#tasks + 1] = task.spawn(function()
        local start = loop.hrtime()
        asleep = asleep + 1
        most_asleep = math.max(most_asleep, asleep)
        task.sleep(ms / 1000)
        asleep = asleep - 1
        slept[ms] = ms_since(start)
        order[#order + 1] = ms
      end)
    end
    task.all(tasks)
    assert.same({ 10, 20, 30 }, order)
    -- the three sleeps overlapped (sequential sleeps would never have two asleep together); how
    -- long the whole took depends on the machine's load, so it is not asserted
    assert.equal(3, most_asleep)
    for ms, took in pairs(slept) do
      assert.is_true(took >= ms - 1, ("a %d ms sleep woke after %g ms"):format(ms, took))
    end
  end)

  it("passes arguments and returns results through await", function()
    local t = task.spawn(function(a, b) task.sleep(0.001); return a + b, "x", nil, 4 end, 2, 3)
    local a, b, c, d = t:await()
    assert.same({ 5, "x", nil, 4 }, { a, b, c, d })
    assert.equal("done", t.status)
    -- awaiting a finished task returns at once, again
    assert.equal(5, (t:await()))
  end)

  it("does not run a spawned task until the spawner waits", function()
    local ran = false
    local t = task.spawn(function() ran = true end)
    assert.is_false(ran)
    t:await()
    assert.is_true(ran)
  end)

  it("propagates an error to whoever awaits, with the original value", function()
    local t = task.spawn(function() task.sleep(0.001); error({ code = 42 }) end)
    local ok, err = pcall(t.await, t)
    assert.is_false(ok)
    assert.equal(42, err.code)
    assert.equal("failed", t.status)
    assert.is_string(t.traceback)
  end)

  it("returns nil, timeout from await with a deadline and leaves the task running", function()
    local t = task.spawn(function() task.sleep(0.2); return "late" end)
    local start = loop.hrtime()
    local v, err = t:await(0.02)
    assert.is_nil(v)
    assert.is_true(errors.is_condition(err, "timeout"))
    -- it came back before the task's 200 ms were up (the task is still running), however loaded
    -- the machine
    assert.is_false(t:done())
    assert.is_true(ms_since(start) >= 19)
    assert.equal("late", t:await())
  end)

  it("cancels a sleeping task: it sees a cancelled error where it waits and can clean up", function()
    local cleaned = false
    local t = task.spawn(function()
      local _, err = pcall(task.sleep, 10)
      cleaned = true
      error(err, 0)
    end)
    task.sleep(0.005)
    assert.is_true(t:cancel("test says stop"))
    local v, err = t:await()
    assert.is_nil(v)
    assert.equal("cancelled", err.condition)
    assert.equal("test says stop", err.text)
    assert.equal("cancelled", t.status)
    assert.is_true(cleaned)
    assert.is_false(t:cancel(), "cancelling a finished task is a no-op")
  end)

  it("cancels a task that never started without running it", function()
    local ran = false
    local t = task.spawn(function() ran = true end)
    t:cancel()
    local _, err = t:await()
    assert.equal("cancelled", err.condition)
    task.sleep(0.001)
    assert.is_false(ran)
  end)

  it("a cancelled task that catches the cancellation may finish normally", function()
    local t = task.spawn(function()
      pcall(task.sleep, 10)
      return "recovered"
    end)
    task.sleep(0.001)
    t:cancel()
    assert.equal("recovered", t:await())
    assert.equal("done", t.status)
  end)

  it("raises a clear error when a waiting call is used outside a task", function()
    local ok, err
    local co = coroutine.create(function() return task.sleep(0.001) end)
    ok, err = coroutine.resume(co)
    assert.is_false(ok)
    assert.matches("nested inside a task", err)
  end)

  it("refuses to await itself", function()
    local t
    t = task.spawn(function() return pcall(function() return t:await() end) end)
    local ok, err = t:await()
    assert.is_false(ok)
    assert.matches("cannot await itself", err)
  end)

  it("all() gathers results, errors and timeouts without losing any", function()
    local tasks = {
      task.spawn(function() task.sleep(0.005); return 1 end),
      task.spawn(function() task.sleep(0.001); error("boom", 0) end),
      task.spawn(function() task.sleep(1); return 3 end),
      task.spawn(function() return nil, errors.new("item-not-found", "no such node") end),
    }
    local start = loop.hrtime()
    local results = task.all(tasks, 0.05)
    assert.is_true(ms_since(start) >= 49)
    assert.is_false(tasks[3]:done()) -- all() returned at its deadline, not when the 1 s task ended
    assert.same({ true, 1 }, { results[1].ok, results[1].value })
    assert.same({ false, "boom" }, { results[2].ok, results[2].err })
    assert.is_false(results[3].ok)
    assert.equal("timeout", results[3].err.condition)
    -- a task that returns nil, err finished normally: its values are its result
    assert.is_true(results[4].ok)
    assert.equal("item-not-found", results[4].values[2].condition)
    tasks[3]:cancel()
  end)

  it("with_timeout cancels work that overruns", function()
    local cancelled = false
    local v, err = task.with_timeout(0.02, function()
      local ok, e = pcall(task.sleep, 5)
      if not ok and e.condition == "cancelled" then cancelled = true end
      error(e, 0)
    end)
    assert.is_nil(v)
    assert.equal("timeout", err.condition)
    task.sleep(0.001)
    assert.is_true(cancelled)
    assert.equal("fast", (task.with_timeout(1, function() return "fast" end)))
  end)

  it("yield lets the loop poll for I/O: a task that only yields does not starve a file read", function()
    local fs = require "sacm.fs"
    local read_done = false
    local reader = task.spawn(function() return fs.read("spec/task_spec.lua") end)
    task.spawn(function() reader:await(); read_done = true end)
    -- with a 0 ms timer as the yield, this loop would spin inside libuv's timers phase and the
    -- read's completion (polled I/O) would never come: the cap ends it then
    local turns = 0
    while not read_done and turns < 100000 do
      task.yield()
      turns = turns + 1
    end
    assert.is_true(read_done, "the read never completed while a task yielded " .. turns .. " times")
    assert.matches("yield lets the loop poll", reader:await(), 1, true)
    -- and a bare coroutine.yield() the same
    local done2 = false
    task.spawn(function() fs.read("spec/task_spec.lua"); done2 = true end)
    turns = 0
    while not done2 and turns < 100000 do
      coroutine.yield()
      turns = turns + 1
    end
    assert.is_true(done2)
  end)

  it("a cancelled yielder is not resumed, and the others are", function()
    local resumed = {}
    local a = task.spawn(function() task.yield(); resumed.a = true end)
    local b = task.spawn(function() task.yield(); resumed.b = true end)
    task.sleep(0) -- both are yielding now
    a:cancel()
    b:await()
    task.sleep(0.001)
    assert.is_nil(resumed.a)
    assert.is_true(resumed.b)
    assert.equal("cancelled", a.status)
  end)

  it("a bare coroutine.yield() inside a task lets the loop run and continues", function()
    local other = false
    task.spawn(function() other = true end)
    coroutine.yield()
    assert.is_true(other)
  end)

  it("keeps the runtime going when an unawaited task fails", function()
    local t = task.spawn({ name = "doomed", silent = true }, function() error("expected failure") end)
    task.sleep(0.001)
    assert.equal("failed", t.status)
    local after = task.spawn(function() return "alive" end)
    assert.equal("alive", after:await())
  end)

  it("runs <close> cleanup of a task that fails or is cancelled", function()
    local closed = {}
    local function closer(name) return setmetatable({}, { __close = function() closed[#closed + 1] = name end }) end
    local failing = task.spawn({ silent = true }, function()
      local _ <close> = closer("failed")
      task.sleep(0.001)
      error("boom")
    end)
    local sleeping = task.spawn(function()
      local _ <close> = closer("cancelled")
      task.sleep(10)
    end)
    task.sleep(0.005)
    sleeping:cancel()
    task.sleep(0.001)
    assert.equal("failed", failing.status)
    assert.equal("cancelled", sleeping.status)
    table.sort(closed)
    assert.same({ "cancelled", "failed" }, closed)
  end)

  it("a cancel that lands after a wake still undoes the wait (no stale wakeups later)", function()
    local e = require("sacm.sync").event()
    local w = task.spawn(function()
      local _, err = pcall(e.wait, e, 0.02) -- its timeout timer must not outlive the wait
      local t0 = loop.hrtime()
      task.sleep(0.05)
      return err and err.condition, (loop.hrtime() - t0) / 1e9
    end)
    task.sleep(0.001)
    e:set()     -- w is woken...
    w:cancel()  -- ...and cancelled before it runs again
    local condition, slept = w:await()
    assert.equal("cancelled", condition)
    assert.is_true(slept >= 0.045, "a stale timer woke the task after " .. slept .. " s")
  end)

  it("schedules 10,000 tasks without trouble", function()
    local done = 0
    local tasks = {}
    for i = 1, 10000 do
      tasks[i] = task.spawn(function() task.yield(); done = done + 1 end)
    end
    task.all(tasks)
    assert.equal(10000, done)
  end)
end)
