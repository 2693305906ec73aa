-- Kernel modules that servers do not need (posture kind "modules": one item per module asked
-- for, {name, loaded, available, builtin, install, install_file, install_line, disabled,
-- blacklisted, blacklist_file, blacklist_line}). Both sides are judged, as CIS does:
--   run time:   the module is not loaded, and
--   persistent: modprobe.d keeps it from loading: an `install NAME /bin/false` (or /bin/true)
--               line replaces loading on request, and `blacklist NAME` stops loading by alias
--               (what udev does when a device or file system shows up).
-- A module the running kernel does not have at all passes: there is nothing to load. Where the
-- kernel's module lists cannot be read (containers), the configuration alone is judged.

local SSG = "xccdf_org.ssgproject.content_rule_"

-- { module, CIS number, CIS title, what it is, why a server does without it }
local MODULES = {
  { "cramfs", "1.1.1.1", "cramfs", "the compressed ROM file system of small embedded devices" },
  { "freevxfs", "1.1.1.2", "freevxfs", "the Veritas file system driver (read-only HP-UX volumes)" },
  { "hfs", "1.1.1.3", "hfs", "Apple's classic HFS file system" },
  { "hfsplus", "1.1.1.4", "hfsplus", "Apple's HFS+ file system" },
  { "jffs2", "1.1.1.5", "jffs2", "the journalling flash file system of raw flash chips" },
  { "udf", "1.1.1.8", "udf", "the optical disc (DVD, Blu-ray) file system" },
  { "usb_storage", "1.1.1.9", "usb-storage", "USB mass storage: memory sticks and external disks" },
  { "dccp", "3.2.1", "dccp", "the Datagram Congestion Control Protocol" },
  { "tipc", "3.2.2", "tipc", "the Transparent Inter-Process Communication cluster protocol" },
  { "rds", "3.2.3", "rds", "the Reliable Datagram Sockets protocol" },
  { "sctp", "3.2.4", "sctp", "the Stream Control Transmission Protocol" },
}

local function where(file, line) return ("%s:%s"):format(tostring(file), tostring(line)) end

local function check_module(name, cis_name)
  return function(posture)
    local m = find_item(posture.modules.items, "name", name)
    if m == nil then
      return "notchecked", ("module %s was not among the modules collected"):format(cis_name)
    end
    local bad, good = {}, {}
    if m.loaded then
      bad[#bad + 1] = ("%s is loaded now: unload it with \"modprobe -r %s\""):format(cis_name, cis_name)
    end
    if m.builtin then
      bad[#bad + 1] = ("%s is built into the running kernel: modprobe.d cannot keep it out"):format(cis_name)
    end
    if #bad == 0 and m.available == false then
      return "pass", ("the running kernel has no %s module, so nothing can load it"):format(cis_name)
    end
    if m.disabled then
      good[#good + 1] = ("install %s %s (%s)"):format(cis_name, tostring(m.install), where(m.install_file, m.install_line))
    elseif m.install ~= nil then
      bad[#bad + 1] = ("install %s runs \"%s\" (%s), which loads it: make it /bin/false"):format(cis_name,
        tostring(m.install), where(m.install_file, m.install_line))
    else
      bad[#bad + 1] = ("nothing keeps modprobe from loading %s: add \"install %s /bin/false\" to "
        .. "/etc/modprobe.d/%s.conf"):format(cis_name, cis_name, cis_name)
    end
    if m.blacklisted then
      good[#good + 1] = ("blacklist %s (%s)"):format(cis_name, where(m.blacklist_file, m.blacklist_line))
    else
      bad[#bad + 1] = ("%s is not blacklisted, so it may still be loaded by alias: add \"blacklist %s\" "
        .. "to /etc/modprobe.d/%s.conf"):format(cis_name, cis_name, cis_name)
    end
    if #bad > 0 then return "fail", bad end
    table.insert(good, 1, ("%s is not loaded"):format(cis_name))
    return "pass", good
  end
end

local rules = {}
for _, m in ipairs(MODULES) do
  local name, cis, cis_name, what = m[1], m[2], m[3], m[4]
  rules[#rules + 1] = {
    id = "modules-" .. cis_name .. "-disabled",
    title = ("The %s kernel module cannot be loaded"):format(cis_name),
    severity = "low",
    requires = { "modules" },
    references = {
      { system = "ssg", id = SSG .. "kernel_module_" .. cis_name .. "_disabled" },
      { system = "cis-debian12", id = cis, title = ("Ensure %s kernel module is not available"):format(cis_name) },
    },
    rationale = ("%s is %s. A server has no use for it, but the kernel loads modules on demand "
      .. "(when a device appears, a file system is mounted or a socket of the protocol is opened), "
      .. "and each rarely used driver is kernel code that few eyes review: bugs in such modules "
      .. "have repeatedly given local users root. Keeping it from loading removes that attack "
      .. "surface."):format(cis_name, what),
    check = check_module(name, cis_name),
  }
end

return {
  id = "kernel-modules",
  title = "Unneeded kernel modules",
  description = "File system and protocol modules a server does not need are neither loaded nor loadable.",
  rules = rules,
}
