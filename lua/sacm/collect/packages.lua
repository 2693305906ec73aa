--- Collection kind "packages": installed software packages, from dpkg's database or from rpm.
-- dpkg: the status file is read directly (what dpkg-query reads, without starting a program).
-- rpm: `rpm -qa` with a query format, since its database is not a text file.
local fs = require "sacm.fs"
local proc = require "sacm.proc"
local errors = require "sacm.error"
local text = require("sacm.collect").text

local M = {
  kind = "packages",
  description = "installed packages (dpkg or rpm): name, version, architecture, status",
  version = 1,
}

local DPKG_STATUS = "/var/lib/dpkg/status"
local RPM_DBS = { "/var/lib/rpm", "/usr/lib/sysimage/rpm" }
-- %|EPOCH?{...}:{}| prints the epoch only when there is one, as dpkg versions do
local RPM_FORMAT = "%{NAME}\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\t%{ARCH}\n"

local function by_name_arch(a, b)
  if a.name ~= b.name then return a.name < b.name end
  return (a.arch or "") < (b.arch or "")
end

-- One dpkg record's fields, kept as lines go by; only the ones an item needs.
local ERRNO = { [2] = "ENOENT", [13] = "EACCES", [20] = "ENOTDIR", [21] = "EISDIR" } -- as sacm.fs names them

local WANTED = { package = "name", version = "version", architecture = "arch", status = "status" }

local function record_parser(items)
  local fields = {}
  local parser = {}
  function parser.line(line)
    if line:find("^[ \t]*$") then -- a blank line ends a record
      local name = fields.name
      local state = fields.status and fields.status:match("(%S+)$")
      if name and state and state ~= "not-installed" then
        items[#items + 1] = {
          name = text(name), version = text(fields.version or ""), arch = text(fields.arch or ""),
          status = state, manager = "dpkg",
        }
      end
      fields = {}
      return
    end
    local first = line:byte(1)
    if first == 32 or first == 9 then return end -- a continuation line (descriptions, conffiles)
    local key, value = line:match("^([%w%-]+):%s*(.-)%s*$")
    local field = key and WANTED[key:lower()]
    if field then fields[field] = value end
  end
  function parser.finish()
    parser.line("")
    table.sort(items, by_name_arch)
    return items
  end
  return parser
end

--- parse_dpkg_status(text) -> items {name, version, arch, status, manager = "dpkg"} sorted by
-- name and arch. status is the package state of the Status field ("installed",
-- "config-files", "half-installed", ...); records whose state is "not-installed" are left out.
function M.parse_dpkg_status(s)
  local p = record_parser({})
  for line in s:gmatch("([^\n]*)\n?") do p.line(line) end
  return p.finish()
end

-- The status file a line at a time: on a host with ~900 packages it is ~800 KB, and holding it
-- whole (with the garbage its parsing makes) was most of a collector's peak memory. A local file
-- read through stdio's buffer, as fs.read would read it, only without the copy.
local function read_dpkg_status(path)
  local f, err, code = io.open(path, "r")
  if not f then
    return nil, errors.new(ERRNO[code] or "EIO", ("cannot read %s: %s"):format(path, tostring(err)))
  end
  local p = record_parser({})
  for line in f:lines() do p.line(line) end
  f:close()
  return p.finish()
end

--- parse_rpm_query(text) -> items {name, version, arch, status = "installed", manager = "rpm"}
-- from `rpm -qa --qf "NAME\tEPOCH:VERSION-RELEASE\tARCH\n"` output, sorted by name and arch.
function M.parse_rpm_query(s)
  local items = {}
  for line in s:gmatch("[^\n]+") do
    local name, version, arch = line:match("^([^\t]+)\t([^\t]*)\t([^\t]*)$")
    if name and name ~= "gpg-pubkey" then -- imported signing keys, not software
      items[#items + 1] = {
        name = text(name), version = text(version),
        arch = text(arch == "(none)" and "" or arch), status = "installed", manager = "rpm",
      }
    end
  end
  table.sort(items, by_name_arch)
  return items
end

local function has_rpm_db()
  for _, dir in ipairs(RPM_DBS) do
    if fs.exists(dir) then return true end
  end
  return false
end

function M.applicable(opts)
  if fs.exists(opts and opts.dpkg_status or DPKG_STATUS) or has_rpm_db() then return true end
  return false, "no dpkg status file and no rpm database on this host"
end

local function summary(items, manager)
  local installed = 0
  for _, item in ipairs(items) do
    if item.status == "installed" then installed = installed + 1 end
  end
  return { attributes = { manager = manager, count = #items, installed = installed }, items = items }
end

--- collect([opts]) -> {attributes = {manager, count, installed}, items = {...}}. count is the number
-- of items; installed the number whose status is "installed". opts.dpkg_status: another dpkg
-- status file (a mounted image's, or a fixture), read instead of /var/lib/dpkg/status.
function M.collect(opts)
  local status_file = opts and opts.dpkg_status or DPKG_STATUS
  if fs.exists(status_file) then
    local items, err = read_dpkg_status(status_file)
    if not items then return nil, err end
    return summary(items, "dpkg")
  end
  local r, err = proc.run({ "rpm", "-qa", "--qf", RPM_FORMAT }, { max_output = 64 << 20 })
  if not r then return nil, err end
  if not r.ok then
    return nil, errors.new("command-failed", ("rpm -qa exited %s: %s"):format(
      tostring(r.code or r.signal), r.stderr:sub(1, 500)))
  end
  return summary(M.parse_rpm_query(r.stdout), "rpm")
end

return M
