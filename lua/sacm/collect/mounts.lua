--- Collection kind "mounts": file systems and their options, on both sides benchmarks judge.
-- Run time: what is mounted now (/proc/self/mounts). Persistent: what /etc/fstab mounts at boot.
-- An option set by `mount -o remount` alone is gone after the next reboot; one written in fstab
-- but not remounted is not in force yet.
local fs = require "sacm.fs"
local confdirs = require "sacm.confdirs"
local text = require("sacm.collect").text

local M = {
  kind = "mounts",
  description = "mounted file systems and /etc/fstab entries, with their options",
  version = 1,
}

M.MAX_ITEMS = 4096

-- /proc/mounts and fstab escape white space and backslashes in fields as \ooo
local function unescape(s)
  return (s:gsub("\\(%d%d%d)", function(o) return string.char(tonumber(o, 8) % 256) end))
end

--- parse_mounts(text) -> list of {source, target, fstype, options, line} in file order, for
-- /proc/self/mounts and fstab(5) alike ("#" comments, blank lines skipped, fields unescaped).
-- fstab entries that mount nothing (swap, "none" targets) are kept: the caller decides.
function M.parse_mounts(s)
  local out = {}
  for n, line in confdirs.lines(s) do
    local body = line:match("^%s*(.-)%s*$")
    if body ~= "" and body:sub(1, 1) ~= "#" then
      local source, target, fstype, options = body:match("^(%S+)%s+(%S+)%s+(%S+)%s*(%S*)")
      if source then
        target = unescape(target)
        -- fstab allows a trailing slash; the kernel never prints one (except for "/")
        if #target > 1 then target = target:gsub("/+$", "") end
        out[#out + 1] = { source = unescape(source), target = target, fstype = fstype,
          options = options ~= "" and options or "defaults", line = n }
      end
    end
  end
  return out
end

--- items(mounted, fstab) -> items sorted by target: {target, mounted, source, fstype, options,
-- fstab, fstab_source, fstab_fstype, fstab_options, fstab_line}. For a target mounted several
-- times the last mount is the one in force (it hides the others); for one listed in fstab
-- several times, the last line is the one mounted last at boot. Swap entries are left out.
function M.items(mounted, fstab)
  local by_target, targets = {}, {}
  local function get(target)
    local item = by_target[target]
    if not item then
      item = { target = text(target), mounted = false, fstab = false }
      by_target[target] = item
      targets[#targets + 1] = target
    end
    return item
  end
  for _, m in ipairs(mounted) do
    local item = get(m.target)
    item.mounted, item.source, item.fstype, item.options = true, text(m.source), text(m.fstype), text(m.options)
  end
  for _, m in ipairs(fstab) do
    if m.fstype ~= "swap" and m.target:sub(1, 1) == "/" then
      local item = get(m.target)
      item.fstab, item.fstab_source, item.fstab_fstype = true, text(m.source), text(m.fstype)
      item.fstab_options, item.fstab_line = text(m.options), m.line
    end
  end
  table.sort(targets)
  local items = {}
  for i, target in ipairs(targets) do
    if i > M.MAX_ITEMS then break end
    items[i] = by_target[target]
  end
  return items
end

function M.applicable(opts)
  local root = confdirs.check_root(opts, "mounts")
  if fs.exists(confdirs.join(root, "/proc/self/mounts")) then return true end
  return false, "/proc/self/mounts does not exist"
end

--- collect({root}) -> {attributes = {mounted, fstab_entries, fstab_readable, systemd}, items}.
-- systemd: systemd is the init (/run/systemd/system exists); it then mounts /dev/shm, /run and
-- the other API file systems at boot whatever fstab says.
-- opts.root: read proc/self/mounts and etc/fstab under it (fixture trees).
function M.collect(opts)
  local root = confdirs.check_root(opts, "mounts")
  local s, err = fs.read(confdirs.join(root, "/proc/self/mounts"), { max_bytes = 16 << 20 })
  if not s then return nil, err end
  local mounted = M.parse_mounts(s)
  local f = fs.read(confdirs.join(root, "/etc/fstab"), { max_bytes = 1 << 20 })
  local fstab = f and M.parse_mounts(f) or {}
  return {
    attributes = { mounted = #mounted, fstab_entries = #fstab, fstab_readable = f ~= nil,
      systemd = fs.exists(confdirs.join(root, "/run/systemd/system")) == true },
    items = M.items(mounted, fstab),
  }
end

return M
