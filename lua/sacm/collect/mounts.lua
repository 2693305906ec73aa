--- Collection kind "mounts": file systems and their options, on both sides benchmarks judge.
-- Run time: what is mounted now (/proc/self/mounts). Persistent: what boot mounts, from
-- /etc/fstab and from enabled systemd mount units (tmp.mount). An option set by
-- `mount -o remount` alone is gone after the next reboot; one written in fstab but not
-- remounted is not in force yet.
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

--- Unit directories, highest precedence first. systemd-fstab-generator turns fstab lines into
-- units in /run/systemd/generator, which rank below /etc and /run/systemd/system and above the
-- packaged /usr/lib ones: that is where fstab stands in resolve_boot.
M.UNIT_DIRS = { "/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
  "/usr/lib/systemd/system", "/lib/systemd/system" }
local ADMIN_DIRS = { ["/etc/systemd/system"] = true, ["/run/systemd/system"] = true }

--- parse_mount_unit(text) -> {what, where, type, options} from a systemd .mount unit's [Mount]
-- section (the last assignment of a key wins, as systemd reads it).
function M.parse_mount_unit(s)
  local out, section = {}, nil
  for _, line in confdirs.lines(s) do
    local body = line:match("^%s*(.-)%s*$")
    local name = body:match("^%[(.+)%]$")
    if name then
      section = name
    elseif section == "Mount" and body ~= "" and not body:find("^[#;]") then
      local key, value = body:match("^(%w+)%s*=%s*(.*)$")
      if key == "What" or key == "Where" or key == "Type" or key == "Options" then out[key:lower()] = value end
    end
  end
  return out
end

-- The enabled mount units: {[unit name] = true} for links in <unit dir>/*.wants/ and *.requires/.
local function enabled_units(root)
  local out = {}
  for _, dir in ipairs(M.UNIT_DIRS) do
    for _, e in ipairs(fs.list(confdirs.join(root, dir)) or {}) do
      if e.type == "directory" and (e.name:find("%.wants$") or e.name:find("%.requires$")) then
        for _, u in ipairs(fs.list(confdirs.join(root, dir .. "/" .. e.name)) or {}) do
          if u.name:find("%.mount$") then out[u.name] = true end
        end
      end
    end
  end
  return out
end

--- mount_units(root) -> list of {unit, file, where, options, type, what, enabled, admin}: the
-- .mount units of M.UNIT_DIRS (a name in an earlier directory hides later ones, a link to
-- /dev/null masks it), enabled when some *.wants or *.requires directory links to them.
function M.mount_units(root)
  local enabled = enabled_units(root)
  local out = {}
  for _, f in ipairs(confdirs.list(root, M.UNIT_DIRS, ".mount")) do
    local s = confdirs.read(root, f.path)
    local u = s and M.parse_mount_unit(s)
    if u and u.where then
      out[#out + 1] = { unit = f.name, file = f.path, where = u.where, options = u.options or "defaults",
        type = u.type, what = u.what, enabled = enabled[f.name] == true, admin = ADMIN_DIRS[f.dir] == true }
    end
  end
  return out
end

--- resolve_boot(items, units): sets boot_options and boot_from on the items that something mounts
-- at boot: an enabled unit of /etc or /run/systemd/system wins over fstab, fstab over packaged
-- units. Units for targets nothing else knows add items (mounted = false, fstab = false).
function M.resolve_boot(items, units)
  local by_target = {}
  for _, item in ipairs(items) do by_target[item.target] = item end
  for _, u in ipairs(units) do
    if u.enabled then
      local target = #u.where > 1 and u.where:gsub("/+$", "") or u.where
      local item = by_target[target]
      if not item then
        item = { target = text(target), mounted = false, fstab = false }
        by_target[target] = item
        items[#items + 1] = item
      end
      item.unit, item.unit_file, item.unit_options = text(u.unit), text(u.file), text(u.options)
      if u.admin or not item.fstab then
        item.boot_options, item.boot_from = item.unit_options, "systemd unit " .. item.unit_file
      end
    end
  end
  for _, item in ipairs(items) do
    if item.fstab and item.boot_options == nil then
      item.boot_options, item.boot_from = item.fstab_options, ("/etc/fstab line %d"):format(item.fstab_line)
    end
  end
  table.sort(items, function(a, b) return a.target < b.target end)
end

function M.applicable(opts)
  return confdirs.needs(opts, "mounts", "/proc/self/mounts", "/proc/self/mounts does not exist")
end

--- collect({root}) -> {attributes = {mounted, fstab_entries, fstab_readable, mount_units, systemd},
-- items}. Items also have boot_options and boot_from (what mounts the target at boot, see
-- resolve_boot) and unit, unit_file, unit_options for targets of enabled mount units.
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
  local items = M.items(mounted, fstab)
  local units = M.mount_units(root)
  M.resolve_boot(items, units)
  return {
    attributes = { mounted = #mounted, fstab_entries = #fstab, fstab_readable = f ~= nil, mount_units = #units,
      systemd = fs.exists(confdirs.join(root, "/run/systemd/system")) == true },
    items = items,
  }
end

return M
