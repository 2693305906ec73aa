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

  it("sends the runtime's own names as their RFC 6120 names in a stanza error", function()
    local st = require "sacm.xmpp.stanza"
    local request = st.iq({ type = "set", id = "q1", from = "a@grid.example/x", to = "b@grid.example/y" })
    local cases = {
      { "timeout", "remote-server-timeout", "wait", "proc did not finish within 20s" },
      { "internal-error", "internal-server-error", "cancel", "collection sshd failed" },
      { "item-not-found", "item-not-found", "cancel", "no such node" },
      { "closed", "undefined-condition", "cancel", "queue closed" },
    }
    for _, c in ipairs(cases) do
      local reply = st.error_reply(request, c[1], c[4])
      local err = st.to_error(reply)
      assert.equal(c[2], err.condition, c[1])
      assert.equal(c[3], err.type, c[1])
      assert.equal(c[4], err.text, c[1])
      assert.is_true(errors.is_condition(err, c[2]))
    end
    -- a name RFC 6120 does not have travels as the text when there is no other
    assert.equal("closed", st.to_error(st.error_reply(request, "closed")).text)
  end)
end)

