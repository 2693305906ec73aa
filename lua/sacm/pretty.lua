--- sacm.pretty: any Lua value as readable text, for the REPL and for logs. Tables are nested to a
-- depth limit with cycles marked, XML elements (stanzas) print as indented XML, error values with
-- their condition. See docs/api/pretty.md.
local errors = require "sacm.error"
local xml_core = require "sacm._xml"

local M = {}

local Element = xml_core.metatable
local KEYWORDS = {}
for word in ([[and break do else elseif end false for function goto if in local nil not or
  repeat return then true until while]]):gmatch("%a+") do KEYWORDS[word] = true end

local DEFAULTS = { depth = 4, items = 50, width = 80, indent = "  " }

local escapes = { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
  ["\a"] = "\\a", ["\b"] = "\\b", ["\f"] = "\\f", ["\v"] = "\\v" }

--- quote(s) -> s as a Lua string literal, one line; valid UTF-8 stays readable.
---@param s string
---@return string literal
function M.quote(s)
  local q = s:gsub('[%c\\"]', function(c) return escapes[c] or ("\\%03d"):format(c:byte()) end)
  if not utf8.len(q) then
    q = q:gsub("[\128-\255]", function(c) return ("\\%03d"):format(c:byte()) end)
  end
  return '"' .. q .. '"'
end

