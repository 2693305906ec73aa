-- tools/check-api-annotations.lua (make check-docs): what it reads from a source text, on small
-- sources written here. The check over the tree itself runs in make check-docs.
local check = assert(loadfile("tools/check-api-annotations.lua"))("--as-library")

describe("check-api-annotations", function()
  describe("returns_values", function()
    local cases = {
      { "function M.f() return end", false },
      { "function M.f() return 1 end", true },
      { "function M.f() return; end", false },
      { "function M.f(x) if x then return x end end", true },
      { "function M.f(x) if x then return else return end end", false },
      { "function M.f() local g = function() return 1 end g() end", false },
      { "function M.f() local function g() return 1 end return g() end", true },
      { "function M.f() for i = 1, 3 do if i then return end end end", false },
      { "function M.f() while true do return {} end end", true },
      { "function M.f() repeat local x = 1 until x return end", false },
      { 'function M.f() local s = "end return 1" end', false },
      { "function M.f() local s = [[end return 1]] end", false },
      { "function M.f() --[==[ return 1 ]==] end", false },
      { "function M.f() -- return 1\nend", false },
      { "function M.f() do return (1) end end", true },
      { "function M.f() end\nfunction M.g() return 1 end", false },
    }
    for _, c in ipairs(cases) do
      it(("%q -> %s"):format(c[1], tostring(c[2])), function()
        assert.equal(c[2], check.returns_values(c[1]))
      end)
    end
  end)

  describe("check_text", function()
    it("accepts a function with a ---@param per parameter and a ---@return", function()
      local problems, checked = check.check_text(table.concat({
        "--- f(a [, b]) -> sum",
        "---@param a number",
        "---@param b? number",
        "---@return number sum",
        "function M.f(a, b) return a + (b or 0) end",
      }, "\n"), "x.lua")
      assert.same({}, problems)
      assert.equal(1, checked)
    end)

    it("names the function, file, line and the lines to add", function()
      local problems = check.check_text(table.concat({
        "local M = {}",
        "--- prose alone is not an annotation",
        "function M.f(a, b) return a end",
        "---@param x string",
        "function Obj:g(x, ...) end",
      }, "\n"), "lua/sacm/x.lua")
      assert.same({
        "lua/sacm/x.lua: M.f (lua/sacm/x.lua:3): add ---@param a TYPE, ---@param b TYPE, ---@return TYPE"
          .. " (one line per value; `nil, err` as TYPE? and sacm.Error?) directly above it",
        "lua/sacm/x.lua: Obj:g (lua/sacm/x.lua:5): add ---@param ... TYPE directly above it",
      }, problems)
    end)

    it("wants the marker for a function that takes and returns nothing, and not for private ones", function()
      local problems = check.check_text(table.concat({
        "function Obj:close() self.closed = true end",
        "---(no parameters, no results)",
        "function Obj:stop() self.stopped = true end",
        "function Obj:_private(x) return x end",
        "local function helper(y) return y end",
        "  function Obj.nested(z) return z end",
      }, "\n"), "y.lua")
      assert.same({
        "y.lua: Obj:close (y.lua:1): add ---(no parameters, no results) (it takes and returns nothing)"
          .. " directly above it",
      }, problems)
    end)

    it("names a ---@param that is no parameter of the function (renamed or removed since)", function()
      local problems = check.check_text(table.concat({
        "---@param path string",
        "---@param opts? table",
        "---@return string",
        "function M.read(file) return file end",
      }, "\n"), "w.lua")
      assert.same({
        "w.lua: M.read (w.lua:4): add ---@param file TYPE directly above it",
        "w.lua: M.read (w.lua:4): ---@param opts, ---@param path names no parameter of it: rename or remove",
      }, problems)
    end)

    it("reads only the comment block directly above: a blank line ends it", function()
      local problems = check.check_text(table.concat({
        "---@param a number",
        "",
        "function M.f(a) end",
      }, "\n"), "z.lua")
      assert.same({ "z.lua: M.f (z.lua:3): add ---@param a TYPE directly above it" }, problems)
    end)
  end)
end)
