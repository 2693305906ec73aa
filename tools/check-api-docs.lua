-- Every public function of the library's main modules has an entry in its docs/api/ page (as
-- luv's docs check does for its bindings): a module function `f` of sacm.fs must be named there
-- as `fs.f(`, `.f(`, `:f(` or `` `f` ``. Public means a function-valued field whose name does not
-- start with "_". Run by `make check-docs` (part of `make test`), from the source tree:
--   ./sacmrun tools/check-api-docs.lua
-- Exits 1 naming every function without an entry, and the page to add it to.
local fs = require "sacm.fs"

local PAGES = dofile("tools/api-modules.lua").PAGES

local function plain(s) return (s:gsub("%p", "%%%0")) end

-- the name a page calls a module by, where it is not the last part of the module's name
local ALIAS = { ["sacm.xmpp.stanza"] = { "st" }, ["sacm.http.client"] = { "client", "http" },
  ["sacm.shutdown"] = { "sacm" } }

-- documented: the page names it as short.name or alias.name (an entry, not a passing mention in
-- another module's list: `hash(` in fs.md's internal section does not document fs.hash)
local function documented(text, prefixes, name)
  local n = "%." .. plain(name) .. "%f[^%w_]"
  for _, prefix in ipairs(prefixes) do
    if text:find("%f[%w_]" .. plain(prefix) .. n) then return true end
  end
  return false
end

local names = {}
for module in pairs(PAGES) do names[#names + 1] = module end
table.sort(names)

local missing, checked = {}, 0
for _, module in ipairs(names) do
  local page = "docs/api/" .. PAGES[module]
  local text = assert(fs.read(page))
  local short = module:match("([^.]+)$")
  local m = require(module)
  local fns = {}
  for k, v in pairs(m) do
    if type(k) == "string" and type(v) == "function" and k:sub(1, 1) ~= "_" then fns[#fns + 1] = k end
  end
  table.sort(fns)
  for _, name in ipairs(fns) do
    checked = checked + 1
    if not documented(text, { short, table.unpack(ALIAS[module] or {}) }, name) then
      missing[#missing + 1] = ("%s.%s has no entry in %s"):format(module, name, page)
    end
  end
end

if #missing > 0 then
  io.stderr:write("check-api-docs: ", #missing, " public function(s) without documentation:\n  ",
    table.concat(missing, "\n  "), "\n")
  sacm.exit(1)
end
print(("check-api-docs: %d public functions of %d modules, each with an entry in docs/api/"):format(checked,
  #names))
