-- The library's layers (sacm.xmpp.*, sacm.http.*, sacm.policy.*) and the names modules had before
-- (lua/sacm/_aliases.lua): playbooks written against the old names keep working.
local aliases = require "sacm._aliases"

describe("old module names", function()
  it("give the very module of the new name, for every old name", function()
    local n = 0
    for old, new in pairs(aliases.OLD_NAMES) do
      assert.equal(require(new), require(old), old .. " should be " .. new)
      n = n + 1
    end
    assert.equal(12, n)
  end)

  it("never shadow a module that exists under its own name, and leave unknown names unknown", function()
    assert.is_table(require("sacm.xmpp"))
    assert.is_function(require("sacm.xmpp").connect)
    local ok, err = pcall(require, "sacm.stanzas")
    assert.is_false(ok)
    assert.matches("module 'sacm.stanzas' not found", err, 1, true)
    aliases.install() -- a second install adds nothing
    local count = 0
    for _, s in ipairs(package.searchers) do if s == package.searchers[#package.searchers] then count = count + 1 end end
    assert.equal(1, count)
  end)
end)
