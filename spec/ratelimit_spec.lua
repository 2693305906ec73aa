-- sacm.ratelimit: token buckets per key, on a clock the spec moves by hand.
local ratelimit = require "sacm.ratelimit"

describe("sacm.ratelimit", function()
  local now
  local function clock() return now end
  before_each(function() now = 1000 end)

  it("lets a key make a burst of requests, then rate a second, keys apart", function()
    local l = ratelimit.new({ rate = 2, burst = 3, clock = clock })
    for _ = 1, 3 do assert.is_true(l:take("a")) end
    local ok, wait = l:take("a")
    assert.is_nil(ok)
    assert.near(0.5, wait, 1e-9)
    assert.is_true(l:take("b")) -- another key has its own bucket
    now = now + 0.5
    assert.is_true(l:take("a"))
    assert.is_nil(l:take("a"))
    now = now + 100 -- never more than the burst, however long it waited
    for _ = 1, 3 do assert.is_true(l:take("a")) end
    assert.is_nil(l:take("a"))
    assert.equal(3, l.refused)
    assert.equal("2 a second, bursts of 3", l:describe())
  end)

  it("stays bounded: forgets keys that are full again, refuses new keys while max_keys are busy", function()
    local l = ratelimit.new({ rate = 1, burst = 1, max_keys = 2, clock = clock })
    assert.is_true(l:take("a"))
    assert.is_true(l:take("b"))
    assert.is_nil(l:take("c"))
    now = now + 1
    assert.is_true(l:take("c"))
    assert.is_true(l.count <= 2)
  end)

  it("takes the grid's defaults or overrides per command, and refuses bad settings", function()
    assert.equal("2 a second, bursts of 10", ratelimit.for_command("collect"):describe())
    assert.equal("1 a second, bursts of 5", ratelimit.for_command("query", { query = { rate = 1, burst = 5 } }):describe())
    assert.is_nil(ratelimit.for_command("collect", { collect = false }))
    assert.is_nil(ratelimit.for_command("status"))
    assert.has_error(function() ratelimit.new({ rate = 0, burst = 1 }) end,
      "ratelimit: rate must be a positive finite number, got 0")
    assert.has_error(function() ratelimit.new({ rate = 1, burst = 0 / 0 }) end)
  end)
end)
