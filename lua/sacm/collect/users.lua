--- Collection kind "users": local accounts from /etc/passwd, with the state of each password
-- from /etc/shadow when we may read it (root, or the shadow group).
local fs = require "sacm.fs"
local text = require("sacm.collect").text

local M = {
  kind = "users",
  description = "local user accounts (passwd, with password state from shadow)",
  version = 1,
}

local PASSWD, SHADOW = "/etc/passwd", "/etc/shadow"

local function split_colons(line)
  local f = {}
  for field in (line .. ":"):gmatch("([^:]*):") do f[#f + 1] = field end
  return f
end

--- parse_passwd(text) -> list of {name, uid, gid, gecos, home, shell, passwd_field} in file
-- order. Lines that are not seven colon-separated fields with numeric ids, comments and NIS
-- "+"/"-" entries are skipped.
function M.parse_passwd(s)
  local out = {}
  for line in s:gmatch("[^\n]+") do
    local f = split_colons(line)
    local uid, gid = tonumber(f[3]), tonumber(f[4])
    if #f == 7 and f[1] ~= "" and not f[1]:match("^[#+%-]") and math.type(uid) == "integer"
        and math.type(gid) == "integer" then
      out[#out + 1] = { name = f[1], passwd_field = f[2], uid = uid, gid = gid, gecos = f[5], home = f[6],
        shell = f[7] }
    end
  end
  return out
end

--- password_state(hash) -> "set" | "empty" | "locked" from a shadow(5) password field: ""
-- is no password at all (anyone may log in where PAM allows it); a leading "!" or a field that
-- can never match ("*", "!!", "x") is locked; anything else is a hash.
function M.password_state(hash)
  if hash == "" then return "empty" end
  if hash:sub(1, 1) == "!" or hash == "*" or hash == "x" or not hash:match("^[%$%w%./]") then
    return "locked"
  end
  -- descrypt hashes are 13 characters of [./0-9A-Za-z]; anything shorter cannot match
  if not hash:match("^%$") and #hash < 13 then return "locked" end
  return "set"
end

--- parse_shadow(text) -> {[name] = {password, last_change, min_days, max_days, warn_days,
-- inactive, expire}} from shadow(5);
-- day counts are integers or nil when empty.
function M.parse_shadow(s)
  local out = {}
  for line in s:gmatch("[^\n]+") do
    local f = split_colons(line)
    if #f >= 2 and f[1] ~= "" and not f[1]:match("^[#+%-]") then
      out[f[1]] = {
        password = M.password_state(f[2]),
        last_change = tonumber(f[3] or ""),
        min_days = tonumber(f[4] or ""),
        max_days = tonumber(f[5] or ""),
        warn_days = tonumber(f[6] or ""),
        inactive = tonumber(f[7] or ""),
        expire = tonumber(f[8] or ""),
      }
    end
  end
  return out
end

--- items(passwd_entries, shadow | nil) -> the kind's items, sorted by uid then name. password
-- is the shadow state; without shadow it is read from passwd's own field where that holds a
-- hash or is empty, else "unknown".
function M.items(entries, shadow)
  local items = {}
  for _, e in ipairs(entries) do
    local state
    local sh = shadow and shadow[e.name]
    if sh then
      state = sh.password
    elseif e.passwd_field == "x" then
      state = "unknown" -- the hash lives in shadow, which we could not read (or has no entry)
    else
      state = M.password_state(e.passwd_field)
    end
    items[#items + 1] = {
      name = text(e.name), uid = e.uid, gid = e.gid, home = text(e.home), shell = text(e.shell),
      gecos = text(e.gecos), password = state,
      password_expires = sh and sh.expire or nil, password_max_days = sh and sh.max_days or nil,
      password_min_days = sh and sh.min_days or nil, password_warn_days = sh and sh.warn_days or nil,
      password_inactive = sh and sh.inactive or nil, password_last_change = sh and sh.last_change or nil,
      -- the passwd field holds "x" when the hash is in shadow, as it should be
      shadowed = e.passwd_field == "x",
    }
  end
  table.sort(items, function(a, b)
    if a.uid ~= b.uid then return a.uid < b.uid end
    return a.name < b.name
  end)
  return items
end

function M.applicable()
  if fs.exists(PASSWD) then return true end
  return false, PASSWD .. " does not exist"
end

--- collect() -> {attributes = {count, shadow_readable}, items = {name, uid, gid, gecos, home,
-- shell, password, shadowed, password_last_change, password_min_days, password_max_days,
-- password_warn_days, password_inactive, password_expires}}.
function M.collect()
  local passwd, err = fs.read(PASSWD)
  if not passwd then return nil, err end
  local shadow_text = fs.read(SHADOW) -- EACCES when not root: passwords become "unknown"
  local shadow = shadow_text and M.parse_shadow(shadow_text)
  local items = M.items(M.parse_passwd(passwd), shadow)
  return { attributes = { count = #items, shadow_readable = shadow ~= nil }, items = items }
end

return M
