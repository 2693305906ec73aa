local time = require "sacm.time"

describe("sacm.time", function()
  it("formats XEP-0082 DateTime in UTC", function()
    assert.equal("1970-01-01T00:00:00.000Z", time.format(0))
    assert.equal("2026-11-23T10:36:11Z", time.format(1795430171, 0))
    assert.equal("2026-11-23T10:36:11.500Z", time.format(1795430171.5))
    assert.equal("2026-11-23T10:36:12.000Z", time.format(1795430171.9999))
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", time.format())
    -- four-digit years below 1000 too (found by fuzz/payload: strftime wrote "808-05-28")
    assert.equal("0808-05-28T20:26:40.000Z", time.format(time.parse("0808-05-28T20:26:40Z")))
    assert.equal("0000-01-01T00:00:00Z", time.format(-62167219200, 0))
  end)

  it("parses XEP-0082 DateTime with zones and fractions, and Date", function()
    assert.equal(1795430171, time.parse("2026-11-23T10:36:11Z"))
    assert.equal(1795430171.25, time.parse("2026-11-23T11:36:11.25+01:00"))
    assert.equal(1795430171, time.parse("2026-11-23T05:06:11-05:30"))
    assert.equal(951782400, time.parse("2000-02-29"))
    for _, t in ipairs({ 0, 1, 951782400, 1795430171.5, 4102444800 }) do
      assert.equal(t, time.parse(time.format(t)))
    end
  end)

  it("rejects malformed and out-of-range values", function()
    for _, s in ipairs({ "2026-13-01T00:00:00Z", "2026-02-29T00:00:00Z", "2026-11-23 10:36:11Z",
      "2026-11-23T25:00:00Z", "2026-11-23T10:36:11", "2026-11-23T10:36:11+0100", "yesterday",
      -- zones beyond ±23:59, and instants a four-digit UTC year cannot name
      "2026-11-23T10:36:11+99:00", "2026-11-23T10:36:11-05:60",
      "9999-12-31T23:00:00-01:00", "0000-01-01T00:30:00+01:00" }) do
      local v, err = time.parse(s)
      assert.is_nil(v, s)
      assert.equal("bad-format", err.condition)
    end
  end)

  it("has a monotonic clock", function()
    local a = time.monotonic()
    require("sacm.task").sleep(0.002)
    assert.is_true(time.monotonic() - a >= 0.0015)
  end)
end)
