-- sacm.error: conditions with two names (docs/api/errors.md) match as one.
local errors = require "sacm.error"

describe("sacm.error conditions", function()
  it("treats timeout and remote-server-timeout as one condition", function()
    assert.is_true(errors.is_condition(errors.new("timeout", "x"), "remote-server-timeout"))
    assert.is_true(errors.is_condition(errors.new("remote-server-timeout", "x"), "timeout"))
  end)

  it("treats internal-error and internal-server-error as one condition", function()
    assert.is_true(errors.is_condition(errors.new("internal-error", "x"), "internal-server-error"))
    assert.is_true(errors.is_condition(errors.new("internal-server-error", "x"), "internal-error"))
  end)

  it("keeps other conditions apart", function()
    assert.is_false(errors.is_condition(errors.new("closed", "x"), "timeout"))
    assert.is_false(errors.is_condition(errors.new("timeout", "x"), "internal-error"))
    assert.is_false(errors.is_condition("timeout", "timeout"))
  end)
end)
