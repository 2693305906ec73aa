--- sacm._complete: what the REPL offers on Tab. Private to sacm.repl.
-- The word being completed is a name, maybe after `a.b.` or `obj:`. The chain before it is looked
-- up from the globals (indexing runs __index, so sacm's lazily loaded modules appear), and the
-- candidates are the identifier keys of the value and of the __index tables behind it: the
-- methods of objects and of userdata such as connections and timers. A metatable may list the
-- names its __index function serves in a `__completion` table (keys are the names).
--
-- Private names stay out unless the word typed starts with an underscore: names with a leading
-- underscore, and the internal fields of objects. An object (a table whose metatable has an
-- __index table) offers its methods, and of its own fields those its class lists in a
-- `__fields` table (keys are the names) when it has one.
local M = {}

local KEYWORDS = {}
for word in ([[and break do else elseif end false for function goto if in local nil not or
  repeat return then true until while]]):gmatch("%a+") do KEYWORDS[#KEYWORDS + 1] = word end

local MAX_CHAIN = 8 -- __index tables followed behind a value

local function safe_index(v, k)
  local ok, r = pcall(function() return v[k] end)
  if ok then return r end
end

-- Resolves "a.b.c" from env; nil if any step is not there.
local function resolve(path, env)
  local v = env
  for name in path:gmatch("[^.]+") do
    local t = type(v)
    if t ~= "table" and t ~= "userdata" and t ~= "string" then return nil end
    v = safe_index(v, name)
    if v == nil then return nil end
  end
  return v
end

-- Every identifier key reachable from v: its own (tables) and those of its __index tables.
local function collect(v, methods_only, out, prefix)
  local seen = {}
  local depth = 0
  local mt0 = getmetatable(v)
  local fields = type(v) == "table" and type(mt0) == "table" and type(rawget(mt0, "__index")) == "table"
    and rawget(mt0, "__fields")
  local public = type(fields) == "table" and prefix:sub(1, 1) ~= "_" and fields or nil
  while v ~= nil and not seen[v] and depth < MAX_CHAIN do
    seen[v] = true
    depth = depth + 1
    if type(v) == "table" then
      for k, value in next, v do
        if type(k) == "string" and k:match("^[%a_][%w_]*$") and not (depth == 1 and public and not public[k])
            and (not methods_only or type(value) == "function") and out[k] == nil then
          out[k] = value
        end
      end
    end
    local mt = getmetatable(v)
    if type(mt) ~= "table" then break end
    -- names an __index function would serve (sacm's lazily loaded modules)
    local extra = rawget(mt, "__completion")
    if type(extra) == "table" then
      for k in next, extra do
        -- only those that can match: serving one may load a module
        if type(k) == "string" and out[k] == nil and k:sub(1, #prefix) == prefix then
          local value = safe_index(v, k)
          if value ~= nil and (not methods_only or type(value) == "function") then out[k] = value end
        end
      end
    end
    local index = rawget(mt, "__index")
    if type(index) ~= "table" then break end
    v = index
  end
  return out
end

--- complete(line, start, finish [, env]) -> sorted candidates, append character.
-- start and finish are 0-based byte offsets of the word in line (readline's convention).
function M.complete(line, start, finish, env)
  env = env or _G
  local word = line:sub(start + 1, finish)
  local before = line:sub(1, start)
  local sep = before:sub(-1)
  local found = {}
  if sep == "." or sep == ":" then
    local path = before:sub(1, -2):match("[%a_][%w_.]*$")
    -- "x.y" only when nothing but an operator or space comes before it (not "f().y", "a[1].y")
    if not path or path:find("..", 1, true) or path:sub(-1) == "." then return {} end
    local lead = before:sub(1, -2 - #path)
    if lead:match("[%w_%]%)\"'.]$") then return {} end
    local v = resolve(path, env)
    if v == nil then return {} end
    if type(v) ~= "table" then
      -- userdata and strings: only what their metatable's __index offers
      local mt = getmetatable(v)
      v = type(mt) == "table" and type(rawget(mt, "__index")) == "table" and rawget(mt, "__index") or nil
    end
    if v == nil then return {} end
    collect(v, sep == ":", found, word)
  else
    if before:match("[%w_%]%)\"']$") then return {} end
    collect(env, false, found, word)
    for _, kw in ipairs(KEYWORDS) do if found[kw] == nil then found[kw] = true end end
  end
  local names = {}
  local hide_private, hide_meta = word:sub(1, 1) ~= "_", word:sub(1, 2) ~= "__"
  for name in pairs(found) do
    if name:sub(1, #word) == word and not (hide_private and name:sub(1, 1) == "_")
        and not (hide_meta and name:sub(1, 2) == "__") then
      names[#names + 1] = name
    end
  end
  table.sort(names)
  local append
  if #names == 1 then
    local value = found[names[1]]
    if type(value) == "function" then append = "(" end
  end
  return names, append
end

return M
