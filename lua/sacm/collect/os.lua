--- Collection kind "os": the operating system and kernel of this host.
-- Sources: /etc/os-release (or /usr/lib/os-release), /proc/sys/kernel (what uname(2) reports),
-- /etc/machine-id. Only attributes; no items.
local fs = require "sacm.fs"
local proc = require "sacm.proc"
local text = require("sacm.collect").text

local M = {
  kind = "os",
  description = "operating system release, kernel and host identity",
  version = 1,
}

local OS_RELEASE = { "/etc/os-release", "/usr/lib/os-release" }
local MACHINE_ID = { "/etc/machine-id", "/var/lib/dbus/machine-id" }

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

-- One os-release value: the file is a shell-compatible assignment list, so a value may be
-- double-quoted (with \ escaping $ " \ `), single-quoted (literal) or bare.
local function unquote(v)
  local q = v:sub(1, 1)
  if q == '"' and v:sub(-1) == '"' and #v >= 2 then
    return (v:sub(2, -2):gsub('\\([$"\\`])', "%1"))
  elseif q == "'" and v:sub(-1) == "'" and #v >= 2 then
    return v:sub(2, -2)
  end
  return (v:gsub("\\(.)", "%1"))
end

--- parse_os_release(text) -> {KEY = value} as os-release(5) defines it: comments and blank
-- lines skipped, quotes and escapes removed, lines that are not assignments ignored.
function M.parse_os_release(s)
  local out = {}
  for line in s:gmatch("[^\n]+") do
    line = trim(line)
    local key, value = line:match("^([A-Z][A-Z0-9_]*)=(.*)$")
    if key then out[key] = unquote(value) end
  end
  return out
end

local function read_first(paths)
  for _, path in ipairs(paths) do
    local s = fs.read(path, { max_bytes = 1 << 20 })
    if s then return s, path end
  end
  return nil
end

local function read_proc(path)
  local s = fs.read(path, { max_bytes = 1 << 16 })
  return s and trim(s) or nil
end

function M.applicable()
  return true
end

--- collect() -> {attributes = {hostname, os_id, os_version_id, os_pretty_name, os_name,
-- os_version_codename, kernel_name, kernel_release, kernel_version, machine, machine_id,
-- boot_id}, items = {}}. Absent sources leave their keys out.
function M.collect()
  local a = {}
  local release = read_first(OS_RELEASE)
  if release then
    local r = M.parse_os_release(release)
    a.os_id, a.os_version_id, a.os_pretty_name = r.ID, r.VERSION_ID, r.PRETTY_NAME
    a.os_name, a.os_version_codename = r.NAME, r.VERSION_CODENAME
  end
  a.hostname = read_proc("/proc/sys/kernel/hostname")
  a.kernel_name = read_proc("/proc/sys/kernel/ostype")
  a.kernel_release = read_proc("/proc/sys/kernel/osrelease")
  a.kernel_version = read_proc("/proc/sys/kernel/version")
  a.boot_id = read_proc("/proc/sys/kernel/random/boot_id")
  -- /proc/sys/kernel/arch exists since Linux 6.1; older kernels: ask uname.
  a.machine = read_proc("/proc/sys/kernel/arch")
  if not a.machine then
    local r = proc.run({ "uname", "-m" }, { timeout = 5 })
    if r and r.ok then a.machine = trim(r.stdout) end
  end
  local id = read_first(MACHINE_ID)
  if id and trim(id):match("^%x+$") then a.machine_id = trim(id) end
  for k, v in pairs(a) do
    if v == "" then a[k] = nil else a[k] = text(v) end
  end
  return { attributes = a, items = {} }
end

return M
