--- Collection kind "groups": local groups from /etc/group.
local fs = require "sacm.fs"
local text = require("sacm.collect").text

local M = {
  kind = "groups",
  description = "local groups and their members (/etc/group)",
  version = 1,
}

local GROUP = "/etc/group"

--- parse_group(text) -> items {name, gid, members} sorted by gid then name; members is the
-- comma-separated member list as the file has it ("" for none). Malformed lines, comments and
-- NIS "+"/"-" entries are skipped.
function M.parse_group(s)
  local items = {}
  for line in s:gmatch("[^\n]+") do
    local name, gid, members = line:match("^([^:#+%-][^:]*):[^:]*:(%d+):([^:]*)$")
    if name then
      items[#items + 1] = { name = text(name), gid = tonumber(gid), members = text(members) }
    end
  end
  table.sort(items, function(a, b)
    if a.gid ~= b.gid then return a.gid < b.gid end
    return a.name < b.name
  end)
  return items
end

function M.applicable()
  if fs.exists(GROUP) then return true end
  return false, GROUP .. " does not exist"
end

--- collect() -> {attributes = {count}, items = {name, gid, members}}.
function M.collect()
  local s, err = fs.read(GROUP)
  if not s then return nil, err end
  local items = M.parse_group(s)
  return { attributes = { count = #items }, items = items }
end

return M
