--- Collection kind "services": system services from systemd when it runs the host, otherwise
-- the running processes (a container or a host with another init has no service manager to
-- ask, and what runs is then the best account of its services).
local fs = require "sacm.fs"
local proc = require "sacm.proc"
local errors = require "sacm.error"
local procfs = require "sacm.procfs"
local text = require("sacm.collect").text

local M = {
  kind = "services",
  description = "systemd services (state, enabled), or running processes without systemd",
  version = 1,
}

-- sd_booted(3): systemd runs the system exactly when this directory exists.
M.SYSTEMD_RUNTIME_DIR = "/run/systemd/system"
local ENV = { clear_env = true, env = { PATH = "/usr/bin:/bin:/usr/sbin:/sbin", LC_ALL = "C", SYSTEMD_COLORS = "0" } }

local function words(line)
  local f = {}
  for w in line:gmatch("%S+") do f[#f + 1] = w end
  return f
end

--- parse_list_units(text) -> {[unit] = {load, active, sub}} from
-- `systemctl list-units --type=service --all --no-legend --no-pager --plain`.
function M.parse_list_units(s)
  local out = {}
  for line in s:gmatch("[^\n]+") do
    -- without --plain, a failed or not-found unit is marked with a leading "●" (or "*")
    line = line:gsub("^%s*\226\151\143%s*", ""):gsub("^%s*%*%s+", "")
    local f = words(line)
    if #f >= 4 and f[1]:match("%.service$") then
      out[f[1]] = { load = f[2], active = f[3], sub = f[4] }
    end
  end
  return out
end

--- parse_unit_files(text) -> {[unit] = state} ("enabled", "disabled", "static", "masked",
-- "indirect", "generated", "alias", ...) from
-- `systemctl list-unit-files --type=service --no-legend --no-pager`.
function M.parse_unit_files(s)
  local out = {}
  for line in s:gmatch("[^\n]+") do
    local f = words(line)
    if #f >= 2 and f[1]:match("%.service$") then out[f[1]] = f[2] end
  end
  return out
end

local ENABLED = { enabled = true, ["enabled-runtime"] = true }

--- systemd_items(units, unit_files) -> items {name, state, sub_state, load_state, enabled,
-- unit_file_state} for every service either list knows, sorted by name; templates
-- ("name@.service") are left out, their instances stay. Units only in the unit-file list are
-- not loaded: state "inactive", sub_state "dead".
function M.systemd_items(units, unit_files)
  local names, seen = {}, {}
  for name in pairs(units) do seen[name] = true; names[#names + 1] = name end
  for name in pairs(unit_files) do
    if not seen[name] and not name:find("@%.service$") then names[#names + 1] = name end
  end
  table.sort(names)
  local items = {}
  for i, name in ipairs(names) do
    local u = units[name]
    -- an instance's enablement is its template's ("getty@tty1" -> "getty@.service")
    local file_state = unit_files[name] or unit_files[name:gsub("@[^.]*%.service$", "@.service")]
    items[i] = {
      name = text(name),
      state = u and u.active or "inactive",
      sub_state = u and u.sub or "dead",
      load_state = u and u.load or "not-loaded",
      unit_file_state = file_state,
      enabled = ENABLED[file_state or ""] or false,
    }
  end
  return items
end

local function systemctl(args)
  local argv = { "systemctl" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local r, err = proc.run(argv, { timeout = 15, clear_env = ENV.clear_env, env = ENV.env, max_output = 16 << 20 })
  if not r then return nil, err end
  if not r.ok then
    return nil, errors.new("command-failed", ("systemctl %s exited %s: %s"):format(args[1],
      tostring(r.code or r.signal), (r.stderr:gsub("%s+$", "")):sub(1, 300)))
  end
  return r.stdout
end

local function collect_systemd()
  local units, err = systemctl({ "list-units", "--type=service", "--all", "--no-legend", "--no-pager", "--plain" })
  if not units then return nil, err end
  local files
  files, err = systemctl({ "list-unit-files", "--type=service", "--no-legend", "--no-pager" })
  if not files then return nil, err end
  local items = M.systemd_items(M.parse_list_units(units), M.parse_unit_files(files))
  return { attributes = { source = "systemd", count = #items }, items = items }
end

--- process_items(processes) -> items {name, pid, ppid, uid, exe} sorted by pid, without kernel
-- threads (kthreadd, pid 2, and its children). processes as procfs.process returns them.
function M.process_items(processes)
  local items = {}
  for _, p in ipairs(processes) do
    if p.pid ~= 2 and p.ppid ~= 2 and p.comm then
      items[#items + 1] = { name = text(p.comm), pid = p.pid, ppid = p.ppid, uid = p.uid,
        exe = p.exe and text(p.exe) or nil }
    end
  end
  table.sort(items, function(a, b) return a.pid < b.pid end)
  return items
end

local function collect_proc()
  local pids, err = procfs.pids()
  if not pids then return nil, err end
  local processes = {}
  for _, pid in ipairs(pids) do
    processes[#processes + 1] = procfs.process(pid) -- nil (skipped) when it exited meanwhile
  end
  local items = M.process_items(processes)
  return { attributes = { source = "proc", count = #items }, items = items }
end

function M.applicable()
  return true
end

--- collect({source}) -> {attributes = {source = "systemd" | "proc", count}, items}. source
-- forces one ("proc" works everywhere; "systemd" fails where systemctl cannot ask systemd).
function M.collect(opts)
  local source = opts and opts.source
  if source == nil then source = fs.exists(M.SYSTEMD_RUNTIME_DIR) and "systemd" or "proc" end
  if source == "systemd" then return collect_systemd() end
  if source == "proc" then return collect_proc() end
  error(("services: opts.source must be \"systemd\" or \"proc\", got %s"):format(tostring(source)), 2)
end

return M
