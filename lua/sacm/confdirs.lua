--- sacm.confdirs: the configuration directories that systemd (sysctl.d, modules-load.d, tmpfiles.d)
-- and kmod (modprobe.d) read, with their precedence: the *.conf files of all the directories are
-- taken together in name order, and a name found in several directories is read from the first
-- directory of the list only ("a file in /etc overrides the same name in /run and /usr/lib",
-- systemd.syntax(7), sysctl.d(5), modprobe.d(5)). A file in an earlier directory that is a link to
-- /dev/null masks the name: nothing of that name is read.
--
-- Collectors read these through a root prefix (opts.root) so that specs can point them at fixture
-- trees; paths handed back are the host's paths (without the prefix), for evidence.
local fs = require "sacm.fs"

local M = {}

M.MAX_FILES = 512

--- join(root, path) -> the path under root ("" or "/" meaning the real root).
function M.join(root, path)
  if root == nil or root == "" or root == "/" then return path end
  return (root:gsub("/+$", "")) .. path
end

--- check_root(opts, who) -> root string; raises for a bad opts.root (a bad option is a bug).
function M.check_root(opts, who, level)
  local root = opts and opts.root
  if root == nil then return "" end
  if type(root) ~= "string" or root:sub(1, 1) ~= "/" then
    error(("%s: opts.root must be an absolute path, got %s"):format(who, tostring(root)), level or 3)
  end
  return root
end

--- needs(opts, who, path, missing) -> true, or false, missing: the applicable() of a collection
-- module that needs path (read under opts.root) to exist.
function M.needs(opts, who, path, missing)
  if fs.exists(M.join(M.check_root(opts, who, 4), path)) then return true end
  return false, missing
end

--- list(root, dirs, suffix) -> { {name, path, dir}, ... } in name order: the files ending in
-- suffix in the directories (in precedence order, first wins), each name once. Masked names
-- (a link to /dev/null, or an empty link target) are left out. Missing directories are skipped.
function M.list(root, dirs, suffix)
  local chosen, names = {}, {}
  for _, dir in ipairs(dirs) do
    local entries = fs.list(M.join(root, dir))
    for _, e in ipairs(entries or {}) do
      local name = e.name
      if name:sub(-#suffix) == suffix and name:sub(1, 1) ~= "." and chosen[name] == nil
          and (e.type == "file" or e.type == "link") then
        local path = dir .. "/" .. name
        local masked = false
        if e.type == "link" then
          local target = fs.readlink(M.join(root, path))
          masked = target == "/dev/null"
        end
        if masked then
          chosen[name] = false -- seen: later directories' files of this name are hidden too
        else
          chosen[name] = { name = name, path = path, dir = dir }
        end
        names[#names + 1] = name
        if #names > M.MAX_FILES then break end
      end
    end
  end
  table.sort(names)
  local out = {}
  for _, name in ipairs(names) do
    if chosen[name] then out[#out + 1] = chosen[name] end
  end
  return out
end

--- read(root, path [, max_bytes]) -> text | nil, err: a file under root. A link with an absolute
-- target is resolved under root too (a fixture tree's /etc/x -> /usr/lib/x must not read the
-- host's /usr/lib/x); links are followed at most 8 deep.
function M.read(root, path, max_bytes)
  local opts = { max_bytes = max_bytes or (1 << 20) }
  if root == "" or root == "/" then return fs.read(path, opts) end
  for _ = 1, 8 do
    local target = fs.readlink(M.join(root, path))
    if not target then break end
    if target:sub(1, 1) == "/" then
      path = target
    else
      path = path:match("^(.*)/[^/]*$") .. "/" .. target
    end
  end
  return fs.read(M.join(root, path), opts)
end

--- lines(text) -> iterator of (number, line) over the physical lines of text, CR removed.
function M.lines(s)
  local n, pos, len = 0, 1, #s
  return function()
    if pos > len then return nil end
    local nl = s:find("\n", pos, true)
    local line = s:sub(pos, (nl or len + 1) - 1)
    pos = (nl or len) + 1
    n = n + 1
    return n, (line:gsub("\r$", ""))
  end
end

return M