local function is_identifier(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil and not KEYWORDS[k]
end

-- Key order: integers, then strings, then the rest, each sorted.
local TYPE_RANK = { number = 1, string = 2, boolean = 3 }
local function key_less(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return (TYPE_RANK[ta] or 4) < (TYPE_RANK[tb] or 4) end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

local function has_tostring(v)
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__tostring ~= nil
end

local function safe_tostring(v)
  local ok, s = pcall(tostring, v)
  if ok and type(s) == "string" then return s end
  return ("<%s: __tostring failed>"):format(type(v))
end

local function format_function(f)
  local info = debug.getinfo(f, "S")
  if info.what == "C" then return safe_tostring(f) .. " (C)" end
  -- where it was defined says more than its address
  return ("function: %s:%d"):format(info.short_src:match("[^/]*$"), info.linedefined)
end

local function format_error(e)
  local s = "<error " .. errors.message(e)
  local extra = {}
  for k, v in pairs(e) do
    if k ~= "condition" and k ~= "text" and k ~= "stanza" and type(k) == "string"
        and (type(v) == "string" or type(v) == "number" or type(v) == "boolean") then
      extra[#extra + 1] = k .. "=" .. (type(v) == "string" and M.quote(v) or tostring(v))
    end
  end
  table.sort(extra)
  if #extra > 0 then s = s .. " (" .. table.concat(extra, ", ") .. ")" end
  return s .. ">"
end

-- An object (a table whose metatable has an __index table: an instance of a class) without a
-- __tostring prints as one line with its methods: its fields are its internals (connections,
-- handlers, caches: hundreds of lines), and they may hold secrets.
local function format_object(v, mt, index)
  local methods, seen, depth = {}, {}, 0
  while type(index) == "table" and not seen[index] and depth < 8 do
    seen[index], depth = true, depth + 1
    for k, f in next, index do
      if type(k) == "string" and type(f) == "function" and k:sub(1, 1) ~= "_" and not methods[k] then
        methods[k] = true
        methods[#methods + 1] = k
      end
    end
    local imt = getmetatable(index)
    index = type(imt) == "table" and rawget(imt, "__index") or nil
  end
  table.sort(methods)
  local name = rawget(mt, "__name")
  local shown = {}
  for i = 1, math.min(#methods, 6) do shown[i] = methods[i] end
  local list = table.concat(shown, ", ") .. (#methods > 6 and (", ... (" .. #methods .. ")") or "")
  return ("<%s %p%s>"):format(type(name) == "string" and name or "object", v,
    #methods > 0 and (" (methods: " .. list .. ")") or "")
end

-- Keys whose values are never printed.
local SECRET = { "password", "passwd", "secret", "passphrase", "token", "private_key", "authorization", "credential" }
local function is_secret(k)
  if type(k) ~= "string" then return false end
  local lower = k:lower()
  for _, word in ipairs(SECRET) do
    if lower:find(word, 1, true) then return true end
  end
  return false
end

-- Formats v; `level` is the nesting depth, `path` the tables being printed around it (cycles).
local function format(v, o, level, path)
  local t = type(v)
  if t == "string" then return M.quote(v) end
  if t == "number" then
    if math.type(v) == "float" and v == math.floor(v) and v > -1e15 and v < 1e15 then
      return ("%.1f"):format(v)
    end
    return tostring(v)
  end
  if t == "nil" or t == "boolean" then return tostring(v) end
  if t == "function" then return format_function(v) end
  if t == "thread" then return ("%s (%s)"):format(tostring(v), coroutine.status(v)) end
  if t == "userdata" then return safe_tostring(v) end
  -- tables
  local mt = getmetatable(v)
  if mt == errors.metatable then return format_error(v) end
  if mt == Element then
    local ok, s = pcall(xml_core.serialize, v, { indent = o.indent })
    if ok then return (s:gsub("\n$", "")) end
  end
  if has_tostring(v) then return safe_tostring(v) end
  if type(mt) == "table" and type(rawget(mt, "__index")) == "table" then
    return format_object(v, mt, rawget(mt, "__index"))
  end
  if path[v] then return "<cycle: " .. path[v] .. ">" end
  local n = 0
  for _ in next, v do n = n + 1 end
  if n == 0 then return "{}" end
  if level >= o.depth then return ("{...} (%d %s)"):format(n, n == 1 and "entry" or "entries") end

  path[v] = tostring(v)
  local parts, multiline = {}, false
  local len = #v
  local shown = 0
  -- the sequence part without keys, then the rest sorted
  local keys = {}
  for k in next, v do
    if not (math.type(k) == "integer" and k >= 1 and k <= len) then keys[#keys + 1] = k end
  end
  table.sort(keys, key_less)
  local function add(text)
    shown = shown + 1
    if text:find("\n", 1, true) then multiline = true end
    parts[#parts + 1] = text
  end
  for i = 1, len do
    if shown >= o.items then break end
    add(format(v[i], o, level + 1, path))
  end
  for _, k in ipairs(keys) do
    if shown >= o.items then break end
    local ks = is_identifier(k) and k or ("[" .. format(k, o, o.depth, path) .. "]")
    local value = v[k]
    if is_secret(k) and value ~= nil and type(value) ~= "boolean" then
      add(ks .. " = <hidden>")
    else
      add(ks .. " = " .. format(value, o, level + 1, path))
    end
  end
  path[v] = nil
  if shown < n then parts[#parts + 1] = ("... (%d more)"):format(n - shown) end

  -- Nested tables come back laid out from column 0; their caller indents them.
  local one_line = "{ " .. table.concat(parts, ", ") .. " }"
  if not multiline and #o.indent * level + #one_line <= o.width then return one_line end
  if not multiline then
    -- short entries share lines, up to the width
    local lines, line = {}, nil
    local room = o.width - #o.indent * (level + 1) - 1 -- the comma after each line
    for _, p in ipairs(parts) do
      if line and #line + 2 + #p <= room then
        line = line .. ", " .. p
      else
        if line then lines[#lines + 1] = line end
        line = p
      end
    end
    lines[#lines + 1] = line
    parts = lines
  end
  for i, p in ipairs(parts) do
    parts[i] = o.indent .. p:gsub("\n", "\n" .. o.indent)
  end
  return "{\n" .. table.concat(parts, ",\n") .. "\n}"
end

--- format(value [, opts]) -> string. opts: depth (4: deeper tables show as {...}), items (50
-- per table), width (80: a table that fits stays on one line), indent ("  ").
---@param v any
---@param opts? {depth?: integer, items?: integer, width?: integer, indent?: string}
---@return string
function M.format(v, opts)
  local o = {}
  for k, d in pairs(DEFAULTS) do o[k] = opts and opts[k] or d end
  return format(v, o, 0, {})
end

--- format_values(...) -> every argument formatted, separated by tabs (how the REPL shows results).
---@param ... any
---@return string
function M.format_values(...)
  local out = {}
  for i = 1, select("#", ...) do out[i] = M.format((select(i, ...))) end
  return table.concat(out, "\t")
end

return M
