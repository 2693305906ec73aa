-- The collection modules: each parser against hand-written fixtures in the real formats
-- (spec/fixtures/collect), each kind run for real on this host and checked against what other
-- tools say, and the runner's time budget, validation and error paths with fixture modules.
local collect = require "sacm.collect"
local fs = require "sacm.fs"
local proc = require "sacm.proc"
local task = require "sacm.task"
local procfs = require "sacm.procfs"
local tmp = require "support.tmp"

local FIXTURES = "spec/fixtures/collect/"

local function fixture(name)
  return assert(fs.read(FIXTURES .. name))
end

local function sh(cmd, env)
  local r = assert(proc.shell(cmd, { env = env, timeout = 30 }))
  assert(r.ok, ("%s exited %s: %s"):format(cmd, tostring(r.code), r.stderr))
  return (r.stdout:gsub("\n$", ""))
end

-- Runs a kind that must fail with `condition`; returns the error.
local function run_fails(kind, opts, condition, what)
  local data, err = collect.run(kind, opts)
  assert.is_nil(data, what)
  assert.equal(condition, err.condition, what)
  return err
end

local function by(items, key)
  local out = {}
  for _, item in ipairs(items) do out[item[key]] = item end
  return out
end

-- the pam items of one stack (and module)
local function filter_lines(items, service, module)
  local out = {}
  for _, item in ipairs(items) do
    if item.service == service and (module == nil or item.module == module) then out[#out + 1] = item end
  end
  return out
end

local function run_ok(kind, opts)
  local data, err = collect.run(kind, opts)
  assert(data, tostring(err))
  assert(collect.validate(data))
  return data
end

local function pid_is_gone(pid)
  local stat = fs.read("/proc/" .. pid .. "/stat")
  return stat == nil or stat:match("^%d+ %b() (%a)") == "Z"
end

-- Waits (at most `limit` seconds) for pred() to hold; the bound only keeps a broken build from
-- hanging the suite, it is not what the test measures.
local function eventually(pred, limit)
  local deadline = os.time() + (limit or 10)
  while not pred() do
    if os.time() > deadline then return false end
    task.sleep(0.02)
  end
  return true
end

describe("sacm.collect", function()
  describe("os", function()
    local os_kind = require "sacm.collect.os"

    it("parses os-release quoting as os-release(5) defines it", function()
      local r = os_kind.parse_os_release(fixture("os-release"))
      assert.equal('Example Linux 9.1 (Quoted "Edition")', r.PRETTY_NAME)
      assert.equal("Example Linux", r.NAME)
      assert.equal("9.1", r.VERSION_ID)
      assert.equal("example", r.ID)
      assert.equal("debian ubuntu", r.ID_LIKE)
      assert.equal("quokka", r.VERSION_CODENAME)
      assert.is_nil(r.lowercase)
      local n = 0
      for _ in pairs(r) do n = n + 1 end
      assert.equal(8, n)
    end)

    it("collects what hostname, uname and os-release say on this host", function()
      local a = run_ok("os").attributes
      assert.equal(sh("hostname"), a.hostname)
      assert.equal(sh("uname -s"), a.kernel_name)
      assert.equal(sh("uname -r"), a.kernel_release)
      assert.equal(sh("uname -v"), a.kernel_version)
      assert.equal(sh("uname -m"), a.machine)
      assert.equal(sh('. /etc/os-release && printf %s "$ID"'), a.os_id)
      assert.equal(sh('. /etc/os-release && printf %s "$VERSION_ID"'), a.os_version_id)
      assert.equal(sh('. /etc/os-release && printf %s "$PRETTY_NAME"'), a.os_pretty_name)
      assert.equal(sh("cat /etc/machine-id"), a.machine_id)
      assert.same({}, run_ok("os").items)
    end)
  end)

  describe("packages", function()
    local packages = require "sacm.collect.packages"

    it("parses a dpkg status file: states, multi-arch, epochs, not-installed left out", function()
      local items = packages.parse_dpkg_status(fixture("dpkg-status"))
      assert.same({
        { name = "adduser", version = "3.134", arch = "all", status = "installed", manager = "dpkg" },
        { name = "libc6", version = "2.36-9+deb12u4", arch = "amd64", status = "installed", manager = "dpkg" },
        { name = "libc6", version = "2.36-9+deb12u4", arch = "i386", status = "installed", manager = "dpkg" },
        { name = "openssh-server", version = "1:9.2p1-2+deb12u3", arch = "amd64", status = "installed",
          manager = "dpkg" },
        { name = "telnetd", version = "0.17+2.4-2+deb12u1", arch = "amd64", status = "config-files",
          manager = "dpkg" },
      }, items)
    end)

    it("parses rpm query output, without signing-key pseudo packages", function()
      assert.same({
        { name = "bash", version = "5.1.8-6.el9_1", arch = "x86_64", status = "installed", manager = "rpm" },
        { name = "bind-utils", version = "32:9.16.23-14.el9_3", arch = "x86_64", status = "installed",
          manager = "rpm" },
        { name = "openssh-server", version = "8.7p1-34.el9", arch = "x86_64", status = "installed", manager = "rpm" },
        { name = "tzdata", version = "2024a-1.el9", arch = "noarch", status = "installed", manager = "rpm" },
      }, packages.parse_rpm_query(fixture("rpm-qa.txt")))
    end)

    it("collects the packages dpkg-query lists on this host", function()
      local data = run_ok("packages")
      assert.equal("dpkg", data.attributes.manager)
      assert.equal(#data.items, data.attributes.count)
      local listed = sh("dpkg-query -W -f '${db:Status-Status} ${binary:Package} ${Version}\\n' | grep -c '^installed '")
      assert.equal(tonumber(listed), data.attributes.installed)
      local dpkg = by(data.items, "name").dpkg
      assert.equal(sh("dpkg-query -W -f '${Version}' dpkg"), dpkg.version)
      assert.equal("installed", dpkg.status)
      for i = 2, #data.items do
        assert.is_true(data.items[i - 1].name <= data.items[i].name)
      end
    end)
  end)

  describe("sockets", function()
    local sockets = require "sacm.collect.sockets"

    it("formats /proc/net addresses, IPv6 as RFC 5952 text", function()
      assert.equal("127.0.0.1", sockets.format_address("0100007F", true))
      assert.equal("0.0.0.0", sockets.format_address("00000000", true))
      assert.equal("::", sockets.format_address(("0"):rep(32), true))
      assert.equal("::1", sockets.format_address("00000000000000000000000001000000", true))
      assert.equal("::ffff:127.0.0.1", sockets.format_address("0000000000000000FFFF00000100007F", true))
      assert.equal("2001:db8::8a2e:370:7334", sockets.format_address("B80D0120000000002E8A000034737003", true))
      assert.equal("fe80::1", sockets.format_address("000080FE000000000000000001000000", true))
      assert.equal("127.0.0.1", sockets.format_address("7F000001", false)) -- a big-endian host
    end)

    it("parses the listening TCP sockets of /proc/net/tcp and tcp6", function()
      assert.same({
        { proto = "tcp", family = "inet", address = "127.0.0.1", port = 5432, uid = 106, inode = 31337 },
        { proto = "tcp", family = "inet", address = "0.0.0.0", port = 22, uid = 0, inode = 20345 },
        { proto = "tcp", family = "inet", address = "10.0.0.5", port = 8080, uid = 1000, inode = 40002 },
      }, sockets.parse_proc_net(fixture("proc-net-tcp"), "tcp", "inet", true))
      local six = sockets.parse_proc_net(fixture("proc-net-tcp6"), "tcp", "inet6", true)
      local addresses = {}
      for i, item in ipairs(six) do addresses[i] = item.address .. " " .. item.port end
      assert.same({ ":: 22", "::1 631", "::ffff:127.0.0.1 9000", "2001:db8::8a2e:370:7334 443",
        "2001:db8::1:0:0:1 80", "2001:0:0:1::1 81" }, addresses)
      assert.equal(33, six[3].uid)
      assert.equal(20401, six[3].inode)
    end)

    it("parses bound UDP sockets (state 07), not connected ones", function()
      assert.same({
        { proto = "udp", family = "inet", address = "0.0.0.0", port = 68, uid = 0, inode = 15000 },
        { proto = "udp", family = "inet", address = "127.0.0.53", port = 53, uid = 102, inode = 15001 },
      }, sockets.parse_proc_net(fixture("proc-net-udp"), "udp", "inet", true))
      assert.same({
        { proto = "udp", family = "inet6", address = "::", port = 546, uid = 0, inode = 15100 },
      }, sockets.parse_proc_net(fixture("proc-net-udp6"), "udp", "inet6", true))
    end)

    it("finds sockets a listener process opened, with its pid and name", function()
      local dir = tmp.dir("collect")
      local ready = dir .. "/ports"
      -- a real listener: TCP on IPv4 and IPv6 loopback, a bound UDP socket; ports chosen by the kernel
      local script = [[
import os, socket, sys, time
t4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM); t4.bind(("127.0.0.1", 0)); t4.listen()
t6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM); t6.bind(("::1", 0)); t6.listen()
u4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u4.bind(("127.0.0.1", 0))
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write("%d %d %d %d\n" % (os.getpid(), t4.getsockname()[1], t6.getsockname()[1], u4.getsockname()[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(60)
]]
      local listener = task.spawn({ silent = true }, proc.run, { "/usr/bin/python3", "-c", script, ready },
        { timeout = 60 })
      finally(function()
        listener:cancel()
        tmp.remove(dir)
      end)
      assert.is_true(eventually(function() return fs.exists(ready) end))
      local pid, tcp4, tcp6, udp4 = fs.read(ready):match("(%d+) (%d+) (%d+) (%d+)")
      pid, tcp4, tcp6, udp4 = tonumber(pid), tonumber(tcp4), tonumber(tcp6), tonumber(udp4)

      local data = run_ok("sockets")
      assert.equal(#data.items, data.attributes.count)
      local found = {}
      for _, item in ipairs(data.items) do
        if item.pid == pid then found[item.proto .. "/" .. item.family .. "/" .. item.port] = item end
      end
      local t4 = found["tcp/inet/" .. tcp4]
      assert.is_table(t4)
      assert.equal("127.0.0.1", t4.address)
      assert.equal("python3", t4.process:sub(1, 7))
      assert.equal(0, t4.uid)
      assert.equal("::1", found["tcp/inet6/" .. tcp6].address)
      assert.equal("127.0.0.1", found["udp/inet/" .. udp4].address)
      assert.is_true(found["tcp/inet/" .. tcp4].inode > 0)
      -- the same inode is what the process's fd links name
      local owners = procfs.socket_owners({ [t4.inode] = true })
      assert.equal(pid, owners[t4.inode])
    end)
  end)

  describe("users", function()
    local users = require "sacm.collect.users"

    it("parses passwd and shadow into accounts with password states", function()
      local entries = users.parse_passwd(fixture("passwd"))
      assert.equal(8, #entries) -- comment, NIS and malformed lines skipped
      local items = by(users.items(entries, users.parse_shadow(fixture("shadow"))), "name")
      assert.same({ name = "alice", uid = 1000, gid = 1000, home = "/home/alice", shell = "/bin/bash",
        gecos = "Alice Example,,,", password = "set", password_max_days = 90, password_expires = 20000,
        password_min_days = 0, password_warn_days = 7, password_last_change = 19700, shadowed = true },
        items.alice)
      assert.is_false(items.legacy.shadowed) -- its hash is in passwd itself
      assert.is_nil(items.toor.password_max_days)
      assert.equal("locked", items.root.password)
      assert.equal("locked", items.daemon.password)
      assert.equal("locked", items.bob.password)
      assert.equal("set", items.toor.password)
      assert.equal(0, items.toor.uid)
      assert.equal("empty", items.nopw.password)
      assert.equal("set", items.legacy.password)
      assert.equal("unknown", items.ghost.password)
      -- sorted by uid, then name
      local order = {}
      for i, item in ipairs(users.items(entries, nil)) do order[i] = item.name end
      assert.same({ "root", "toor", "daemon", "alice", "bob", "nopw", "legacy", "ghost" }, order)
    end)

    it("without shadow, judges only what passwd itself holds", function()
      local items = by(users.items(users.parse_passwd(fixture("passwd")), nil), "name")
      assert.equal("unknown", items.root.password)
      assert.equal("empty", items.nopw.password)
      assert.equal("set", items.legacy.password)
    end)

    it("classifies shadow password fields", function()
      assert.equal("empty", users.password_state(""))
      assert.equal("locked", users.password_state("!"))
      assert.equal("locked", users.password_state("!!"))
      assert.equal("locked", users.password_state("*"))
      assert.equal("locked", users.password_state("!$6$x$y"))
      assert.equal("locked", users.password_state("*LK*"))
      assert.equal("set", users.password_state("$6$salt$hash"))
      assert.equal("set", users.password_state("abcdefghijklm")) -- DES crypt, 13 characters
    end)

    it("collects the accounts of this host", function()
      local data = run_ok("users")
      local names = {}
      for name in sh("cut -d: -f1 /etc/passwd"):gmatch("[^\n]+") do names[#names + 1] = name end
      assert.equal(#names, #data.items)
      local root = by(data.items, "name").root
      assert.equal(0, root.uid)
      assert.equal(sh("getent passwd root | cut -d: -f6"), root.home)
      assert.is_true(data.attributes.shadow_readable) -- the specs run as root
      -- passwd -S: P (usable password), NP (none), L (locked)
      local state = sh("passwd -S root"):match("^%S+ (%S+)")
      assert.equal(({ P = "set", NP = "empty", L = "locked" })[state], root.password)
    end)
  end)

  describe("groups", function()
    local groups = require "sacm.collect.groups"

    it("parses /etc/group", function()
      assert.same({
        { name = "root", gid = 0, members = "" },
        { name = "daemon", gid = 1, members = "" },
        { name = "sudo", gid = 27, members = "alice,bob" },
        { name = "docker", gid = 999, members = "alice" },
        { name = "alice", gid = 1000, members = "" },
        { name = "bob", gid = 1001, members = "" },
      }, groups.parse_group(fixture("group")))
    end)

    it("collects what getent group lists", function()
      local data = run_ok("groups")
      local expected = {}
      for line in sh("getent group"):gmatch("[^\n]+") do
        local name, gid, members = line:match("^([^:]*):[^:]*:(%d+):(.*)$")
        expected[name] = { name = name, gid = tonumber(gid), members = members }
      end
      assert.same(expected, by(data.items, "name"))
    end)
  end)

  describe("sysctl", function()
    local sysctl = require "sacm.collect.sysctl"

    it("maps names to /proc/sys paths and refuses ones that would leave it", function()
      assert.equal("/proc/sys/net/ipv4/ip_forward", sysctl.path_of("net.ipv4.ip_forward"))
      assert.equal("/proc/sys/net/ipv4/conf/eth0.100/rp_filter", sysctl.path_of("net/ipv4/conf/eth0.100/rp_filter"))
      assert.equal("net.ipv4.conf.eth0/100.rp_filter", sysctl.normalize("net/ipv4/conf/eth0.100/rp_filter"))
      assert.is_nil(sysctl.path_of("../../etc/shadow"))
      assert.is_nil(sysctl.path_of("net/../../etc/shadow"))
      assert.is_nil(sysctl.path_of(""))
      assert.is_nil(sysctl.path_of("kernel..x/"))
      assert.equal("4\t4\t1\t7", sysctl.clean_value("4\t4\t1\t7\n"))
    end)

    it("reads the values sysctl -n prints; unknown keys are absent", function()
      local keys = { "net.ipv4.ip_forward", "kernel.randomize_va_space", "kernel/printk", "no.such.key" }
      local a = run_ok("sysctl", { keys = keys }).attributes
      assert.equal(sh("sysctl -n net.ipv4.ip_forward"), a["net.ipv4.ip_forward"])
      assert.equal(sh("sysctl -n kernel.randomize_va_space"), a["kernel.randomize_va_space"])
      assert.equal(sh("sysctl -n kernel.printk"), a["kernel.printk"])
      assert.is_nil(a["no.such.key"])
      local defaults = run_ok("sysctl").attributes
      assert.equal(sh("sysctl -n kernel.randomize_va_space"), defaults["kernel.randomize_va_space"])
    end)

    it("parses sysctl.d lines: comments, slashes, '-' prefix, globs, exclusions", function()
      local a = sysctl.parse_conf("# c\n ; c\nnet/ipv4/ip_forward=0\n-kernel.x = 1 \nnet.ipv4.conf.*.rp_filter = 2\n"
        .. "-net.ipv4.conf.all.rp_filter\nnot an assignment\nkernel.y =\n")
      assert.same({
        { name = "net.ipv4.ip_forward", value = "0", line = 3, ignore_failure = false },
        { name = "kernel.x", value = "1", line = 4, ignore_failure = true },
        { name = "net.ipv4.conf.*.rp_filter", value = "2", line = 5, ignore_failure = false, glob = true },
        { name = "net.ipv4.conf.all.rp_filter", line = 6, ignore_failure = true },
        { name = "kernel.y", value = "", line = 8, ignore_failure = false },
      }, a)
    end)

    it("resolves the persistent configuration with systemd-sysctl's precedence (fixture tree)", function()
      local root = sh("pwd") .. "/" .. FIXTURES .. "sysctl-root" -- opts.root is absolute
      local keys = { "kernel.randomize_va_space", "net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter",
        "net.ipv4.conf.eth0.rp_filter", "kernel.sysrq" }
      local data = run_ok("sysctl", { root = root, keys = keys })
      -- run time from the tree's proc/sys; a key it does not have is absent
      assert.equal("2", data.attributes["kernel.randomize_va_space"])
      assert.equal("0", data.attributes["net.ipv4.ip_forward"])
      assert.is_nil(data.attributes["kernel.sysrq"])
      -- 10-net (etc, hides usr/lib's), 50-default, 60-run, 80-late, 99-sysctl (the link to
      -- sysctl.conf, read once); 70-masked is a link to /dev/null in etc and hides lib's
      assert.equal(5, data.attributes.persistent_files)
      local items = by(data.items, "name")
      assert.same({ "kernel.dmesg_restrict", "kernel.randomize_va_space", "net.ipv4.conf.all.accept_redirects",
        "net.ipv4.conf.all.send_redirects", "net.ipv4.conf.default.rp_filter", "net.ipv4.conf.eth0.rp_filter",
        "net.ipv4.ip_forward" }, (function()
          local names = {}
          for i, item in ipairs(data.items) do names[i] = item.name end
          return names
        end)())
      -- /etc's 10-net.conf wins over /usr/lib's of the same name: ip_forward 0, no syncookies
      assert.same({ name = "net.ipv4.ip_forward", value = "0", file = "/etc/sysctl.d/10-net.conf", line = 2,
        ignore_failure = false, assignments = 1 }, items["net.ipv4.ip_forward"])
      assert.equal("/etc/sysctl.d/10-net.conf", items["net.ipv4.conf.all.send_redirects"].file)
      assert.is_true(items["net.ipv4.conf.all.accept_redirects"].ignore_failure)
      -- files apply in name order across directories; the last line of the last file wins
      assert.same({ "2", "/lib/sysctl.d/80-late.conf", 2, 4 }, { items["kernel.randomize_va_space"].value,
        items["kernel.randomize_va_space"].file, items["kernel.randomize_va_space"].line,
        items["kernel.randomize_va_space"].assignments })
      assert.equal("/run/sysctl.d/60-run.conf", items["net.ipv4.conf.default.rp_filter"].file)
      -- a glob sets the keys asked for that nothing sets explicitly; "-key" keeps it off "all"
      assert.same({ "2", "net.ipv4.conf.*.rp_filter" }, { items["net.ipv4.conf.eth0.rp_filter"].value,
        items["net.ipv4.conf.eth0.rp_filter"].glob })
      assert.is_nil(items["net.ipv4.conf.all.rp_filter"])
      assert.equal("/etc/sysctl.d/99-sysctl.conf", items["kernel.dmesg_restrict"].file)
      assert.is_nil(items["kernel.sysrq"]) -- masked
    end)

    it("reports this host's persistent settings with the file and line that set them", function()
      local data = run_ok("sysctl")
      -- Not compared with `sysctl --system`: it has no dry run and would change this host. Each
      -- item must point at a line of the host's file that assigns that value to that key.
      assert.is_true(data.attributes.persistent_files > 0) -- Debian ships /usr/lib/sysctl.d files
      for _, item in ipairs(data.items) do
        local line = sh(("sed -n '%dp' '%s'"):format(item.line, item.file))
        local key, value = line:match("^%s*%-?%s*([^=%s]+)%s*=%s*(.-)%s*$")
        assert.equal(item.glob or item.name, sysctl.normalize(key), line)
        assert.equal(item.value, value, line)
      end
      -- procps's 99-protect-links.conf sets the link protections on Debian 12, unless an admin
      -- file overrides them
      local links = by(data.items, "name")["fs.protected_symlinks"]
      assert.is_not_nil(links)
      assert.equal(sh("sysctl -n fs.protected_symlinks"), data.attributes["fs.protected_symlinks"])
    end)

    it("reports an invalid key as the module's error", function()
      local err = run_fails("sysctl", { keys = { "../etc/passwd" } }, "internal-error")
      assert.matches("not a sysctl name", err.text)
    end)
  end)

  describe("modules", function()
    local modules = require "sacm.collect.modules"

    it("parses /proc/modules, modules.dep and modprobe.d lines", function()
      assert.same({ usb_storage = true, ext4 = true }, modules.parse_proc_modules("usb_storage 81920 1 uas, Live 0x0\next4 1 0 - Live 0x0\n"))
      assert.same({ udf = true, usb_storage = true, squashfs = true },
        modules.parse_module_list("kernel/fs/udf/udf.ko.xz: kernel/lib/crc-itu-t.ko.xz\nkernel/drivers/usb/storage/usb-storage.ko.zst:\nkernel/fs/squashfs/squashfs.ko\n"))
      assert.same({
        { directive = "install", name = "usb_storage", command = "/bin/false --quiet", line = 2 },
        { directive = "blacklist", name = "cramfs", line = 4 },
      }, modules.parse_modprobe("# c\ninstall usb-storage \\\n /bin/false --quiet\nblacklist cramfs\noptions x y=1\n"))
      assert.is_true(modules.disables("/bin/false"))
      assert.is_true(modules.disables("/bin/true --anything"))
      assert.is_false(modules.disables("/sbin/modprobe --ignore-install hfs"))
      assert.is_false(modules.disables(nil))
    end)

    it("reports loaded, available and the modprobe.d lines kmod would use (fixture tree)", function()
      local data = run_ok("modules", { root = sh("pwd") .. "/" .. FIXTURES .. "modules-root" })
      assert.same({ kernel_release = "6.1.0-28-amd64", module_lists_readable = true, loaded_count = 3, modprobe_files = 2 },
        data.attributes)
      local m = by(data.items, "name")
      assert.same({ name = "cramfs", loaded = false, available = true, builtin = false, disabled = true,
        install = "/bin/false", install_file = "/etc/modprobe.d/cis.conf", install_line = 2,
        blacklisted = true, blacklist_file = "/etc/modprobe.d/cis.conf", blacklist_line = 3 }, m.cramfs)
      -- a line continued with "\", and "-" spelled module names
      assert.same({ true, true, "/bin/false", 5 }, { m.usb_storage.loaded, m.usb_storage.disabled,
        m.usb_storage.install, m.usb_storage.install_line })
      -- files in name order across directories, the first install command wins: lib's
      -- 50-hfs.conf (which hides usr/lib's) is read before etc's cis.conf
      assert.same({ "/bin/false", "/lib/modprobe.d/50-hfs.conf" }, { m.hfs.install, m.hfs.install_file })
      assert.is_nil(m.dccp.install) -- /usr/lib/modprobe.d/50-hfs.conf is hidden
      assert.is_false(m.jffs2.available)
      assert.is_true(m.squashfs.builtin)
      assert.is_false(m.hfsplus.disabled)
      assert.is_true(m.sctp.loaded)
    end)

    it("collects this host's modules, or says why it cannot", function()
      local data, err = collect.run("modules")
      if fs.exists("/proc/modules") then
        assert(data, tostring(err))
        local loaded = sh("cut -d' ' -f1 /proc/modules | wc -l")
        assert.equal(tonumber(loaded), data.attributes.loaded_count)
      else
        -- this development VM's kernel has no module support
        assert.equal("not-applicable", err.condition)
        assert.matches("/proc/modules does not exist", err.text, 1, true)
      end
    end)
  end)

  describe("mounts", function()
    local mounts = require "sacm.collect.mounts"

    it("parses mount tables: escapes, defaults, comments", function()
      assert.same({
        { source = "/dev/sdb1", target = "/srv/my data", fstype = "ext4", options = "rw", line = 2 },
        { source = "UUID=1", target = "/home", fstype = "ext4", options = "defaults", line = 3 },
      }, mounts.parse_mounts("# c\n/dev/sdb1 /srv/my\\040data ext4 rw 0 0\nUUID=1 /home/ ext4\n"))
    end)

    it("joins the mounted file systems and fstab per target (fixture tree)", function()
      local data = run_ok("mounts", { root = sh("pwd") .. "/" .. FIXTURES .. "mounts-root" })
      assert.same({ mounted = 7, fstab_entries = 6, fstab_readable = true, mount_units = 3, systemd = false }, data.attributes)
      local m = by(data.items, "target")
      -- mounted twice: the later mount is the one in force
      assert.same({ target = "/dev/shm", mounted = true, source = "tmpfs", fstype = "tmpfs",
        options = "rw,nosuid,nodev,noexec,relatime", fstab = false }, m["/dev/shm"])
      assert.same({ what = "tmpfs", where = "/tmp", type = "tmpfs", options = "mode=1777" },
        mounts.parse_mount_unit("[Unit]\nWhere=/x\n[Mount]\nWhat=tmpfs\nWhere=/tmp\nType=tmpfs\n# c\nOptions=mode=1777\n"))
      -- two fstab lines: the later one mounts last at boot
      assert.same({ "defaults,nosuid,nodev,noexec", 6 }, { m["/tmp"].fstab_options, m["/tmp"].fstab_line })
      -- an enabled unit in /etc/systemd/system wins over fstab (its last Options= line counts);
      -- fstab wins over a packaged unit in /usr/lib; a unit nothing wants mounts nothing
      assert.same({ "mode=1777,strictatime,nosuid,nodev,noexec,size=50%", "systemd unit /etc/systemd/system/tmp.mount" },
        { m["/tmp"].boot_options, m["/tmp"].boot_from })
      assert.same({ "nodev,nosuid,noexec", "/etc/fstab line 7", "var-tmp.mount" },
        { m["/var/tmp"].boot_options, m["/var/tmp"].boot_from, m["/var/tmp"].unit })
      assert.is_nil(m["/srv/backup"])
      assert.is_nil(m["/dev/shm"].boot_options)
      assert.same({ false, true, "nodev,nosuid,noexec" }, { m["/var/tmp"].mounted, m["/var/tmp"].fstab, m["/var/tmp"].fstab_options })
      assert.equal("defaults,nodev", m["/home"].fstab_options) -- "/home/" in fstab
      assert.equal("rw,relatime", m["/srv/my data"].options)
      assert.is_nil(m.none) -- swap is left out
    end)

    it("collects this host's mounts as /proc/self/mounts lists them", function()
      local data = run_ok("mounts")
      local targets = {}
      for t in sh("awk '{print $2}' /proc/self/mounts | sort -u"):gmatch("[^\n]+") do
        targets[#targets + 1] = (t:gsub("\\040", " "))
      end
      local mounted = {}
      for _, item in ipairs(data.items) do
        if item.mounted then mounted[#mounted + 1] = item.target end
      end
      table.sort(targets)
      assert.same(targets, mounted)
      assert.equal(fs.exists("/run/systemd/system") == true, data.attributes.systemd)
    end)
  end)

  describe("logindefs", function()
    it("reads login.defs (last value wins, quotes removed) and useradd's defaults (fixture tree)", function()
      local data = run_ok("logindefs", { root = sh("pwd") .. "/" .. FIXTURES .. "auth-root" })
      local a = data.attributes
      assert.same({ "365", "1", "7", "YESCRYPT", "027", "30", "/bin/sh" }, { a.pass_max_days, a.pass_min_days,
        a.pass_warn_age, a.encrypt_method, a.umask, a["useradd.inactive"], a["useradd.shell"] })
      assert.same({ name = "pass_max_days", value = "365", file = "/etc/login.defs", line = 9 },
        by(data.items, "name").pass_max_days)
    end)

    it("collects this host's login.defs as grep reads it", function()
      local a = run_ok("logindefs").attributes
      assert.equal(sh("awk '$1 == \"PASS_MAX_DAYS\" {v = $2} END {print v}' /etc/login.defs"), a.pass_max_days)
      assert.equal(sh("awk '$1 == \"UMASK\" {v = $2} END {print v}' /etc/login.defs"), a.umask)
    end)
  end)

  describe("pam", function()
    local pam = require "sacm.collect.pam"

    it("parses PAM stack lines: brackets, continuations, '-' types, @include", function()
      assert.same({
        { type = "auth", control = "[success=1 default=ignore]", module = "pam_unix", args = "nullok", line = 2 },
        { type = "session", control = "optional", module = "pam_systemd", args = "", line = 3 },
        { type = "@include", module = "common-session", args = "", line = 4 },
        { type = "password", control = "requisite", module = "pam_pwquality", args = "retry=3 minlen=14", line = 5 },
      }, pam.parse_stack("# c\nauth [success=1 default=ignore] pam_unix.so nullok # why\n-session optional pam_systemd.so\n"
        .. "@include common-session\npassword requisite /lib/security/pam_pwquality.so retry=3 \\\n minlen=14\n"))
      assert.same({ retry = "3", enforce_for_root = true }, pam.parse_args("retry=3 enforce_for_root"))
    end)

    it("reports each module setting in effect and where it comes from (fixture tree)", function()
      local data = run_ok("pam", { root = sh("pwd") .. "/" .. FIXTURES .. "auth-root" })
      local a = data.attributes
      -- the PAM line's option wins over pwquality.conf; pwquality.conf.d wins over the main file
      assert.same({ "15", "/etc/pam.d/common-password:1" }, { a["pwquality.minlen"], a["pwquality.minlen.from"] })
      assert.same({ "5", "/etc/security/pwquality.conf.d/50-site.conf:2" }, { a["pwquality.difok"], a["pwquality.difok.from"] })
      assert.is_true(a["pwquality.enforce_for_root"])
      assert.same({ "4", "/etc/pam.d/common-auth:4" }, { a["faillock.deny"], a["faillock.deny.from"] })
      assert.equal("900", a["faillock.unlock_time"])
      assert.is_true(a["faillock.even_deny_root"])
      assert.equal("24", a["pwhistory.remember"])
      assert.is_true(a["su.read"])
      local unix = filter_lines(data.items, "common-password", "pam_unix")
      assert.equal("obscure use_authtok try_first_pass yescrypt", unix[1].args)
      local wheel = filter_lines(data.items, "su", "pam_wheel")
      assert.equal("use_uid group=sugroup", wheel[1].args)
    end)

    it("collects this host's PAM stacks as they are written", function()
      local data = run_ok("pam")
      local n = tonumber(sh("grep -cE '^[[:space:]]*-?(auth|account|password|session|@include)' /etc/pam.d/common-auth"))
      assert.equal(n, #filter_lines(data.items, "common-auth"))
      assert.is_true(#filter_lines(data.items, "common-auth", "pam_unix") >= 1)
    end)
  end)

  describe("sudoers", function()
    local sudoers = require "sacm.collect.sudoers"

    it("parses Defaults (bindings, lists, negation, quotes), rules and includes", function()
      local e = sudoers.parse('Defaults:alice !authenticate, env_keep+="A, B"\n#includedir /etc/sudoers.d\n'
        .. "User_Alias A = x\n%sudo ALL=(ALL) NOPASSWD: ALL # comment\n# just a comment\n")
      assert.same({
        { kind = "defaults", binding = ":alice", name = "authenticate", negated = true, value = false, line = 1 },
        { kind = "defaults", binding = ":alice", name = "env_keep", negated = false, operator = "+=", value = "A, B", line = 1 },
        { kind = "include", path = "/etc/sudoers.d", dir = true, line = 2 },
        { kind = "rule", text = "%sudo ALL=(ALL) NOPASSWD: ALL", nopasswd = true, line = 4 },
      }, e)
    end)

    it("reads sudoers and its includes in sudo's order, skipping names sudo skips (fixture tree)", function()
      local data = run_ok("sudoers", { root = sh("pwd") .. "/" .. FIXTURES .. "sudo-root" })
      local a = data.attributes
      assert.same({ 4, 0 }, { a.files, a.unreadable }) -- 30-old.dpkg-old and 40-backup~ are not read
      assert.is_true(a["defaults.use_pty"])             -- !use_pty in 10-deploy, then use_pty in 20-late
      assert.equal("/var/log/sudo.log", a["defaults.logfile"])
      assert.equal("15", a["defaults.timestamp_timeout"]) -- sudoers.local, included last
      local nopasswd = {}
      for _, e in ipairs(data.items) do
        if e.kind == "rule" and e.nopasswd then nopasswd[#nopasswd + 1] = e.file .. ":" .. e.line end
      end
      assert.same({ "/etc/sudoers.d/10-deploy:1" }, nopasswd)
      local noauth = {}
      for _, e in ipairs(data.items) do
        if e.kind == "defaults" and e.name == "authenticate" then noauth[#noauth + 1] = e.binding end
      end
      assert.same({ ":backup" }, noauth)
    end)

    it("is not applicable on this host without sudo, or reads its sudoers", function()
      local data, err = collect.run("sudoers")
      if fs.exists("/etc/sudoers") then
        assert(data, tostring(err))
        assert.is_true(data.attributes.files >= 1)
      else
        assert.equal("not-applicable", err.condition)
      end
    end)
  end)

  describe("file_permissions", function()
    it("reports owner, group and mode of the benchmark paths under a root (temporary tree)", function()
      local dir = tmp.dir("fperm")
      finally(function() sh("rm -rf '" .. dir .. "'") end)
      assert(fs.mkdir(dir .. "/etc/cron.d", { parents = true, mode = tonumber("755", 8) }))
      assert(fs.write(dir .. "/etc/passwd", "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        { mode = tonumber("644", 8) }))
      assert(fs.write(dir .. "/etc/group", "root:x:0:\nshadow:x:42:\nalice:x:1000:\n", { mode = tonumber("644", 8) }))
      assert(fs.write(dir .. "/etc/shadow", "root:!:1::::::\n", { mode = tonumber("640", 8) }))
      sh(("chown 0:42 '%s/etc/shadow' && chown 1000:1000 '%s/etc/cron.d'"):format(dir, dir))
      sh(("ln -s /dev/null '%s/etc/motd'"):format(dir))
      local data = run_ok("file_permissions", { root = dir,
        paths = { "/etc/passwd", "/etc/shadow", "/etc/cron.d", "/etc/motd", "/etc/gshadow" } })
      local f = by(data.items, "path")
      assert.same({ "file", "0644", "root", "root" }, { f["/etc/passwd"].type, f["/etc/passwd"].mode, f["/etc/passwd"].owner,
        f["/etc/passwd"].group })
      assert.same({ "0640", "root", "shadow" }, { f["/etc/shadow"].mode, f["/etc/shadow"].owner, f["/etc/shadow"].group })
      -- names come from the tree's passwd and group, not the host's
      assert.same({ "directory", "alice", "alice" }, { f["/etc/cron.d"].type, f["/etc/cron.d"].owner, f["/etc/cron.d"].group })
      assert.same({ "link", "/dev/null" }, { f["/etc/motd"].type, f["/etc/motd"].target })
      assert.same({ path = "/etc/gshadow", exists = false }, f["/etc/gshadow"])
      assert.is_nil(f["/etc/passwd"].sha256) -- metadata only
    end)

    it("agrees with stat on this host", function()
      local data = run_ok("file_permissions")
      local checked = 0
      for _, item in ipairs(data.items) do
        if item.exists then
          local st = sh(("stat -c '%%04a %%U %%G' '%s'"):format(item.path))
          assert.equal(st, ("%s %s %s"):format(item.mode:sub(-4):gsub("^0(%d%d%d%d)$", "%1"), item.owner, item.group), item.path)
          checked = checked + 1
        end
      end
      assert.is_true(checked >= 8) -- passwd, group, shadow, gshadow and their backups at least
    end)
  end)

  describe("files", function()
    local dir
    before_each(function() dir = tmp.dir("collect") end)
    after_each(function()
      tmp.remove(dir)
    end)

    it("reports mode, owner, type, hash and the special bits of real files", function()
      assert(fs.write(dir .. "/open", "anyone may write this\n", { mode = tonumber("666", 8) }))
      assert(fs.write(dir .. "/suid", "#!/bin/sh\n", { mode = tonumber("4755", 8) }))
      assert(fs.mkdir(dir .. "/shared", { mode = tonumber("1777", 8) }))
      assert(fs.mkdir(dir .. "/sgid", { mode = tonumber("2750", 8) }))
      assert(fs.write(dir .. "/sgid/deeper", "x", { mode = tonumber("600", 8) }))
      assert(proc.run({ "ln", "-s", "open", dir .. "/link" }))
      assert(proc.run({ "mkfifo", dir .. "/fifo" }))

      local data = run_ok("files", { paths = { dir, dir .. "/missing" } })
      local items = by(data.items, "path")
      local open = items[dir .. "/open"]
      assert.same({
        path = dir .. "/open", exists = true, type = "file", file_type = "file", mode = "0666",
        uid = 0, gid = 0, owner = "root", group = "root", size = 22, mtime = open.mtime,
        world_writable = true, setuid = false, setgid = false, sticky = false,
        sha256 = sh('sha256sum "$F" | cut -d" " -f1', { F = dir .. "/open" }),
      }, open)
      assert.equal(tonumber(sh('stat -c %Y "$F"', { F = dir .. "/open" })), open.mtime)
      assert.is_true(items[dir .. "/suid"].setuid)
      assert.equal("4755", items[dir .. "/suid"].mode)
      assert.is_false(items[dir .. "/suid"].world_writable)
      assert.equal("1777", items[dir .. "/shared"].mode)
      assert.is_true(items[dir .. "/shared"].sticky)
      assert.is_true(items[dir .. "/shared"].world_writable)
      assert.is_true(items[dir .. "/sgid"].setgid)
      assert.equal("directory", items[dir .. "/sgid"].type)
      assert.is_nil(items[dir .. "/sgid/deeper"]) -- depth 1: entries of the path, not below
      assert.equal("link", items[dir .. "/link"].type)
      assert.equal("open", items[dir .. "/link"].target)
      assert.is_false(items[dir .. "/link"].world_writable)
      assert.is_nil(items[dir .. "/link"].sha256)
      assert.equal("other", items[dir .. "/fifo"].type)
      assert.equal("fifo", items[dir .. "/fifo"].file_type)
      assert.same({ path = dir .. "/missing", exists = false }, items[dir .. "/missing"])

      -- walk order: the path, then its entries by name; the missing path last
      local order = {}
      for i, item in ipairs(data.items) do order[i] = item.path:sub(#dir + 1) end
      assert.same({ "", "/fifo", "/link", "/open", "/sgid", "/shared", "/suid", "/missing" }, order)
      assert.equal(8, data.attributes.count)
      assert.is_false(data.attributes.truncated)
    end)

    it("walks to opts.depth and stops at max_entries", function()
      assert(fs.mkdir(dir .. "/a/b/c", { parents = true }))
      assert(fs.write(dir .. "/a/b/c/f", "x"))
      local deep = run_ok("files", { paths = { dir }, depth = 3 })
      local order = {}
      for i, item in ipairs(deep.items) do order[i] = item.path:sub(#dir + 1) end
      assert.same({ "", "/a", "/a/b", "/a/b/c" }, order)
      local only = run_ok("files", { paths = { dir }, depth = 0 })
      assert.equal(1, #only.items)
      local capped = run_ok("files", { paths = { dir }, depth = 10, max_entries = 2 })
      assert.equal(2, #capped.items)
      assert.is_true(capped.attributes.truncated)
    end)

    it("leaves the hash out above max_hash_bytes", function()
      assert(fs.write(dir .. "/big", ("x"):rep(1000)))
      local item = run_ok("files", { paths = { dir .. "/big" }, max_hash_bytes = 999 }).items[1]
      assert.is_nil(item.sha256)
      assert.equal(1000, item.size)
    end)

    it("reports a name that is not valid UTF-8 with escaped bytes", function()
      local odd = dir .. "/bad\255name"
      assert(fs.write(odd, "x"))
      local data = run_ok("files", { paths = { dir } })
      assert.equal(dir .. "/bad\\xffname", data.items[2].path)
    end)
  end)

  describe("sshd", function()
    local sshd = require "sacm.collect.sshd"
    local fixture_dir

    setup(function()
      fixture_dir = sh("pwd") .. "/" .. FIXTURES
    end)

    it("parses sshd -T output, joining repeated keywords", function()
      local a = sshd.parse_sshd_t(fixture("sshd-T.txt"))
      assert.equal("no", a.permitrootlogin)
      assert.equal("no", a.passwordauthentication)
      assert.equal("22 2222", a.port)
      assert.equal("[::]:22 0.0.0.0:22", a.listenaddress)
      assert.equal("LANG LC_*", a.acceptenv)
      assert.equal("sftp /usr/lib/openssh/sftp-server", a.subsystem)
      assert.equal("/etc/ssh/ssh_host_rsa_key /etc/ssh/ssh_host_ecdsa_key /etc/ssh/ssh_host_ed25519_key", a.hostkey)
      assert.equal("VERBOSE", a.loglevel)
    end)

    it("parses sshd_config lines: = syntax, aliases, quotes, comments", function()
      local d = sshd.parse_config('# c\n  MaxAuthTries=4\nChallengeResponseAuthentication no\nBanner "/etc/x y"\n\nPort\t22\n')
      assert.same({
        { keyword = "maxauthtries", value = "4", line = 2 },
        { keyword = "kbdinteractiveauthentication", value = "no", line = 3 },
        { keyword = "banner", value = "/etc/x y", line = 4 },
        { keyword = "port", value = "22", line = 6 },
      }, d)
    end)

    it("reads sshd_config with Include as sshd does: first value wins, Match is conditional", function()
      local a, files = sshd.load_config(fixture_dir .. "sshd_config", { config_dir = fixture_dir })
      assert.is_table(a, tostring(files))
      assert.same({ fixture_dir .. "sshd_config", fixture_dir .. "sshd_config.d/10-hardening.conf",
        fixture_dir .. "sshd_config.d/20-site.conf" }, files)
      assert.equal("without-password", a.permitrootlogin)   -- the drop-in's prohibit-password
      assert.equal("no", a.passwordauthentication)           -- 10- before 20- before the main file
      assert.equal("300", a.clientaliveinterval)
      assert.equal("ssh-users", a.allowgroups)
      assert.equal("22 2222", a.port)
      assert.equal("no", a.kbdinteractiveauthentication)    -- ChallengeResponseAuthentication
      assert.equal("yes", a.usepam)
      assert.equal("VERBOSE", a.loglevel)
      assert.equal("4", a.maxauthtries)
      assert.equal("LANG LC_*", a.acceptenv)
      assert.equal("sftp /usr/lib/openssh/sftp-server", a.subsystem)
      assert.equal("/etc/issue.net", a.banner)
      assert.equal("no", a.permitemptypasswords)             -- a default; not-included.txt is not *.conf
      assert.equal("yes", a.pubkeyauthentication)           -- a default
      assert.is_nil(a.forcecommand)                          -- only inside Match
      assert.equal("yes", a.permittty)
    end)

    it("finds Include files by glob", function()
      assert.same({ fixture_dir .. "sshd_config.d/10-hardening.conf", fixture_dir .. "sshd_config.d/20-site.conf" },
        sshd.glob(fixture_dir .. "sshd_config.d/*.conf"))
      assert.same({ fixture_dir .. "sshd_config.d/20-site.conf" }, sshd.glob(fixture_dir .. "sshd_config.d/2?-*"))
      assert.same({}, sshd.glob(fixture_dir .. "nothing.d/*.conf"))
    end)

    it("is not applicable where there is no sshd", function()
      local present = proc.shell("command -v sshd || test -x /usr/sbin/sshd", { env = { PATH = "/usr/sbin:/usr/bin:/sbin:/bin" } })
      local data, err = collect.run("sshd")
      if present.ok then
        assert.is_table(data)
      else
        assert.is_nil(data)
        assert.equal("not-applicable", err.condition)
        assert.matches("no sshd", err.text)
      end
    end)

    it("uses sshd -T when sshd runs, else the configuration", function()
      local data = run_ok("sshd", { sshd_path = fixture_dir .. "bin/sshd", config_path = fixture_dir .. "sshd_config" })
      assert.equal("sshd -T", data.attributes.source)
      assert.equal("no", data.attributes.permitrootlogin)
      assert.equal("3", data.attributes.maxauthtries)

      local dir = tmp.dir("collect")
      finally(function() tmp.remove(dir) end)
      assert(fs.write(dir .. "/sshd", "#!/bin/sh\necho 'sshd: no hostkeys available -- exiting.' >&2\nexit 1\n",
        { mode = tonumber("755", 8) }))
      local fallback = run_ok("sshd", { sshd_path = dir .. "/sshd", config_path = fixture_dir .. "sshd_config",
        config_dir = fixture_dir })
      assert.equal("config", fallback.attributes.source)
      assert.equal("without-password", fallback.attributes.permitrootlogin)
      assert.equal("exited 1: sshd: no hostkeys available -- exiting.", fallback.attributes.sshd_t_error)
    end)
  end)

  describe("services", function()
    local services = require "sacm.collect.services"

    it("merges systemctl's units and unit files", function()
      local items = services.systemd_items(services.parse_list_units(fixture("systemctl-list-units.txt")),
        services.parse_unit_files(fixture("systemctl-list-unit-files.txt")))
      local names = {}
      for i, item in ipairs(items) do names[i] = item.name end
      assert.same({ "apache2.service", "cron.service", "dbus.service", "getty@tty1.service", "networking.service",
        "nftables.service", "rsync.service", "ssh.service", "sshd.service", "systemd-journald.service",
        "telnet.service" }, names)
      local s = by(items, "name")
      assert.same({ name = "ssh.service", state = "active", sub_state = "running", load_state = "loaded",
        unit_file_state = "enabled", enabled = true }, s["ssh.service"])
      assert.same({ name = "apache2.service", state = "failed", sub_state = "failed", load_state = "loaded",
        unit_file_state = "enabled", enabled = true }, s["apache2.service"])
      assert.same({ name = "rsync.service", state = "inactive", sub_state = "dead", load_state = "not-loaded",
        unit_file_state = "disabled", enabled = false }, s["rsync.service"])
      assert.equal("enabled", s["getty@tty1.service"].unit_file_state) -- its template's
      assert.equal("masked", s["nftables.service"].unit_file_state)
      assert.is_false(s["dbus.service"].enabled) -- static
      assert.equal("not-found", s["telnet.service"].load_state)
      assert.is_nil(s["telnet.service"].unit_file_state)
    end)

    it("parses list-units output with the failure markers of a terminal", function()
      local u = services.parse_list_units("\226\151\143 apache2.service loaded failed failed Apache\n  cron.service loaded active running Cron\n")
      assert.same({ load = "loaded", active = "failed", sub = "failed" }, u["apache2.service"])
      assert.same({ load = "loaded", active = "active", sub = "running" }, u["cron.service"])
    end)

    it("reads process names, ids and the effective uid from /proc status", function()
      assert.same({ name = "my\\odd\nname", uid = 33, ppid = 1 }, procfs.parse_status(fixture("proc-status")))
    end)

    it("collects what runs here: systemd's services, or the processes", function()
      local data = run_ok("services")
      local systemd = fs.exists("/run/systemd/system")
      assert.equal(systemd and "systemd" or "proc", data.attributes.source)
      assert.equal(#data.items, data.attributes.count)
      local from_proc = run_ok("services", { source = "proc" })
      local me = tonumber(fs.read("/proc/self/stat"):match("^(%d+)"))
      local mine = by(from_proc.items, "pid")[me]
      assert.equal(fs.readlink("/proc/self/exe"), mine.exe)
      assert.equal(sh("cat /proc/" .. me .. "/comm"), mine.name)
      assert.equal(0, mine.uid)
      -- processes come and go (ps itself, and whatever else the machine runs): the ones ps sees
      -- both before and after the collection must all be in it
      local function ps_pids()
        local pids = {}
        for p in sh("ps -e -o pid= -o ppid= -o stat="):gmatch("[^\n]+") do
          local pid, ppid, stat = p:match("(%d+)%s+(%d+)%s+(%S+)")
          -- not kernel threads, not zombies (they have no process left to describe)
          if tonumber(pid) ~= 2 and tonumber(ppid) ~= 2 and not stat:find("^Z") then pids[tonumber(pid)] = true end
        end
        return pids
      end
      local before = ps_pids()
      local again = run_ok("services", { source = "proc" })
      local after = ps_pids()
      local collected = by(again.items, "pid")
      local stable, missing = 0, {}
      for pid in pairs(before) do
        if after[pid] then
          stable = stable + 1
          if not collected[pid] then missing[#missing + 1] = pid end
        end
      end
      assert.is_true(stable > 0)
      assert.same({}, missing)
    end)
  end)

  describe("the runner", function()
    local saved_path
    local fixture_modules = FIXTURES .. "lua/?.lua"

    setup(function()
      saved_path = package.path
      package.path = fixture_modules .. ";" .. package.path
    end)
    teardown(function()
      package.path = saved_path
      for name in pairs(package.loaded) do
        if name:match("^sacm%.collect%.zz_") then package.loaded[name] = nil end
      end
    end)

    it("lists every file on package.path as a kind, sorted", function()
      local kinds = collect.kinds()
      local shipped = { "file_permissions", "files", "groups", "logindefs", "modules", "mounts", "os", "oscap", "packages",
        "pam", "services", "sockets", "sshd", "sudoers", "sysctl", "users" }
      local with_fixtures = { table.unpack(shipped) }
      for _, k in ipairs({ "zz_hang", "zz_malformed", "zz_raise", "zz_spin", "zz_unavailable", "zz_wrong_kind" }) do
        with_fixtures[#with_fixtures + 1] = k
      end
      assert.same(with_fixtures, kinds)
      package.path = saved_path
      assert.same(shipped, collect.kinds())
      package.path = fixture_modules .. ";" .. saved_path
    end)

    it("loads modules by kind and reports unknown or broken ones", function()
      local m = assert(collect.module("os"))
      assert.equal("os", m.kind)
      local none, err = collect.module("nope")
      assert.is_nil(none)
      assert.equal("item-not-found", err.condition)
      assert.equal("item-not-found", select(2, collect.module("../../etc")).condition)
      local wrong, werr = collect.module("zz_wrong_kind")
      assert.is_nil(wrong)
      assert.equal("internal-error", werr.condition)
      assert.matches('declares kind "something_else"', werr.text)
      assert.has_error(function() collect.module(42) end)
      assert.equal("item-not-found", select(2, collect.run("nope")).condition)
    end)

    it("cuts off a collection that hangs and kills the process it started", function()
      local dir = tmp.dir("collect")
      finally(function() tmp.remove(dir) end)
      local pid_file = dir .. "/pid"
      local err = run_fails("zz_hang", { timeout = 0.5, pid_file = pid_file }, "timeout")
      assert.equal("collection zz_hang did not finish within 0.5s", err.text)
      local pid = tonumber(assert(fs.read(pid_file)):match("%d+"))
      assert.is_true(eventually(function() return pid_is_gone(pid) end), "sleep process still running")
    end)

    it("cuts off a collection that loops without waiting", function()
      local err = run_fails("zz_spin", { timeout = 0.2 }, "timeout")
      assert.equal("collection zz_spin did not finish within 0.2s", err.text)
    end)

    it("turns a raising module into internal-error with its message", function()
      local err = run_fails("zz_raise", nil, "internal-error")
      assert.matches("^collection zz_raise failed: .*zz_raise%.lua:%d+: attempt to index a nil value", err.text)
      assert.matches("zz_raise%.lua", err.traceback)
    end)

    it("rejects data outside the contract", function()
      for _, variant in ipairs({ "nested", "number_key", "bad_key", "holes", "nan", "bad_utf8", "extra", "no_items",
        "function_value" }) do
        local err = run_fails("zz_malformed", { variant = variant }, "internal-error", variant)
        assert.matches("returned malformed data", err.text, 1, true)
      end
      local _, err = collect.run("zz_malformed", { variant = "nothing" })
      assert.equal("internal-error", err.condition)
      assert.matches("returned nothing", err.text)
      _, err = collect.run("zz_malformed", { variant = "string_error" })
      assert.equal("internal-error", err.condition)
      assert.matches("plain string", err.text)
    end)

    it("says not-applicable with the module's reason, without collecting", function()
      local err = run_fails("zz_unavailable", nil, "not-applicable")
      assert.equal("nothing to collect here", err.text)
    end)

    it("runs several kinds at once, each under its own budget", function()
      local dir = tmp.dir("collect")
      finally(function() tmp.remove(dir) end)
      local all = collect.run_all({ "os", "zz_hang", "zz_raise", "zz_unavailable", "sysctl", "nope" },
        { timeout = 0.5, pid_file = dir .. "/pid", options = { sysctl = { keys = { "net.ipv4.ip_forward" } } } })
      assert.equal(sh("hostname"), all.os.data.attributes.hostname)
      assert.same({ "net.ipv4.ip_forward" }, (function()
        local keys = {}
        -- sysctl names have dots; persistent_files and persistent_unreadable are the kind's own
        for k in pairs(all.sysctl.data.attributes) do
          if k:find(".", 1, true) then keys[#keys + 1] = k end
        end
        return keys
      end)())
      assert.equal("timeout", all.zz_hang.error.condition)
      assert.equal("internal-error", all.zz_raise.error.condition)
      assert.equal("not-applicable", all.zz_unavailable.error.condition)
      assert.equal("item-not-found", all.nope.error.condition)
    end)

    it("validates data shapes", function()
      assert.is_true(collect.validate({ attributes = { a = 1, b = "x", c = true, d = 1.5, ["net.ipv4.x"] = "0" },
        items = { { k = "v" }, {} } }))
      assert.is_nil(collect.validate({ attributes = {}, items = { "x" } }))
      assert.is_nil(collect.validate({ attributes = setmetatable({}, {}), items = {} }))
      assert.equal("a\\xffb", collect.text("a\255b"))
      assert.equal("tab\tok \\x01", collect.text("tab\tok \1"))
      assert.equal("ünïcode", collect.text("ünïcode"))
    end)
  end)
end)
