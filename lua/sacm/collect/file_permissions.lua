--- Collection kind "file_permissions": owner, group and mode of the system files benchmarks fix
-- (account databases and their backups, cron and at, sshd_config, the boot loader's
-- configuration, login banners). A kind of its own rather than the "files" kind's paths, which
-- sites tune for their own monitoring: the baseline needs these paths whatever that list says,
-- and only their metadata (lstat, no hashing, no directory walks).
local fs = require "sacm.fs"
local confdirs = require "sacm.confdirs"
local files = require "sacm.collect.files"
local users = require "sacm.collect.users"
local groups = require "sacm.collect.groups"
local text = require("sacm.collect").text

local M = {
  kind = "file_permissions",
  description = "owner, group and mode of the system files security benchmarks check",
  version = 1,
}

M.DEFAULT_PATHS = {
  "/etc/passwd", "/etc/passwd-", "/etc/group", "/etc/group-", "/etc/shadow", "/etc/shadow-",
  "/etc/gshadow", "/etc/gshadow-", "/etc/shells", "/etc/security/opasswd",
  "/etc/crontab", "/etc/cron.hourly", "/etc/cron.daily", "/etc/cron.weekly", "/etc/cron.monthly",
  "/etc/cron.d", "/etc/cron.allow", "/etc/cron.deny", "/etc/at.allow", "/etc/at.deny",
  "/etc/ssh/sshd_config", "/boot/grub/grub.cfg", "/etc/issue", "/etc/issue.net", "/etc/motd",
}

local function names(root)
  local out = { users = {}, groups = {} }
  local p = fs.read(confdirs.join(root, "/etc/passwd"))
  for _, e in ipairs(p and users.parse_passwd(p) or {}) do
    if out.users[e.uid] == nil then out.users[e.uid] = e.name end
  end
  local g = fs.read(confdirs.join(root, "/etc/group"))
  for _, e in ipairs(g and groups.parse_group(g) or {}) do
    if out.groups[e.gid] == nil then out.groups[e.gid] = e.name end
  end
  return out
end

function M.applicable(opts)
  confdirs.check_root(opts, "file_permissions")
  return true
end

--- collect({paths, root}) -> {attributes = {count}, items = {path, exists, type, mode, uid, gid,
-- owner, group, world_writable, setuid, setgid, sticky, [target]}} in the order of paths (the
-- "files" kind's items without hash). Owner and group names come from the (root's) passwd and
-- group. A link is described itself, with its target: benchmarks judge the file, and a link
-- where a file should be is worth seeing.
function M.collect(opts)
  local root = confdirs.check_root(opts, "file_permissions")
  local paths = opts and opts.paths or M.DEFAULT_PATHS
  if type(paths) ~= "table" then error("file_permissions: opts.paths must be a list", 2) end
  local id_names = names(root)
  local items = {}
  for i, path in ipairs(paths) do
    if type(path) ~= "string" or path:sub(1, 1) ~= "/" then
      error(("file_permissions: opts.paths[%d] must be an absolute path"):format(i), 2)
    end
    local st, err = fs.lstat(confdirs.join(root, path))
    if st then
      local item = files.describe(path, st, id_names)
      item.size, item.mtime = nil, nil
      if item.type == "link" then
        local target = fs.readlink(confdirs.join(root, path))
        item.target = target and text(target) or nil
      end
      items[#items + 1] = item
    elseif err.condition == "ENOENT" or err.condition == "ENOTDIR" then
      items[#items + 1] = { path = text(path), exists = false }
    else
      items[#items + 1] = { path = text(path), error = text(tostring(err)) }
    end
  end
  return { attributes = { count = #items }, items = items }
end

return M
