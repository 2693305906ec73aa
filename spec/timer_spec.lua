local task = require "sacm.task"
local timer = require "sacm.timer"
local loop = require "sacm._loop"

describe("sacm.timer", function()
  it("after() runs its callback once, as a task that may wait", function()
    local runs = 0
    local t = timer.after(0.005, function() task.sleep(0.001); runs = runs + 1 end)
    task.sleep(0.03)
    assert.equal(1, runs)
    assert.is_false(t:active())
  end)

  it("every() repeats until cancelled", function()
    local runs = 0
    local t = timer.every(0.005, function() runs = runs + 1 end)
    task.sleep(0.06)
    t:cancel()
    local seen = runs
    assert.is_true(seen >= 5 and seen <= 13, "ran " .. seen .. " times")
    task.sleep(0.02)
    assert.equal(seen, runs)
  end)

  it("a cancelled one-shot never fires", function()
    local fired = false
    local t = timer.after(0.01, function() fired = true end)
    t:cancel()
    task.sleep(0.03)
    assert.is_false(fired)
  end)

  it("skips ticks while the previous run is still going", function()
    local concurrent, max_concurrent = 0, 0
    local t = timer.every(0.002, function()
      concurrent = concurrent + 1
      max_concurrent = math.max(max_concurrent, concurrent)
      task.sleep(0.015)
      concurrent = concurrent - 1
    end)
    task.sleep(0.05)
    t:cancel()
    task.sleep(0.02)
    assert.equal(1, max_concurrent)
    assert.is_true((t.skipped or 0) > 0)
  end)

  it("a failing callback is reported and the timer keeps going", function()
    local runs = 0
    local t = timer.every(0.003, function() runs = runs + 1; if runs == 1 then error("first run fails") end end,
      { name = "flaky" })
    task.sleep(0.03)
    t:cancel()
    assert.is_true(runs >= 3)
  end)

  it("rejects bad durations", function()
    assert.has_error(function() timer.after(-1, function() end) end)
    assert.has_error(function() timer.every(0, function() end) end)
    assert.has_error(function() task.sleep(0 / 0) end)
  end)

  it("leaves no timer handle behind after sleeping", function()
    -- compared with before: timers of other specs' live objects may be running
    local function active_timers()
      local active = 0
      for _, h in ipairs(loop.handles()) do
        if h.type == "timer" and h.active then active = active + 1 end
      end
      return active
    end
    local before = active_timers()
    for _ = 1, 100 do task.sleep(0) end
    collectgarbage()
    task.sleep(0)
    assert.equal(before, active_timers())
  end)
end)
