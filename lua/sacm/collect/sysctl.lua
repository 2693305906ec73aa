--- Collection kind "sysctl": kernel parameters, read from /proc/sys (what sysctl(8) reads), and
-- the persistent configuration that sets them at boot (sysctl.d(5), as systemd-sysctl and
-- `sysctl --system` apply it). Benchmarks judge both: a value right only at run time is undone by
-- the next reboot, and one right only on disk is not in force yet.
local fs = require "sacm.fs"
local confdirs = require "sacm.confdirs"
local text = require("sacm.collect").text

local M = {
  kind = "sysctl",
  description = "kernel parameters from /proc/sys, and where sysctl.d sets them persistently",
  version = 2,
}

--- The directories of sysctl.d(5), highest precedence first. /lib/sysctl.d is where systems
-- without a merged /usr keep packaged files (procps's `sysctl --system` reads it too).
M.CONF_DIRS = { "/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d",
  "/lib/sysctl.d" }
M.SYSCTL_CONF = "/etc/sysctl.conf"

--- The keys collected when opts.keys is not given: hardening settings that benchmarks (CIS,
-- the kernel self-protection project) check.
M.DEFAULT_KEYS = {
  "fs.protected_fifos", "fs.protected_hardlinks", "fs.protected_regular", "fs.protected_symlinks",
  "fs.suid_dumpable",
  "kernel.dmesg_restrict", "kernel.kexec_load_disabled", "kernel.kptr_restrict",
  "kernel.perf_event_paranoid", "kernel.randomize_va_space", "kernel.sysrq",
  "kernel.unprivileged_bpf_disabled", "kernel.unprivileged_userns_clone", "kernel.yama.ptrace_scope",
  "net.core.bpf_jit_harden",
  "net.ipv4.conf.all.accept_redirects", "net.ipv4.conf.all.accept_source_route",
  "net.ipv4.conf.all.log_martians", "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.all.secure_redirects",
  "net.ipv4.conf.all.send_redirects", "net.ipv4.conf.default.accept_redirects",
  "net.ipv4.conf.default.accept_source_route", "net.ipv4.conf.default.log_martians",
  "net.ipv4.conf.default.rp_filter", "net.ipv4.conf.default.secure_redirects",
  "net.ipv4.conf.default.send_redirects", "net.ipv4.icmp_echo_ignore_broadcasts",
  "net.ipv4.icmp_ignore_bogus_error_responses", "net.ipv4.ip_forward", "net.ipv4.tcp_syncookies",
  "net.ipv6.conf.all.accept_ra", "net.ipv6.conf.all.accept_redirects",
  "net.ipv6.conf.all.accept_source_route", "net.ipv6.conf.all.forwarding",
  "net.ipv6.conf.default.accept_ra", "net.ipv6.conf.default.accept_redirects",
  "net.ipv6.conf.default.accept_source_route",
}

--- path_of(key) -> "/proc/sys/..." for a sysctl name, or nil for a name that could escape
-- /proc/sys or is not a sysctl name. Both separators sysctl(8) accepts work: "net.ipv4.ip_forward"
-- and "net/ipv4/ip_forward" (in the slash form a dot belongs to the name, as in interface
-- names such as "eth0.100").
function M.path_of(key)
  if type(key) ~= "string" or key == "" or #key > 256 or not key:match("^[%w_][%w_.%-/]*$") then
    return nil
  end
  local rel = key:find("/", 1, true) and key or key:gsub("%.", "/")
  for part in rel:gmatch("[^/]+") do
    if part == "." or part == ".." then return nil end
  end
  if rel:find("//", 1, true) or rel:sub(-1) == "/" then return nil end
  return "/proc/sys/" .. rel
end

--- normalize(key) -> the dotted name the attribute is stored under.
function M.normalize(key)
  if key:find("/", 1, true) then
    -- "net/ipv4/conf/eth0.100/rp_filter": dots in a component stay, as sysctl prints them ("/")
    local parts = {}
    for part in key:gmatch("[^/]+") do parts[#parts + 1] = (part:gsub("%.", "/")) end
    return table.concat(parts, ".")
  end
  return key
end

--- clean_value(raw) -> the value as sysctl -n prints it: surrounding whitespace trimmed, tabs
-- between the numbers of a vector value ("4\t4\t1\t7") kept.
function M.clean_value(raw)
  return (raw:gsub("^%s+", ""):gsub("%s+$", ""))
end

---------------------------------------------------------------------------- persistent side

-- "net.ipv4.conf.*.rp_filter" -> a Lua pattern matching dotted names: a glob stands within one
-- name component, as the kernel's directories do.
local function glob_pattern(glob)
  return "^" .. glob:gsub("[%^%$%(%)%%%.%[%]%+%-]", "%%%0"):gsub("%*", "[^.]*"):gsub("%?", "[^.]") .. "$"
end

--- parse_conf(text) -> list of assignments {name, value, line, ignore_failure, glob} in file
-- order, as sysctl.d(5) reads a file: "#" and ";" start comments, "key = value" with white space
-- around either side ignored, a "-" before the key says a failure to set it is not an error, and
-- a "-key" line without a value excludes the key from the globs of other lines (value nil).
-- Names in slash form ("net/ipv4/ip_forward") are stored dotted, as sysctl prints them. Lines
-- that are not assignments are skipped (systemd-sysctl logs and skips them too).
function M.parse_conf(s)
  local out = {}
  for n, line in confdirs.lines(s) do
    local body = line:match("^%s*(.-)%s*$")
    local first = body:sub(1, 1)
    if body ~= "" and first ~= "#" and first ~= ";" then
      local ignore = first == "-"
      if ignore then body = body:sub(2):match("^%s*(.*)$") end
      local key, value = body:match("^([^=]-)%s*=%s*(.-)$")
      if not key then key = body end
      key = key:match("^%s*(.-)%s*$")
      if key:find("^[%w_*?][%w_.%-/*?]*$") and (value ~= nil or ignore) then
        local glob = key:find("[*?]") ~= nil
        out[#out + 1] = { name = M.normalize(key), value = value, line = n, ignore_failure = ignore,
          glob = glob or nil }
      end
    end
  end
  return out
end

--- conf_files(root) -> list of {path, name} in the order their assignments apply: every *.conf of
-- M.CONF_DIRS by file name (a name in an earlier directory hides the same name in later ones, a
-- link to /dev/null masks it), then /etc/sysctl.conf unless one of them is that file already
-- (Debian links /etc/sysctl.d/99-sysctl.conf to it). systemd-sysctl reads /etc/sysctl.conf only
-- through that link; `sysctl --system` reads it last in any case: both agree where the link is.
function M.conf_files(root)
  local files = confdirs.list(root, M.CONF_DIRS, ".conf")
  local has_main = false
  for _, f in ipairs(files) do
    local target = fs.readlink(confdirs.join(root, f.path))
    if target == "../sysctl.conf" or target == M.SYSCTL_CONF then has_main = true end
  end
  if not has_main and fs.exists(confdirs.join(root, M.SYSCTL_CONF)) then
    files[#files + 1] = { path = M.SYSCTL_CONF, name = "sysctl.conf" }
  end
  return files
end

--- resolve(files, keys) -> items {name, value, file, line, ignore_failure, glob,
-- assignments} sorted by name: for every key assigned explicitly, its last assignment (later files
-- and later lines win); for each of `keys` set only by a glob line, the last glob that matches.
-- As in systemd-sysctl, an explicit assignment of a key wins over every glob, whatever the order,
-- and "-key" without a value keeps the globs off that key (no item). `assignments` counts the
-- explicit lines that set the key (more than 1: some file overrode another).
-- files = { {path = "/etc/sysctl.d/x.conf", assignments = parse_conf(...)}, ... }.
function M.resolve(files, keys)
  local explicit, count, globs = {}, {}, {}
  for _, f in ipairs(files) do
    for _, a in ipairs(f.assignments) do
      local rec = { name = a.name, value = a.value, file = f.path, line = a.line,
        ignore_failure = a.ignore_failure }
      if a.glob then
        rec.glob = a.name
        globs[#globs + 1] = rec
      else
        explicit[a.name] = rec
        count[a.name] = (count[a.name] or 0) + 1
      end
    end
  end
  local items = {}
  for name, rec in pairs(explicit) do
    if rec.value ~= nil then
      rec.assignments = count[name]
      rec.value = text(rec.value)
      rec.name = text(name)
      items[#items + 1] = rec
    end
  end
  for _, key in ipairs(keys or {}) do
    local name = M.normalize(key)
    if explicit[name] == nil then
      for i = #globs, 1, -1 do
        local g = globs[i]
        if g.value ~= nil and name:find(glob_pattern(g.glob)) then
          items[#items + 1] = { name = name, value = text(g.value), file = g.file, line = g.line,
            ignore_failure = g.ignore_failure, glob = text(g.glob), assignments = 0 }
          break
        end
      end
    end
  end
  table.sort(items, function(a, b) return a.name < b.name end)
  return items
end

---------------------------------------------------------------------------- collection

function M.applicable(opts)
  return confdirs.needs(opts, "sysctl", "/proc/sys/kernel", "/proc/sys is not mounted")
end

--- collect({keys = {...}, root}) -> {attributes = {[key] = "value", persistent_files = n},
-- items = {{name, value, file, line, ...}}}. attributes: the run-time values of `keys`; a key the
-- kernel does not have (or we may not read, such as the write-only vm.compact_memory) is absent.
-- items: every key the persistent configuration sets (see resolve). An invalid key name raises.
-- opts.root: read /proc/sys and the configuration under this directory (fixture trees).
function M.collect(opts)
  local root = confdirs.check_root(opts, "sysctl")
  local keys = opts and opts.keys or M.DEFAULT_KEYS
  if type(keys) ~= "table" then error(("sysctl: opts.keys must be a list, got %s"):format(type(keys)), 2) end
  local attributes = {}
  for _, key in ipairs(keys) do
    local path = M.path_of(key)
    if not path then error(("sysctl: %q is not a sysctl name"):format(tostring(key)), 2) end
    local raw = fs.read(confdirs.join(root, path), { max_bytes = 1 << 16 })
    if raw then attributes[M.normalize(key)] = text(M.clean_value(raw)) end
  end
  local files, unreadable = {}, 0
  for _, f in ipairs(M.conf_files(root)) do
    local s = confdirs.read(root, f.path)
    if s then
      files[#files + 1] = { path = f.path, assignments = M.parse_conf(s) }
    else
      unreadable = unreadable + 1 -- the rest still stands; the count says something is missing
    end
  end
  attributes.persistent_files = #files
  attributes.persistent_unreadable = unreadable
  return { attributes = attributes, items = M.resolve(files, keys) }
end

return M
