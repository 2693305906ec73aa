--- Collection kind "sysctl": kernel parameters, read from /proc/sys (what sysctl(8) reads).
local fs = require "sacm.fs"
local text = require("sacm.collect").text

local M = {
  kind = "sysctl",
  description = "security-relevant kernel parameters from /proc/sys",
  version = 1,
}

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
  "net.ipv4.conf.default.accept_source_route", "net.ipv4.conf.default.rp_filter",
  "net.ipv4.conf.default.send_redirects", "net.ipv4.icmp_echo_ignore_broadcasts",
  "net.ipv4.icmp_ignore_bogus_error_responses", "net.ipv4.ip_forward", "net.ipv4.tcp_syncookies",
  "net.ipv6.conf.all.accept_ra", "net.ipv6.conf.all.accept_redirects",
  "net.ipv6.conf.all.accept_source_route", "net.ipv6.conf.all.forwarding",
  "net.ipv6.conf.default.accept_ra", "net.ipv6.conf.default.accept_redirects",
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

function M.applicable()
  if fs.exists("/proc/sys/kernel") then return true end
  return false, "/proc/sys is not mounted"
end

--- collect({keys = {...}}) -> {attributes = {[key] = "value"}, items = {}}. A key the kernel
-- does not have (or we may not read, such as the write-only vm.compact_memory) is absent;
-- an invalid key name raises.
function M.collect(opts)
  local keys = opts and opts.keys or M.DEFAULT_KEYS
  if type(keys) ~= "table" then error(("sysctl: opts.keys must be a list, got %s"):format(type(keys)), 2) end
  local attributes = {}
  for _, key in ipairs(keys) do
    local path = M.path_of(key)
    if not path then error(("sysctl: %q is not a sysctl name"):format(tostring(key)), 2) end
    local raw = fs.read(path, { max_bytes = 1 << 16 })
    if raw then attributes[M.normalize(key)] = text(M.clean_value(raw)) end
  end
  return { attributes = attributes, items = {} }
end

return M
