--- sacm.xml: XML elements as plain Lua tables, a builder and navigation. See docs/api/xml.md.
-- An element is { name = "local", ns = "uri" or nil, attr = { ... }, child1, child2, ... } with
-- children that are elements or strings. Parsing and serializing are in C (sacm._xml); XMPP
-- stanzas arrive as the same tables.
local core = require "sacm._xml"

---@class sacm.xml.Element an element: name, ns, attr and children (elements or strings) at 1..n
---@field name string
---@field ns string? its namespace URI
---@field attr table<string, string>
---@field [integer] sacm.xml.Element|string
local Element = core.metatable
local methods = Element.__index

local type, pairs, rawequal, setmetatable, getmetatable, tostring, error =
  type, pairs, rawequal, setmetatable, getmetatable, tostring, error
local concat = table.concat

local xml = {}

-- The builder's cursor, per element being built: the list of open elements, root first. It is
-- kept here rather than in the element so elements stay plain data (equal(), serialize() and
-- clone() never see it). Weak keys: an element no longer used is collected with its cursor.
local cursors = setmetatable({}, { __mode = "k" })

--- parse(s [, opts]) -> element | nil, err. opts.max_depth (256, at most 1000), opts.max_bytes
-- (16 MiB), opts.max_memory (8 x #s + 1 MiB: what the tree may cost).
---@type fun(s: string, opts?: {max_depth?: integer, max_bytes?: integer, max_memory?: integer}): sacm.xml.Element?, sacm.Error?
xml.parse = core.parse

--- serialize(el [, opts]) -> string. opts.indent pretty-prints. Raises on invalid data.
---@type fun(el: sacm.xml.Element, opts?: {indent?: string}): string
xml.serialize = core.serialize

--- clean_text(s [, max_bytes]) -> string, replaced, cut. Makes s valid XML character data:
-- invalid UTF-8 bytes and characters XML 1.0 forbids become U+FFFD; with max_bytes the result is
-- cut to at most that many bytes on a character boundary. Numbers are converted with tostring.
---@param s string|number
---@param max_bytes? integer cut the result to at most this many bytes
---@return string text valid XML character data
---@return integer replaced how many characters became U+FFFD
---@return boolean cut whether max_bytes cut it
function xml.clean_text(s, max_bytes)
  if type(s) == "number" then s = tostring(s) end
  if type(s) ~= "string" then error("clean_text: expected a string, got " .. type(s), 2) end
  return core.clean_text(s, max_bytes)
end

--- is_element(v): true for tables made by parse, element, clone or the XMPP code.
---@param v any
---@return boolean
function xml.is_element(v)
  return type(v) == "table" and getmetatable(v) == Element
end

local function attr_equal(a, b)
  a, b = a or {}, b or {}
  for k, v in pairs(a) do
    if b[k] ~= v then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

--- equal(a, b): deep structural equality of name, ns, attr and children.
---@param a any
---@param b any
---@return boolean
local function equal(a, b)
  if rawequal(a, b) then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  if a.name ~= b.name or a.ns ~= b.ns or not attr_equal(a.attr, b.attr) then return false end
  local n = #a
  if n ~= #b then return false end
  for i = 1, n do
    local x, y = a[i], b[i]
    if type(x) == "table" then
      if not equal(x, y) then return false end
    elseif x ~= y then
      return false
    end
  end
  return true
end
xml.equal = equal

-- A new element; attr is copied, attr.xmlns (if present) replaces the inherited ns.
local function new_element(name, attr, ns, level)
  if type(name) ~= "string" or name == "" then
    error("element name must be a non-empty string, got " .. tostring(name), level)
  end
  local a = {}
  if attr ~= nil then
    if type(attr) ~= "table" then error("attr must be a table, got " .. type(attr), level) end
    for k, v in pairs(attr) do
      if type(k) ~= "string" then error("attribute names must be strings", level) end
      local tv = type(v)
      if tv == "number" then
        v = tostring(v)
      elseif tv ~= "string" then
        error(("attribute '%s' of <%s> must be a string, got %s"):format(k, name, tv), level)
      end
      if k == "xmlns" then
        ns = v
      else
        a[k] = v
      end
    end
  end
  if ns == "" then ns = nil end -- xmlns="" means no namespace
  return setmetatable({ name = name, ns = ns, attr = a }, Element)
end

--- element(name [, attr]) -> element. attr.xmlns sets the namespace.
---@param name string
---@param attr? table<string, string> attr.xmlns sets the namespace
---@return sacm.xml.Element
function xml.element(name, attr)
  return new_element(name, attr, nil, 3)
end

-- element_in(name, attr, ns): element() with a default namespace that attr.xmlns overrides
-- (sacm.xmpp.stanza: jabber:client without copying attr twice).
function xml._element_in(name, attr, ns)
  return new_element(name, attr, ns, 2) -- tail calls all the way: level 2 is the user's code
end

local function cursor_of(self)
  local path = cursors[self]
  return path and path[#path] or self
end

local function append_text(el, s)
  if s == "" then return end
  local n = #el
  if type(el[n]) == "string" then
    el[n] = el[n] .. s -- keep adjacent text in one string, as parse() does
  else
    el[n + 1] = s
  end
end

--- el:tag(name [, attr]): appends a child at the cursor and moves the cursor into it. The child
-- inherits the cursor element's ns unless attr.xmlns is given.
---@param name string
---@param attr? table<string, string>
---@return sacm.xml.Element self
function methods:tag(name, attr)
  local cur = cursor_of(self)
  local child = new_element(name, attr, cur.ns, 3)
  cur[#cur + 1] = child
  local path = cursors[self]
  if not path then
    path = { self }
    cursors[self] = path
  end
  path[#path + 1] = child
  return self
end

--- el:text(s): appends text at the cursor.
---@param s string|number
---@return sacm.xml.Element self
function methods:text(s)
  local ts = type(s)
  if ts == "number" then
    s = tostring(s)
  elseif ts ~= "string" then
    error("text must be a string, got " .. ts, 2)
  end
  append_text(cursor_of(self), s)
  return self
end

--- el:up(): moves the cursor to the parent of the cursor element.
---@return sacm.xml.Element self
function methods:up()
  local path = cursors[self]
  if not path or #path < 2 then
    error("up() with the cursor already at the root <" .. tostring(self.name) .. ">", 2)
  end
  path[#path] = nil
  return self
end

--- el:reset(): moves the cursor back to the root.
---@return sacm.xml.Element self
function methods:reset()
  cursors[self] = nil
  return self
end

--- el:add(child): appends an existing element or a string at the cursor (the cursor stays).
---@param child sacm.xml.Element|string
---@return sacm.xml.Element self
function methods:add(child)
  local tc = type(child)
  if tc == "string" or tc == "number" then
    append_text(cursor_of(self), tostring(child))
  elseif tc == "table" and type(child.name) == "string" then
    local cur = cursor_of(self)
    cur[#cur + 1] = child
  else
    error("add() takes an element or a string, got " .. tc, 2)
  end
  return self
end

-- ns nil matches any namespace, "" matches no namespace. Every stanza handler and pubsub event
-- goes through here, so the name is compared first: a text child is a string, and indexing a
-- string gives nil for "name" and "ns" (the string library has no such fields), so only
-- name == nil needs the type() call.
local function matches(c, name, ns)
  if name == nil then
    if type(c) ~= "table" then return false end
  elseif c.name ~= name then
    return false
  end
  return ns == nil or c.ns == ns or (ns == "" and c.ns == nil)
end

--- el:child([name [, ns]]) -> the first element child matching, or nil.
---@param name? string
---@param ns? string nil: any namespace, "": none
---@return sacm.xml.Element? child
function methods:child(name, ns)
  if ns ~= nil and ns ~= "" and name ~= nil then
    -- what stanza handlers and pubsub ask for on every stanza, compared in the loop itself
    for i = 1, #self do
      local c = self[i]
      if c.name == name and c.ns == ns then return c end
    end
    return nil
  end
  for i = 1, #self do
    local c = self[i]
    if matches(c, name, ns) then return c end
  end
  return nil
end

--- el:children([name [, ns]]) -> iterator over the matching element children.
---@param name? string
---@param ns? string nil: any namespace, "": none
---@return fun(): sacm.xml.Element? iterator
function methods:children(name, ns)
  local i = 0
  return function()
    while true do
      i = i + 1
      local c = self[i]
      if c == nil then return nil end
      if matches(c, name, ns) then return c end
    end
  end
end

---@param el sacm.xml.Element
---@return string text
local function get_text(el)
  local parts = {}
  for i = 1, #el do
    local c = el[i]
    if type(c) == "string" then parts[#parts + 1] = c end
  end
  return concat(parts)
end

--- el:get_text() -> the element's direct text children concatenated ("" when none).
methods.get_text = get_text

-- Splits a find() path into steps { name, ns } and an optional final "@attr" or "#".
-- Braces are read first because namespace URIs may contain '/', '#' and '@'.
local function parse_path(path)
  if type(path) ~= "string" or path == "" then
    error("find() path must be a non-empty string", 3)
  end
  local steps, pos, len = {}, 1, #path
  while pos <= len do
    local c = path:sub(pos, pos)
    if c == "@" then
      local key = path:sub(pos + 1)
      local uri, lname = key:match("^{([^}]*)}(.+)$")
      if uri then key = uri .. " " .. lname end
      if key == "" then error("find(): empty attribute name in '" .. path .. "'", 3) end
      return steps, "@", key
    elseif c == "#" then
      if pos ~= len then error("find(): '#' must end the path in '" .. path .. "'", 3) end
      return steps, "#"
    end
    local ns
    if c == "{" then
      local close = path:find("}", pos + 1, true)
      if not close then error("find(): unclosed '{' in '" .. path .. "'", 3) end
      ns = path:sub(pos + 1, close - 1)
      pos = close + 1
    end
    local s, e = path:find("^[^/@#{}]+", pos)
    if not s then error("find(): missing element name in '" .. path .. "'", 3) end
    steps[#steps + 1] = { name = path:sub(s, e), ns = ns }
    pos = e + 1
    local sep = path:sub(pos, pos)
    if sep == "/" then
      pos = pos + 1
      if pos > len then error("find(): path ends with '/' in '" .. path .. "'", 3) end
    elseif sep ~= "" and sep ~= "@" and sep ~= "#" then
      error("find(): unexpected '" .. sep .. "' in '" .. path .. "'", 3)
    end
  end
  return steps
end

-- Depth-first, so the result is the first match of the whole path in document order.
local function search(el, steps, i, final, key)
  if i > #steps then
    if final == "@" then
      return el.attr and el.attr[key]
    elseif final == "#" then
      return get_text(el)
    end
    return el
  end
  local step = steps[i]
  local name = step.name ~= "*" and step.name or nil
  local ns = step.ns
  for j = 1, #el do
    local c = el[j]
    if matches(c, name, ns) then
      local r = search(c, steps, i + 1, final, key)
      if r ~= nil then return r end
    end
  end
  return nil
end

--- el:find(path) -> element, string or nil. Steps are "name", "{ns}name" or "*" separated by
-- '/', relative to el's children; a last "@attr" (or "@{ns}attr") gives an attribute, "#" the
-- text. e.g. iq:find("{http://jabber.org/protocol/disco#info}query/identity@category")
---@param path string
---@return sacm.xml.Element|string|nil found
function methods:find(path)
  local steps, final, key = parse_path(path)
  return search(self, steps, 1, final, key)
end

---@param el sacm.xml.Element
---@return sacm.xml.Element copy
local function clone(el)
  local attr = {}
  if el.attr then
    for k, v in pairs(el.attr) do attr[k] = v end
  end
  local copy = setmetatable({ name = el.name, ns = el.ns, attr = attr }, Element)
  for i = 1, #el do
    local c = el[i]
    copy[i] = type(c) == "table" and clone(c) or c
  end
  return copy
end

--- el:clone() -> a deep copy (the builder cursor is not copied).
methods.clone = clone

--- el:pretty() -> the element serialized with two-space indentation.
---@return string xml
function methods:pretty()
  return core.serialize(self, { indent = "  " })
end

return xml
