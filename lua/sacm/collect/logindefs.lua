--- Collection kind "logindefs": the shadow suite's defaults for accounts, from /etc/login.defs
-- (password ageing, hashing method, UMASK, UID ranges) and /etc/default/useradd (INACTIVE, SHELL).
-- These are the defaults new accounts and password changes get; what existing accounts have is
-- in shadow (kind "users": password_max_days, ...), and rules judge both.
local fs = require "sacm.fs"
local confdirs = require "sacm.confdirs"
local text = require("sacm.collect").text

local M = {
  kind = "logindefs",
  description = "account defaults from /etc/login.defs and /etc/default/useradd",
  version = 1,
}

M.LOGIN_DEFS = "/etc/login.defs"
M.USERADD = "/etc/default/useradd"

--- parse_login_defs(text) -> {[NAME] = {value, line}}: "NAME value" lines, "#" comments. As
-- shadow's getdef.c reads the file, a name given twice takes its last value. A value may be
-- quoted ("..."): the quotes are removed.
function M.parse_login_defs(s)
  local out = {}
  for n, line in confdirs.lines(s) do
    local name, value = line:match("^%s*([%u%d_]+)%s+(.-)%s*$")
    if name and line:match("^%s*[^#]") then
      value = value:match('^"(.*)"$') or value
      out[name] = { value = value, line = n }
    end
  end
  return out
end

--- parse_useradd(text) -> {[NAME] = {value, line}}: the shell-style "NAME=value" lines of
-- /etc/default/useradd (last one wins, quotes removed).
function M.parse_useradd(s)
  local out = {}
  for n, line in confdirs.lines(s) do
    local name, value = line:match("^%s*([%u%d_]+)=(.-)%s*$")
    if name then
      value = value:match('^"(.*)"$') or value:match("^'(.*)'$") or value
      out[name] = { value = value, line = n }
    end
  end
  return out
end

function M.applicable(opts)
  return confdirs.needs(opts, "logindefs", M.LOGIN_DEFS, M.LOGIN_DEFS .. " does not exist (no shadow suite)")
end

--- collect({root}) -> {attributes = {[name] = value, ...}, items = {{name, value, file, line}}}.
-- attribute names are login.defs names in lower case (pass_max_days, encrypt_method, umask) and
-- useradd's with a "useradd." prefix (useradd.inactive); values are strings as written. items
-- say where each came from, sorted by file then name.
function M.collect(opts)
  local root = confdirs.check_root(opts, "logindefs")
  local s, err = fs.read(confdirs.join(root, M.LOGIN_DEFS), { max_bytes = 1 << 20 })
  if not s then return nil, err end
  local attributes, items = {}, {}
  local function add(prefix, file, parsed)
    local names = {}
    for name in pairs(parsed) do names[#names + 1] = name end
    table.sort(names)
    for _, name in ipairs(names) do
      local key = prefix .. name:lower()
      local v = text(parsed[name].value)
      attributes[key] = v
      items[#items + 1] = { name = key, value = v, file = file, line = parsed[name].line }
    end
  end
  add("", M.LOGIN_DEFS, M.parse_login_defs(s))
  local u = fs.read(confdirs.join(root, M.USERADD), { max_bytes = 1 << 20 })
  if u then add("useradd.", M.USERADD, M.parse_useradd(u)) end
  return { attributes = attributes, items = items }
end

return M
