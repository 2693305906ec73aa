--- Collection kind "modules": kernel modules, on both sides benchmarks judge. Run time: whether
-- the module is loaded now (/proc/modules) and whether the running kernel has it at all
-- (modules.dep, modules.builtin). Persistent: what modprobe.d(5) says for it, the `install`
-- command that replaces loading (CIS and SSG want /bin/false or /bin/true) and `blacklist`
-- (which keeps udev's automatic loading by alias away from it).
local fs = require "sacm.fs"
local confdirs = require "sacm.confdirs"
local text = require("sacm.collect").text

local M = {
  kind = "modules",
  description = "kernel modules: loaded, available, and their modprobe.d install/blacklist lines",
  version = 1,
}

--- The modules reported when opts.modules is not given: file systems and network protocols
-- that CIS and SSG want unavailable on servers.
M.DEFAULT_MODULES = {
  "cramfs", "freevxfs", "hfs", "hfsplus", "jffs2", "squashfs", "udf", "usb_storage",
  "dccp", "rds", "sctp", "tipc",
}

--- modprobe.d directories, highest precedence first (kmod: /etc, /run, /usr/local/lib, /lib;
-- kmod 30 and later also read /usr/lib).
M.CONF_DIRS = { "/etc/modprobe.d", "/run/modprobe.d", "/usr/local/lib/modprobe.d", "/lib/modprobe.d",
  "/usr/lib/modprobe.d" }

-- Commands that make `modprobe NAME` fail or do nothing instead of loading the module.
local DISABLING = {
  ["/bin/false"] = true, ["/bin/true"] = true, ["/usr/bin/false"] = true, ["/usr/bin/true"] = true,
  ["false"] = true, ["true"] = true,
}

--- name(s) -> the module name as the kernel spells it: kmod treats "-" and "_" alike and
-- /proc/modules prints "_" ("usb-storage" is "usb_storage").
function M.name(s)
  return (s:gsub("%-", "_"))
end

--- parse_proc_modules(text) -> {[name] = true}.
function M.parse_proc_modules(s)
  local out = {}
  for name in s:gmatch("([^%s]+)[^\n]*\n?") do out[M.name(name)] = true end
  return out
end

--- parse_module_list(text) -> {[name] = true} from modules.dep ("kernel/fs/udf/udf.ko.xz: deps")
-- or modules.builtin ("kernel/fs/ext4/ext4.ko"): the file name without .ko and compression.
function M.parse_module_list(s)
  local out = {}
  for path in s:gmatch("([^:\n]+)[^\n]*") do
    local base = path:match("([^/]+)%.ko[%w.]*$")
    if base then out[M.name(base)] = true end
  end
  return out
end

--- parse_modprobe(text) -> list of {directive, name, command, line} for the `install` and
-- `blacklist` lines of a modprobe.d file ("#" comments, "\" joins a line with the next).
function M.parse_modprobe(s)
  local out, pending, start = {}, nil, nil
  for n, line in confdirs.lines(s) do
    if pending then
      line, pending = pending .. " " .. line, nil
    else
      start = n
    end
    if line:sub(-1) == "\\" then
      pending = line:sub(1, -2)
    else
      local body = line:match("^%s*(.-)%s*$")
      if body ~= "" and body:sub(1, 1) ~= "#" then
        local directive, name, rest = body:match("^(%S+)%s+(%S+)%s*(.*)$")
        if directive == "install" or directive == "blacklist" then
          out[#out + 1] = { directive = directive, name = M.name(name),
            command = directive == "install" and rest or nil, line = start }
        end
      end
    end
  end
  return out
end

--- disables(command) -> true when an install command replaces loading with a program that
-- does nothing (false or true, with any arguments).
function M.disables(command)
  local program = command and command:match("^%s*(%S+)")
  return program ~= nil and DISABLING[program] == true
end

--- items(wanted, loaded, available, builtin, directives) -> the kind's items in the order of
-- wanted: {name, loaded, available, builtin, install, install_file, install_line, disabled,
-- blacklisted, blacklist_file, blacklist_line}. available/builtin are absent when the kernel's
-- module lists could not be read (available = nil, not false: unknown is not "absent").
-- directives: { {file, directive, name, command, line}, ... } in the order kmod reads them; as in
-- kmod, the first install command for a module is the one modprobe runs.
function M.items(wanted, loaded, available, builtin, directives)
  local items = {}
  for _, raw in ipairs(wanted) do
    local name = M.name(raw)
    local item = { name = text(name), loaded = loaded[name] == true }
    if available then item.available = available[name] == true end
    if builtin then item.builtin = builtin[name] == true end
    for _, d in ipairs(directives) do
      if d.name == name then
        if d.directive == "install" and item.install == nil then
          item.install, item.install_file, item.install_line = text(d.command), d.file, d.line
        elseif d.directive == "blacklist" and not item.blacklisted then
          item.blacklisted, item.blacklist_file, item.blacklist_line = true, d.file, d.line
        end
      end
    end
    item.disabled = M.disables(item.install)
    item.blacklisted = item.blacklisted or false
    items[#items + 1] = item
  end
  return items
end

function M.applicable(opts)
  return confdirs.needs(opts, "modules", "/proc/modules", "/proc/modules does not exist (kernel without module support, or /proc not mounted)")
end

--- collect({modules, root}) -> {attributes = {kernel_release, module_lists_readable,
-- loaded_count, modprobe_files}, items}. opts.modules: names to report (default
-- DEFAULT_MODULES); opts.root: read /proc, /lib/modules and modprobe.d under it (fixtures).
function M.collect(opts)
  local root = confdirs.check_root(opts, "modules")
  local wanted = opts and opts.modules or M.DEFAULT_MODULES
  if type(wanted) ~= "table" then error(("modules: opts.modules must be a list, got %s"):format(type(wanted)), 2) end
  for i, w in ipairs(wanted) do
    if type(w) ~= "string" or not w:find("^[%w_%-]+$") then
      error(("modules: opts.modules[%d] is not a module name: %s"):format(i, tostring(w)), 2)
    end
  end
  local s, err = fs.read(confdirs.join(root, "/proc/modules"))
  if not s then return nil, err end
  local loaded = M.parse_proc_modules(s)
  local loaded_count = 0
  for _ in pairs(loaded) do loaded_count = loaded_count + 1 end

  -- The running kernel's own module lists. In a container the host's /lib/modules is usually
  -- not there: then availability is unknown and only the configuration can be judged.
  local release = fs.read(confdirs.join(root, "/proc/sys/kernel/osrelease"))
  release = release and release:match("^%s*(.-)%s*$")
  local available, builtin
  if release and release ~= "" and not release:find("/", 1, true) then
    local base = confdirs.join(root, "/lib/modules/" .. release)
    local dep = fs.read(base .. "/modules.dep", { max_bytes = 16 << 20 })
    if dep then
      available = M.parse_module_list(dep)
      local b = fs.read(base .. "/modules.builtin", { max_bytes = 16 << 20 })
      builtin = b and M.parse_module_list(b) or {}
      for name in pairs(builtin) do available[name] = true end
    end
  end

  local directives, files = {}, 0
  for _, f in ipairs(confdirs.list(root, M.CONF_DIRS, ".conf")) do
    local conf = confdirs.read(root, f.path)
    if conf then
      files = files + 1
      for _, d in ipairs(M.parse_modprobe(conf)) do
        d.file = f.path
        directives[#directives + 1] = d
      end
    end
  end
  return {
    attributes = { kernel_release = release and text(release) or nil, module_lists_readable = available ~= nil,
      loaded_count = loaded_count, modprobe_files = files },
    items = M.items(wanted, loaded, available, builtin, directives),
  }
end

return M
