--- sacm.policy.helpers: the functions policy checks find as globals (see docs/policies.md).
-- Pure functions of their arguments: no I/O, no state, nothing that leads back to the runtime.
-- They work on plain tables and on the read-only posture views alike (reading through
-- ipairs/pairs/#, never raw access).
local M = {}

local type, ipairs, pairs, tostring = type, ipairs, pairs, tostring
-- Pattern matching is written as s:find(...) / s:match(...) so that inside the sandbox it goes
-- through the sandbox's string methods, which charge backtracking to the check's budget; plain
-- (non-pattern) calls use the locals.
local s_byte, s_sub, s_find, s_gsub = string.byte, string.sub, string.find, string.gsub

--- find_item(items, key, value) -> the first item whose item[key] == value, or nil.
-- find_item(items, {key = value, ...}) -> the first item matching every pair.
function M.find_item(items, key, value)
  if items == nil then return nil end
  if type(key) == "table" then
    for _, item in ipairs(items) do
      local all = true
      for k, v in pairs(key) do
        if item[k] ~= v then all = false break end
      end
      if all then return item end
    end
    return nil
  end
  for _, item in ipairs(items) do
    if item[key] == value then return item end
  end
  return nil
end

--- filter_items(items, predicate) -> a new list of the items for which predicate(item) is true;
-- predicate may also be a table {key = value, ...} that an item must match.
function M.filter_items(items, predicate)
  local out = {}
  if items == nil then return out end
  if type(predicate) == "table" then
    local wanted = predicate
    predicate = function(item)
      for k, v in pairs(wanted) do
        if item[k] ~= v then return false end
      end
      return true
    end
  end
  for _, item in ipairs(items) do
    if predicate(item) then out[#out + 1] = item end
  end
  return out
end

--- is_empty(t) -> true when t (a table or a read-only view) has no entries; nil counts as empty.
function M.is_empty(t)
  if t == nil then return true end
  for _ in pairs(t) do return false end
  return true
end

--- contains(list, value) -> true when value is an element of list.
function M.contains(list, value)
  if list == nil then return false end
  for _, v in ipairs(list) do
    if v == value then return true end
  end
  return false
end

--- split(s, sep) -> the pieces of s between occurrences of the plain string sep (default ",");
-- pieces are trimmed and empty ones dropped: split("a, b,,c") -> {"a", "b", "c"}.
function M.split(s, sep)
  sep = sep or ","
  local out = {}
  if s == nil or s == "" then return out end
  local start = 1
  while true do
    local i, j = s_find(s, sep, start, true)
    local piece = s_sub(s, start, (i or 0) - 1)
    piece = piece:match("^%s*(.-)%s*$")
    if piece ~= "" then out[#out + 1] = piece end
    if not i then break end
    start = j + 1
  end
  return out
end

--- trim(s) -> s without leading and trailing white space.
function M.trim(s)
  return (s:match("^%s*(.-)%s*$"))
end

---------------------------------------------------------------------------- versions

-- dpkg's ordering of one character of the non-digit part: ~ before everything (even the end),
-- then the end of the part, letters, everything else.
local function order(c)
  if c == nil then return 0 end
  if c == 126 then return -1 end                                   -- ~
  if (c >= 65 and c <= 90) or (c >= 97 and c <= 122) then return c end -- letters
  return c + 256
end

local function is_digit(c) return c ~= nil and c >= 48 and c <= 57 end

-- dpkg's verrevcmp: alternating non-digit and digit runs
local function compare_part(a, b)
  local i, j = 1, 1
  local la, lb = #a, #b
  while i <= la or j <= lb do
    local first_diff = 0
    while (i <= la and not is_digit(s_byte(a, i))) or (j <= lb and not is_digit(s_byte(b, j))) do
      local ca = i <= la and not is_digit(s_byte(a, i)) and s_byte(a, i) or nil
      local cb = j <= lb and not is_digit(s_byte(b, j)) and s_byte(b, j) or nil
      local oa, ob = order(ca), order(cb)
      if oa ~= ob then return oa < ob and -1 or 1 end
      if ca then i = i + 1 end
      if cb then j = j + 1 end
    end
    while s_byte(a, i) == 48 do i = i + 1 end -- leading zeros
    while s_byte(b, j) == 48 do j = j + 1 end
    while is_digit(s_byte(a, i)) and is_digit(s_byte(b, j)) do
      if first_diff == 0 then first_diff = s_byte(a, i) - s_byte(b, j) end
      i, j = i + 1, j + 1
    end
    if is_digit(s_byte(a, i)) then return 1 end   -- a's number is longer
    if is_digit(s_byte(b, j)) then return -1 end
    if first_diff ~= 0 then return first_diff < 0 and -1 or 1 end
  end
  return 0
end

local function parse_version(v)
  v = tostring(v)
  local epoch, rest = v:match("^(%d+):(.*)$")
  if not epoch then epoch, rest = "0", v end
  local upstream, revision = rest:match("^(.*)%-([^%-]*)$")
  if not upstream then upstream, revision = rest, "" end
  return tonumber(epoch) or 0, upstream, revision
end

--- version_compare(a, b) -> -1, 0 or 1: Debian's version ordering (epoch:upstream-revision,
-- "~" before anything, so 1.0~rc1 < 1.0), which also orders RPM's usual versions sensibly.
function M.version_compare(a, b)
  local ea, ua, ra = parse_version(a)
  local eb, ub, rb = parse_version(b)
  if ea ~= eb then return ea < eb and -1 or 1 end
  local c = compare_part(ua, ub)
  if c ~= 0 then return c end
  return compare_part(ra, rb)
end

--- version_lt(a, b) -> true when version a is older than version b.
function M.version_lt(a, b)
  return M.version_compare(a, b) < 0
end

---------------------------------------------------------------------------- glob

local glob_cache, glob_cache_size = {}, 0

local function glob_to_pattern(glob)
  local out, i, n = { "^" }, 1, #glob
  while i <= n do
    local c = s_sub(glob, i, i)
    if c == "*" then
      out[#out + 1] = ".*"
    elseif c == "?" then
      out[#out + 1] = "."
    elseif c == "[" then
      local close = s_find(glob, "]", i + 2, true)
      if close then
        local set = s_sub(glob, i + 1, close - 1)
        if s_sub(set, 1, 1) == "!" then set = "^" .. s_sub(set, 2) end
        out[#out + 1] = "[" .. s_gsub(set, "%%", "%%%%") .. "]" -- literal %: linear
        i = close
      else
        out[#out + 1] = "%["
      end
    elseif s_find(c, "^[%^%$%(%)%%%.%]%+%-]$") then
      out[#out + 1] = "%" .. c
    else
      out[#out + 1] = c
    end
    i = i + 1
  end
  out[#out + 1] = "$"
  return table.concat(out)
end

--- glob(pattern, s) -> true when s matches the shell-style pattern: * (any run of characters,
-- also "/"), ? (one character), [abc], [a-z], [!abc]; everything else stands for itself.
function M.glob(pattern, s)
  if type(s) ~= "string" then return false end
  local lua_pattern = glob_cache[pattern]
  if not lua_pattern then
    lua_pattern = glob_to_pattern(pattern)
    if glob_cache_size >= 256 then glob_cache, glob_cache_size = {}, 0 end
    glob_cache[pattern] = lua_pattern
    glob_cache_size = glob_cache_size + 1
  end
  return s:find(lua_pattern) ~= nil
end

local SSG_RULE = "xccdf_org.ssgproject.content_rule_"

--- references(ssg, cis, cis_title) -> a rule's references: the SCAP Security Guide rules named
-- in the list ssg (without the XCCDF prefix), then the CIS Debian Linux 12 Benchmark
-- recommendation cis (number) with its title, when given.
---@param ssg string[]
---@param cis? string
---@param cis_title? string
---@return {system: string, id: string, title?: string}[]
function M.references(ssg, cis, cis_title)
  local out = {}
  for _, name in ipairs(ssg) do out[#out + 1] = { system = "ssg", id = SSG_RULE .. name } end
  if cis then out[#out + 1] = { system = "cis-debian12", id = cis, title = cis_title } end
  return out
end

return M
