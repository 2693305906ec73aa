-- The loadable modules (docs/design.md "Start-up cost and the loadable modules"): each shared
-- object maps only the libraries its concern needs, checked in a child's /proc/self/maps.
local proc = require "sacm.proc"

local BIN = os.getenv("SACMRUN_BIN") or "./sacmrun"

-- Runs `code` in a fresh binary, then reports which of the libraries below it has mapped.
local WATCHED = { "libcrypto", "libssl", "libstrophe", "libhttp_parser", "libsqlite3", "libpq" }
local REPORT = [[
local maps = io.open("/proc/self/maps"):read("a")
for _, lib in ipairs{%s} do
  if maps:find("/" .. lib .. "[%%.%%-]") then io.write(lib, " ") end
end
for so in maps:gmatch("/[^/\n]*%%-([%%w]+)%%.so\n") do io.write("[", so, "] ") end
]]

local function mapped(code)
  local quoted = {}
  for i, lib in ipairs(WATCHED) do quoted[i] = ("%q"):format(lib) end
  local r, err = proc.run({ BIN, "-e", code .. "\n" .. REPORT:format(table.concat(quoted, ", ")) }, { timeout = 20 })
  assert(r, tostring(err))
  assert.equal(0, r.code, r.stderr)
  local libs, modules = {}, {}
  for lib in r.stdout:gmatch("(lib[%w_]+) ") do libs[lib] = true end
  for so in r.stdout:gmatch("%[(%w+)%]") do modules[so] = true end
  return libs, modules, r.stdout
end

describe("loadable modules", function()
  it("a plain script maps none of them", function()
    local libs, modules, out = mapped("")
    assert.same({}, libs, out)
    assert.same({}, modules, out)
  end)

  it("hashing a file (the files kind) maps libcrypto alone", function()
    local libs, modules, out = mapped([[
      assert(require("sacm.fs").hash("/etc/hostname"))
      assert(require("sacm.crypto").sha256("x"))]])
    assert.same({ libcrypto = true }, libs, out)
    assert.same({ crypto = true }, modules, out)
  end)

  it("XMPP maps libstrophe but not the HTTP stack", function()
    local libs, modules, out = mapped([[assert(require("sacm._xmpp").new)]])
    assert.is_true(libs.libstrophe, out)
    assert.is_nil(libs.libhttp_parser, out)
    assert.same({ xmpp = true }, modules, out)
  end)

  it("HTTP server and client map OpenSSL and http-parser but not libstrophe", function()
    local libs, modules, out = mapped([[require "sacm._http"; require "sacm._http_client"]])
    assert.is_true(libs.libssl and libs.libhttp_parser, out)
    assert.is_nil(libs.libstrophe, out)
    assert.same({ http = true }, modules, out)
  end)
end)
