-- Every public function of the library's main modules, and every public method of the objects
-- they return, carries LuaCATS annotations (the comment format lua-language-server reads) in the
-- comment block directly above its definition:
--   * a `---@param NAME TYPE` line for each named parameter (`---@param ... TYPE` for a vararg),
--     and none naming anything else,
--   * a `---@return TYPE` line when the function returns values,
--   * for a function that takes and returns nothing, the marker line `---(no parameters, no results)`,
--   * for a function implemented in C, a `---@type fun(...)` line above the field that holds it,
--     or a `---@field NAME fun(...)` line in the ---@class block of the object it is a method of.
-- Checked: the public (not "_"-prefixed) functions of each module of tools/api-modules.lua
-- (found by require, so C functions too), the methods of the classes listed there, and every
-- top-level `function T.name(` / `function T:name(` definition in the files listed there.
-- Whether a function returns values is read from its source: a `return` with values in its own
-- body (not in a nested function). Run by `make check-docs` (part of `make test`):
--   ./sacmrun tools/check-api-annotations.lua
-- Exits 1 naming module, function, file and line, and what to add.
local fs = require "sacm.fs"
local api = dofile("tools/api-modules.lua")

local MARKER = "---(no parameters, no results)"

local function relative(path)
  local cwd = os.getenv("PWD")
  if cwd and path:sub(1, #cwd + 1) == cwd .. "/" then return path:sub(#cwd + 2) end
  return path
end

local function source(text)
  local lines, offsets, pos = {}, {}, 1
  while pos <= #text do
    local e = text:find("\n", pos, true) or (#text + 1)
    lines[#lines + 1] = text:sub(pos, e - 1)
    offsets[#offsets + 1] = pos
    pos = e + 1
  end
  return { text = text, lines = lines, offsets = offsets }
end

-- files: path -> source(its text)
local files = {}
local function file(path)
  files[path] = files[path] or source(assert(fs.read(path)))
  return files[path]
end

-- The comment block directly above line n: its ---@param names, whether it has ---@return,
-- ---@type fun, the marker.
local function block_above(f, n)
  local b = { params = {}, returns = false, type_fun = false, marker = false, any = false }
  local i = n - 1
  while i >= 1 and f.lines[i]:find("^%s*%-%-") do
    local line = f.lines[i]:match("^%s*(.-)%s*$")
    local p = line:match("^%-%-%-@param%s+([%w_%.]+)")
    if p then b.params[(p:gsub("%?$", ""))] = true end
    if line:find("^%-%-%-@return%f[%s]") then b.returns = true end
    if line:find("^%-%-%-@type%s+fun%(") then b.type_fun = true end
    if line == MARKER then b.marker = true end
    if line:find("^%-%-%-@") then b.any = true end
    i = i - 1
  end
  return b
end

-- A small Lua lexer from position pos: calls on(kind, value, start) for names/keywords and
-- symbols, skipping strings, numbers and comments. Stops when on returns true.
local function lex(text, pos, on)
  local n = #text
  while pos <= n do
    local c = text:sub(pos, pos)
    if c:find("%s") then
      pos = pos + 1
    elseif text:find("^%-%-", pos) then
      local eq = text:match("^%-%-%[(=*)%[", pos)
      if eq then
        local _, e = text:find("]" .. eq .. "]", pos, true)
        pos = (e or n) + 1
      else
        pos = (text:find("\n", pos, true) or n) + 1
      end
    elseif c == "[" and text:find("^%[=*%[", pos) then
      local eq = text:match("^%[(=*)%[", pos)
      local _, e = text:find("]" .. eq .. "]", pos, true)
      if on("string", nil, pos) then return end
      pos = (e or n) + 1
    elseif c == '"' or c == "'" then
      local i = pos + 1
      while i <= n do
        local d = text:sub(i, i)
        if d == "\\" then i = i + 2
        elseif d == c or d == "\n" then break
        else i = i + 1 end
      end
      if on("string", nil, pos) then return end
      pos = i + 1
    elseif c:find("[%a_]") then
      local word = text:match("^[%w_]+", pos)
      if on("name", word, pos) then return end
      pos = pos + #word
    elseif c:find("%d") then
      local num = text:match("^0[xX][%x%.pP%+%-]+", pos) or text:match("^[%d%.]+[eE][%+%-]?%d+", pos)
        or text:match("^[%d%.]+", pos)
      if on("number", nil, pos) then return end
      pos = pos + #num
    else
      if on("symbol", c, pos) then return end
      pos = pos + 1
    end
  end
end

local OPENS = { ["function"] = true, ["if"] = true, ["do"] = true, ["repeat"] = true }
local CLOSES = { ["end"] = true, ["until"] = true }
local NO_VALUE = { ["end"] = true, ["else"] = true, ["elseif"] = true, ["until"] = true, [";"] = true }

-- Whether the function whose `function` keyword is at or after pos returns values from its own
-- body.
local function returns_values(text, pos)
  local stack, functions, result, after_return = {}, 0, false, false
  lex(text, pos, function(kind, value)
    if after_return then
      after_return = false
      if not (NO_VALUE[value] and (kind == "name" or kind == "symbol")) then result = true end
    end
    if kind ~= "name" then return false end
    if OPENS[value] then
      stack[#stack + 1] = value
      if value == "function" then functions = functions + 1 end
    elseif CLOSES[value] then
      local top = table.remove(stack)
      if top == "function" then functions = functions - 1 end
      if #stack == 0 then return true end
    elseif value == "return" and functions == 1 then
      after_return = true
    end
    return false
  end)
  return result
end

local problems, checked, seen = {}, 0, {}

local function complain(where, what, path, line, fix)
  problems[#problems + 1] = ("%s: %s (%s:%d): %s"):format(where, what, path, line, fix)
end

-- Checks the Lua function defined at path:line with the given parameter names.
local function check_definition(where, what, path, line, params, vararg)
  local key = path .. ":" .. line
  if seen[key] then return end
  seen[key] = true
  checked = checked + 1
  local f = file(path)
  local b = block_above(f, line)
  local missing = {}
  for _, p in ipairs(params) do
    if p ~= "self" and not b.params[p] then missing[#missing + 1] = ("---@param %s TYPE"):format(p) end
  end
  if vararg and not b.params["..."] then missing[#missing + 1] = "---@param ... TYPE" end
  local named = { ["..."] = vararg }
  for _, p in ipairs(params) do named[p] = true end
  local stale = {}
  for p in pairs(b.params) do
    if not named[p] then stale[#stale + 1] = "---@param " .. p end
  end
  table.sort(stale)
  local gives = returns_values(f.text, f.offsets[line])
  if gives and not b.returns then missing[#missing + 1] = "---@return TYPE (one line per value; `nil, err` as TYPE? and sacm.Error?)" end
  local takes = vararg or #params > (params[1] == "self" and 1 or 0)
  if not takes and not gives and not b.returns and not b.marker and not b.type_fun then
    missing[#missing + 1] = MARKER .. " (it takes and returns nothing)"
  end
  if #missing > 0 then
    complain(where, what, path, line, "add " .. table.concat(missing, ", ") .. " directly above it")
  end
  if #stale > 0 then
    complain(where, what, path, line, table.concat(stale, ", ") .. " names no parameter of it: rename or remove")
  end
end

-- A function value reached at runtime (a module field or a class method).
local function check_value(where, name, fn, module_path, class)
  local info = debug.getinfo(fn, "Su")
  if info.what == "Lua" then
    local params = {}
    for i = 1, info.nparams do params[i] = debug.getlocal(fn, i) end
    check_definition(where, name, relative(info.source:sub(2)), info.linedefined, params, info.isvararg)
    return
  end
  -- C: a ---@type fun(...) above the field's assignment, or a ---@field in the class block
  checked = checked + 1
  local f = file(module_path)
  if class then
    local in_class = false
    for _, line in ipairs(f.lines) do
      local c = line:match("^%s*%-%-%-@class%s+([%w_%.]+)")
      if c then in_class = (c == class)
      elseif not line:find("^%s*%-%-") then in_class = false
      elseif in_class and line:find("^%s*%-%-%-@field%s+" .. name .. "%s+fun%(") then return end
    end
    complain(where, name, module_path, 1, ("a C function: add `---@field %s fun(self: %s, ...): ...` to the `---@class %s` block")
      :format(name, class, class))
    return
  end
  for i, line in ipairs(f.lines) do
    if line:find("^%s*[%w_%.]*%f[%w_]" .. name .. "%s*=") and not line:find("^%s*%-%-") then
      if not block_above(f, i).type_fun then
        complain(where, name, module_path, i, ("a C function: add `---@type fun(...): ...` directly above `%s =`"):format(name))
      end
      return
    end
  end
  complain(where, name, module_path, 1, "a C function whose assignment was not found: assign it as `NAME = ...` with a `---@type fun(...)` line above")
end

-- Every top-level `function T.name(` / `function T:name(` of the source f (at path).
local function scan(path, f, where)
  for i, line in ipairs(f.lines) do
    local owner, name, args = line:match("^function%s+([%w_%.]+)[.:]([%w_]+)%s*%(([^)]*)%)")
    if owner and name:sub(1, 1) ~= "_" then
      local params, vararg = {}, false
      if line:match("^function%s+[%w_%.]+:") then params[1] = "self" end
      for p in args:gmatch("[%w_%.]+") do
        if p == "..." then vararg = true else params[#params + 1] = p end
      end
      check_definition(where, owner .. (params[1] == "self" and ":" or ".") .. name, path, i, params, vararg)
    end
  end
end

-- Loaded as loadfile(this)("--as-library") (spec/api_annotations_spec.lua): the analysis of one
-- source text, without the tree's modules.
if ... == "--as-library" then
  return {
    returns_values = function(text) return returns_values(text, 1) end,
    check_text = function(text, path)
      problems, checked, seen = {}, 0, {}
      files[path] = source(text)
      scan(path, files[path], path)
      return problems, checked
    end,
  }
end

local function public_functions(t)
  local names = {}
  for k, v in pairs(t) do
    if type(k) == "string" and type(v) == "function" and k:sub(1, 1) ~= "_" then names[#names + 1] = k end
  end
  table.sort(names)
  return names
end

local modules = {}
for module in pairs(api.PAGES) do modules[#modules + 1] = module end
table.sort(modules)

for _, module in ipairs(modules) do
  local path = relative(assert(package.searchpath(module, package.path)))
  local m = require(module)
  for _, name in ipairs(public_functions(m)) do check_value(module, name, m[name], path) end
end

for _, c in ipairs(api.CLASSES) do
  local path = relative(assert(package.searchpath(c.module, package.path)))
  local methods = c.methods()
  for _, name in ipairs(public_functions(methods)) do check_value(c.class, name, methods[name], path, c.class) end
end

-- Top-level definitions in the module files and the files of their objects.
local paths, module_of = {}, {}
for _, module in ipairs(modules) do
  local path = relative(package.searchpath(module, package.path))
  paths[#paths + 1], module_of[path] = path, module
end
for _, p in ipairs(api.FILES) do paths[#paths + 1] = p end
for _, path in ipairs(paths) do scan(path, file(path), module_of[path] or path) end

if #problems > 0 then
  io.stderr:write("check-api-annotations: ", #problems, " problem(s) with the LuaCATS annotations of public functions",
    " (docs/testing.md, \"API annotations\"):\n  ", table.concat(problems, "\n  "), "\n")
  sacm.exit(1)
end
print(("check-api-annotations: %d public functions and methods, each with LuaCATS annotations"):format(checked))
