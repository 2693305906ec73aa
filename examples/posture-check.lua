-- A small, real posture check of this host, written with the runtime's own primitives.
-- It stands in for `make demo` until the SACM grid (collector, evaluator, orchestrator,
-- repository over XMPP) exists: collectors run at once under a time budget, their output
-- becomes an XML posture document, and a few checks are judged and summed up.
--
-- usage: sacmrun examples/demo.lua [--xml]
local proc = require "sacm.proc"
local fs = require "sacm.fs"
local xml = require "sacm.xml"
local crypto = require "sacm.crypto"
local time = require "sacm.time"

local NS = "urn:sacmrun:demo:posture:0"
local show_xml = arg[1] == "--xml"

-- Each collector returns a table of attribute name -> value, or nil, err.
local collectors = {}

function collectors.os()
  local text, err = fs.read("/etc/os-release")
  if not text then return nil, err end
  local attrs = {}
  for key, value in text:gmatch('([%w_]+)="?([^"\n]*)"?') do
    if key == "PRETTY_NAME" or key == "ID" or key == "VERSION_ID" then attrs["os." .. key:lower()] = value end
  end
  local uname = proc.run({ "uname", "-srm" }, { timeout = 2 })
  if uname and uname.code == 0 then attrs["kernel"] = uname.stdout:gsub("%s+$", "") end
  return attrs
end

function collectors.packages()
  local r, err = proc.run({ "dpkg-query", "-W", "-f", "${Package}\n" }, { timeout = 20, max_output = 8 << 20 })
  if not r then return nil, err end
  if r.code ~= 0 then return nil, "dpkg-query exited " .. r.code end
  local attrs, n = { ["packages.telnetd"] = "absent", ["packages.rsh-server"] = "absent" }, 0
  for name in r.stdout:gmatch("[^\n]+") do
    n = n + 1
    if name == "telnetd" or name == "rsh-server" then attrs["packages." .. name] = "installed" end
  end
  attrs["packages.count"] = tostring(n)
  return attrs
end

function collectors.listening()
  -- /proc/net/tcp{,6}: state 0A is LISTEN; the local port is the hex after the colon
  local ports = {}
  for _, file in ipairs({ "/proc/net/tcp", "/proc/net/tcp6" }) do
    local text = fs.read(file)
    for port, state in (text or ""):gmatch("%s+%d+: %x+:(%x+) %x+:%x+ (%x%x)") do
      if state == "0A" then ports[tonumber(port, 16)] = true end
    end
  end
  local list = {}
  for port in pairs(ports) do list[#list + 1] = port end
  table.sort(list)
  return { ["tcp.listening"] = table.concat(list, ",") }
end

function collectors.sysctl()
  local attrs = {}
  for _, key in ipairs({ "net.ipv4.ip_forward", "kernel.randomize_va_space", "fs.protected_symlinks" }) do
    local value = fs.read("/proc/sys/" .. key:gsub("%.", "/"))
    if value then attrs["sysctl." .. key] = value:gsub("%s+$", "") end
  end
  return attrs
end

function collectors.files()
  local attrs = {}
  for _, path in ipairs({ "/etc/passwd", "/etc/shadow" }) do
    local st = fs.stat(path)
    if st then
      attrs["file." .. path .. ".mode"] = ("%04o"):format(st.mode)
      attrs["file." .. path .. ".sha256"] = fs.hash(path, "sha256")
    end
  end
  return attrs
end

-- Run every collector at once, each under its own budget, all within 30 seconds.
local names, jobs = {}, {}
for name in pairs(collectors) do
  names[#names + 1] = name
end
table.sort(names)
local started = time.monotonic()
for i, name in ipairs(names) do
  jobs[i] = sacm.spawn({ name = name }, sacm.with_timeout, 25, collectors[name])
end
local results = sacm.all(jobs, 30)

local posture = xml.element("posture", { xmlns = NS, id = crypto.uuid(), collected = time.format() })
local attributes = {}
for i, name in ipairs(names) do
  local r = results[i]
  local attrs, err = r.value, r.values and r.values[2] or r.err
  posture:tag("collection", { kind = name })
  if attrs then
    local keys = {}
    for k in pairs(attrs) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do
      posture:tag("attribute", { name = k }):text(attrs[k]):up()
      attributes[k] = attrs[k]
    end
  else
    posture:tag("error"):text(tostring(err)):up()
  end
  posture:up()
end

if show_xml then print(posture:pretty()) end

-- A few checks over the posture; a real evaluator loads these from policies/.
local function check(id, title, attr, predicate)
  local value = attributes[attr]
  if value == nil then return { id = id, title = title, result = "error", evidence = attr .. " not collected" } end
  local ok = predicate(value)
  return { id = id, title = title, result = ok and "pass" or "fail", evidence = attr .. " = " .. value }
end

local checks = {
  check("no-telnetd", "telnet server not installed", "packages.telnetd", function(v) return v == "absent" end),
  check("no-rsh", "rsh server not installed", "packages.rsh-server", function(v) return v == "absent" end),
  check("aslr", "full address space layout randomisation", "sysctl.kernel.randomize_va_space",
    function(v) return v == "2" end),
  check("protected-symlinks", "symlink protection on", "sysctl.fs.protected_symlinks", function(v) return v == "1" end),
  check("passwd-mode", "/etc/passwd not writable by group or others", "file./etc/passwd.mode",
    function(v) return tonumber(v, 8) & 0x12 == 0 end),
  check("shadow-mode", "/etc/shadow not readable by others", "file./etc/shadow.mode",
    function(v) return tonumber(v, 8) & 0x7 == 0 end),
}

local count = 0
for _ in pairs(attributes) do count = count + 1 end
print(("posture of %s: %d attributes from %d collectors in %.0f ms"):format(
  attributes["os.pretty_name"] or "this host", count, #names, (time.monotonic() - started) * 1000))
local totals = { pass = 0, fail = 0, error = 0 }
for _, c in ipairs(checks) do
  totals[c.result] = totals[c.result] + 1
  print(("  %-5s %-20s %-45s %s"):format(c.result:upper(), c.id, c.title, c.evidence))
end
print(("totals: pass=%d fail=%d error=%d"):format(totals.pass, totals.fail, totals.error))
