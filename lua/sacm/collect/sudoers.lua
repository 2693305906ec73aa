--- Collection kind "sudoers": sudo's policy as sudoers(5) reads it, /etc/sudoers and the files it
-- includes (@include, @includedir and their old "#" spellings): the Defaults settings and the
-- user specifications' tags that benchmarks look at (NOPASSWD, !authenticate).
local fs = require "sacm.fs"
local confdirs = require "sacm.confdirs"
local errors = require "sacm.error"
local text = require("sacm.collect").text

local M = {
  kind = "sudoers",
  description = "sudo Defaults and rule tags from /etc/sudoers and its includes",
  version = 1,
}

M.SUDOERS = "/etc/sudoers"
local MAX_DEPTH = 8 -- sudo stops at 128; eight is plenty for real policies and bounds the walk

-- "a, b=\"x, y\", !c" -> {"a", "b=\"x, y\"", "!c"}: commas outside double quotes separate.
local function split_settings(s)
  local out, cur, quoted = {}, {}, false
  for i = 1, #s do
    local c = s:sub(i, i)
    if c == '"' then quoted = not quoted end
    if c == "," and not quoted then
      out[#out + 1] = table.concat(cur):match("^%s*(.-)%s*$")
      cur = {}
    else
      cur[#cur + 1] = c
    end
  end
  out[#out + 1] = table.concat(cur):match("^%s*(.-)%s*$")
  return out
end

--- parse(text) -> list of entries in file order, each with `line`:
--   {kind = "defaults", binding, name, value, negated, operator}   one per setting of a line;
--     binding is "" for global Defaults, else the qualifier as written (":alice", "@host",
--     ">root", "!/usr/bin/x"); value is a string, or true for a flag, false when negated;
--   {kind = "include", path, dir = bool}                             @include / @includedir;
--   {kind = "rule", text, nopasswd}                                  a user specification.
-- "#" starts a comment unless it is "#include" or "#includedir"; "\" continues a line.
function M.parse(s)
  local out, pending, start = {}, nil, nil
  for n, raw in confdirs.lines(s) do
    local line = raw
    if pending then line, pending = pending .. " " .. raw, nil else start = n end
    if line:sub(-1) == "\\" then
      pending = line:sub(1, -2)
    else
      local body = line:match("^%s*(.-)%s*$")
      local directive, arg = body:match("^[@#](include[%a]*)%s+(.-)$")
      if directive == "include" or directive == "includedir" then
        out[#out + 1] = { kind = "include", path = arg:match('^"(.*)"$') or arg, dir = directive == "includedir",
          line = start }
      else
        body = body:gsub("%s+#.*$", ""):gsub("^#.*$", "")
        local binding, settings = body:match("^Defaults([:@>!]?%S*)%s+(.+)$")
        if binding then
          for _, setting in ipairs(split_settings(settings)) do
            local negated = setting:sub(1, 1) == "!"
            if negated then setting = setting:sub(2):match("^%s*(.*)$") end
            local name, op, value = setting:match("^([%w_]+)%s*([%+%-]?=)%s*(.-)$")
            if not name then name = setting:match("^([%w_]+)$") end
            if name then
              if value then value = value:match('^"(.*)"$') or value end
              local v = value or true
              if negated then v = false end
              out[#out + 1] = { kind = "defaults", binding = binding, name = name, negated = negated,
                operator = op, value = v, line = start }
            end
          end
        elseif body ~= "" and not body:find("^%a+_Alias%s") then
          out[#out + 1] = { kind = "rule", text = body, nopasswd = body:find("NOPASSWD%s*:") ~= nil,
            line = start }
        end
      end
    end
  end
  return out
end

-- sudo skips files in an @includedir whose names end in "~" or contain "." (editor backups,
-- package manager leftovers such as .dpkg-old), as sudoers(5) says.
local function included_name(name)
  return name:sub(-1) ~= "~" and not name:find(".", 1, true)
end

function M.applicable(opts)
  return confdirs.needs(opts, "sudoers", M.SUDOERS, M.SUDOERS .. " does not exist (sudo is not installed)")
end

--- collect({root}) -> {attributes, items}. items: the Defaults settings and rules of every file
-- read, in the order sudo reads them, each with file and line ({kind, file, line, binding, name,
-- value, negated} or {kind = "rule", file, line, text, nopasswd}). attributes: files (count),
-- unreadable (files that could not be read, e.g. without root), and for every global Defaults
-- setting "defaults.<name>" = its last value (sudo applies them in order: the last one wins;
-- a negated flag is false).
function M.collect(opts)
  local root = confdirs.check_root(opts, "sudoers")
  local items, files, unreadable = {}, 0, 0
  local seen = {}
  local function read(path, depth)
    if depth > MAX_DEPTH or seen[path] then return end
    seen[path] = true
    local s = confdirs.read(root, path)
    if not s then
      unreadable = unreadable + 1
      return
    end
    files = files + 1
    for _, e in ipairs(M.parse(s)) do
      if e.kind == "include" then
        local target = e.path
        if target:sub(1, 1) ~= "/" then target = path:match("^(.*)/") .. "/" .. target end
        if e.dir then
          local entries = fs.list(confdirs.join(root, target)) or {}
          for _, entry in ipairs(entries) do
            if entry.type ~= "directory" and included_name(entry.name) then
              read(target .. "/" .. entry.name, depth + 1)
            end
          end
        else
          read(target, depth + 1)
        end
      else
        e.file = text(path)
        if e.kind == "rule" then e.text = text(e.text) end
        if type(e.value) == "string" then e.value = text(e.value) end
        if e.binding then e.binding = text(e.binding) end
        items[#items + 1] = e
      end
    end
  end
  read(M.SUDOERS, 1)
  if files == 0 then return nil, errors.new("EACCES", M.SUDOERS .. " could not be read") end
  local attributes = { files = files, unreadable = unreadable }
  for _, e in ipairs(items) do
    if e.kind == "defaults" and e.binding == "" then attributes["defaults." .. e.name] = e.value end
  end
  return { attributes = attributes, items = items }
end

return M
