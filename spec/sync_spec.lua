local task = require "sacm.task"
local sync = require "sacm.sync"

describe("sacm.sync", function()
  describe("event", function()
    it("wakes every waiter once set, and later waits return at once", function()
      local e = sync.event()
      local woke = 0
      local waiters = {}
      for i = 1, 3 do waiters[i] = task.spawn(function() assert(e:wait()); woke = woke + 1 end) end
      task.sleep(0.002)
      assert.equal(0, woke)
      e:set()
      task.all(waiters)
      assert.equal(3, woke)
      assert.is_true(e:wait(0))
      e:clear()
      assert.is_false(e:is_set())
    end)

    it("times out with nil, err", function()
      local ok, err = sync.event():wait(0.01)
      assert.is_nil(ok)
      assert.equal("timeout", err.condition)
    end)
  end)

  describe("queue", function()
    it("is FIFO and hands values straight to a waiting getter", function()
      local q = sync.queue()
      local got = {}
      local consumer = task.spawn(function()
        for _ = 1, 4 do got[#got + 1] = q:get() end
      end)
      task.sleep(0.001)
      for i = 1, 4 do q:put(i) end
      consumer:await()
      assert.same({ 1, 2, 3, 4 }, got)
    end)

    it("blocks producers while full (backpressure)", function()
      local q = sync.queue(2)
      local produced = 0
      local producer = task.spawn(function()
        for i = 1, 5 do q:put(i); produced = i end
      end)
      task.sleep(0.002)
      assert.equal(2, produced)
      assert.equal(2, #q)
      assert.equal(1, q:get())
      task.sleep(0.001)
      assert.equal(3, produced)
      for _ = 1, 4 do q:get() end
      producer:await()
      assert.equal(5, produced)
    end)

    it("get and put time out with nil, err", function()
      local q = sync.queue(1)
      local v, err = q:get(0.005)
      assert.is_nil(v)
      assert.equal("timeout", err.condition)
      assert.is_true(q:put("a"))
      local ok, err2 = q:put("b", 0.005)
      assert.is_nil(ok)
      assert.equal("timeout", err2.condition)
      assert.is_false(q:try_put("c"))
    end)

    it("close lets consumers drain what is left, then ends iteration", function()
      local q = sync.queue()
      q:put(1); q:put(2)
      local seen = {}
      local consumer = task.spawn(function()
        for v in q:iter() do seen[#seen + 1] = v end
        return "ended"
      end)
      task.sleep(0.001)
      q:put(3)
      q:close()
      assert.equal("ended", consumer:await())
      assert.same({ 1, 2, 3 }, seen)
      local ok, err = q:put(4)
      assert.is_nil(ok)
      assert.equal("closed", err.condition)
    end)

    it("rejects nil and bad sizes", function()
      assert.has_error(function() sync.queue(0) end)
      assert.has_error(function() sync.queue():put(nil) end)
    end)

    it("a cancelled getter does not swallow a later value", function()
      local q = sync.queue()
      local getter = task.spawn(function() return q:get() end)
      task.sleep(0.001)
      getter:cancel()
      task.sleep(0.001)
      q:put("kept")
      assert.equal(1, #q)
      assert.equal("kept", q:get())
    end)
  end)
end)
