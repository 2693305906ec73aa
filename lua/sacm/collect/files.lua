--- Collection kind "files": type, mode, owner and content hash of configured paths, and of
-- what directories among them contain (to opts.depth). Links are reported, never followed.
local fs = require "sacm.fs"
local collect = require "sacm.collect"
local users = require "sacm.collect.users"
local groups = require "sacm.collect.groups"
local text = collect.text

local M = {
  kind = "files",
  description = "mode, owner, type and SHA-256 of configured paths and their directory entries",
  version = 1,
}

--- Paths collected when opts.paths is not given: the files that decide who may log in and
-- run what as whom.
M.DEFAULT_PATHS = {
  "/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow", "/etc/sudoers", "/etc/sudoers.d",
  "/etc/ssh/sshd_config", "/etc/ssh/sshd_config.d", "/etc/crontab", "/etc/cron.d",
}
M.DEFAULT_DEPTH = 1
M.DEFAULT_MAX_ENTRIES = 10000
M.DEFAULT_MAX_HASH_BYTES = 64 * 1024 * 1024

local S_ISUID, S_ISGID, S_ISVTX, S_IWOTH = 0x800, 0x400, 0x200, 0x2

local TYPES = { file = "file", directory = "directory", link = "link" }

--- describe(path, st, names) -> the item for a path from its lstat() info: {path, exists =
-- true, type, mode, uid, gid, owner, group, size, mtime, world_writable, setuid, setgid, sticky}.
-- names = {users = {[uid] = name}, groups = {[gid] = name}}. Pure: no I/O.
function M.describe(path, st, names)
  local kind = TYPES[st.type] or "other"
  local mode = st.mode & 0xfff
  return {
    path = text(path),
    exists = true,
    type = kind,
    file_type = st.type, -- the precise type ("socket", "fifo", "char", ...) behind "other"
    mode = ("%04o"):format(mode),
    uid = st.uid, gid = st.gid,
    owner = names.users[st.uid] and text(names.users[st.uid]) or nil,
    group = names.groups[st.gid] and text(names.groups[st.gid]) or nil,
    size = st.size,
    mtime = math.floor(st.mtime),
    -- a link's own permission bits mean nothing (always 0777 on Linux)
    world_writable = kind ~= "link" and mode & S_IWOTH ~= 0,
    setuid = mode & S_ISUID ~= 0,
    setgid = mode & S_ISGID ~= 0,
    sticky = mode & S_ISVTX ~= 0,
  }
end

local function id_names()
  local names = { users = {}, groups = {} }
  local p = fs.read("/etc/passwd")
  for _, e in ipairs(p and users.parse_passwd(p) or {}) do
    if names.users[e.uid] == nil then names.users[e.uid] = e.name end
  end
  local g = fs.read("/etc/group")
  for _, e in ipairs(g and groups.parse_group(g) or {}) do
    if names.groups[e.gid] == nil then names.groups[e.gid] = e.name end
  end
  return names
end

local function join(dir, name)
  return dir:sub(-1) == "/" and dir .. name or dir .. "/" .. name
end

local function check_opts(opts)
  local paths = opts.paths or M.DEFAULT_PATHS
  if type(paths) ~= "table" then error(("files: opts.paths must be a list, got %s"):format(type(paths)), 3) end
  for i, p in ipairs(paths) do
    if type(p) ~= "string" or p:sub(1, 1) ~= "/" then
      error(("files: opts.paths[%d] must be an absolute path, got %s"):format(i, tostring(p)), 3)
    end
  end
  local function int(key, default)
    local v = opts[key] or default
    if math.type(v) ~= "integer" or v < 0 then
      error(("files: opts.%s must be a non-negative integer, got %s"):format(key, tostring(v)), 3)
    end
    return v
  end
  return paths, int("depth", M.DEFAULT_DEPTH), int("max_entries", M.DEFAULT_MAX_ENTRIES),
    int("max_hash_bytes", M.DEFAULT_MAX_HASH_BYTES)
end

function M.applicable()
  return true
end

--- collect({paths, depth = 1, max_entries = 10000, max_hash_bytes = 64 MiB}) ->
-- {attributes = {count, truncated}, items}. Items come in walk order: each path as given,
-- then (for a directory, while depth allows) its entries by name, depth first. A path that
-- does not exist gives {path, exists = false}; one we may not examine {path, error}.
-- sha256 is set for regular files we may read of at most max_hash_bytes; target for links.
function M.collect(opts)
  local paths, max_depth, max_entries, max_hash = check_opts(opts or {})
  local names = id_names()
  local items, truncated = {}, false

  local function visit(path, depth)
    if #items >= max_entries then
      truncated = true
      return
    end
    local st, err = fs.lstat(path)
    if not st then
      if err.condition == "ENOENT" or err.condition == "ENOTDIR" then
        items[#items + 1] = { path = text(path), exists = false }
      else
        items[#items + 1] = { path = text(path), error = text(tostring(err)) }
      end
      return
    end
    local item = M.describe(path, st, names)
    items[#items + 1] = item
    if item.type == "file" and st.size <= max_hash then
      item.sha256 = fs.hash(path, "sha256") -- nil when unreadable: the rest still stands
    elseif item.type == "link" then
      local target = fs.readlink(path)
      item.target = target and text(target) or nil
    elseif item.type == "directory" and depth < max_depth then
      local entries, list_err = fs.list(path)
      if not entries then
        item.error = text(tostring(list_err))
        return
      end
      for _, e in ipairs(entries) do
        visit(join(path, e.name), depth + 1)
        if truncated then return end
      end
    end
  end

  for _, path in ipairs(paths) do
    visit(path, 0)
    if truncated then break end
  end
  return { attributes = { count = #items, truncated = truncated }, items = items }
end


return M
