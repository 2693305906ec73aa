-- Services and packages a server should not have, and the one it should (cron). Posture kinds
-- "packages" (items {name, version, status}) and "services": with systemd, items {name =
-- "cron.service", state (active, inactive, failed, ...), enabled (starts at boot)}; without it
-- (attributes.source = "proc"), the running processes {name = comm}.
--
-- A service has the two sides the sysctl rules judge: running now, and enabled to start at boot.
-- "Not in use" (CIS 2.1.x) is met when the package is not installed; where it is installed (as a
-- dependency, say) its service must be neither running nor enabled. Without systemd the boot side
-- cannot be seen, and an installed, stopped service is notchecked rather than guessed at.

local SSG = "xccdf_org.ssgproject.content_rule_"

local function installed(posture, names)
  local found = {}
  for _, p in ipairs(posture.packages.items) do
    local status = tostring(p.status or "installed")
    if contains(names, p.name) and (status == "installed" or status:find("ok installed", 1, true)) then
      found[#found + 1] = ("%s %s"):format(tostring(p.name), tostring(p.version or "?"))
    end
  end
  return found
end

-- The systemd unit, or the running process, of a service: {running, enabled (nil: unknown), what}
local function service_state(posture, unit, process)
  local svc = posture.services
  if svc.attributes.source == "systemd" then
    local item = find_item(svc.items, "name", unit .. ".service")
    if item == nil then return { running = false, enabled = false, what = unit .. ".service is not known to systemd" } end
    return { running = item.state == "active" or item.state == "activating" or item.state == "reloading",
      enabled = item.enabled == true,
      what = ("%s.service is %s and %s"):format(unit, tostring(item.state), item.enabled and "enabled" or
        ("not enabled (" .. tostring(item.unit_file_state or "?") .. ")")) }
  end
  local proc = find_item(svc.items, "name", process or unit)
  return { running = proc ~= nil, enabled = nil,
    what = proc and ("%s runs (pid %s)"):format(tostring(process or unit), tostring(proc.pid))
      or ("no %s process runs"):format(tostring(process or unit)) }
end

-- units and processes are lists (a web server is apache2 or nginx): any of them running or
-- enabled counts.
local function not_in_use(packages, units, processes)
  return function(posture)
    local found = installed(posture, packages)
    if #found == 0 then
      return "pass", ("none of %s is installed"):format(table.concat(packages, ", "))
    end
    local running, enabled, what = false, false, {}
    for i, unit in ipairs(units) do
      local s = service_state(posture, unit, processes[i])
      running = running or s.running
      if s.enabled == nil then enabled = nil elseif enabled ~= nil then enabled = enabled or s.enabled end
      what[#what + 1] = s.what
    end
    local head = ("%s installed; %s"):format(table.concat(found, ", "), table.concat(what, "; "))
    if running or enabled then
      return "fail", { head, ("remove the package (apt purge %s), or stop and mask the service "
        .. "(systemctl mask --now %s) if another package needs it"):format(table.concat(packages, " "), table.concat(units, " ")) }
    end
    if enabled == nil then
      return "notchecked", { head, "without systemd this collector cannot see whether it starts at boot" }
    end
    return "pass", head
  end
end

local function not_installed(packages)
  return function(posture)
    local found = installed(posture, packages)
    if #found == 0 then return "pass", ("none of %s is installed"):format(table.concat(packages, ", ")) end
    found[#found + 1] = "remove with apt purge " .. table.concat(packages, " ")
    return "fail", found
  end
end

local rules = {
  {
    id = "service-cron-enabled",
    title = "cron is installed, enabled and running",
    severity = "low",
    requires = { "packages", "services" },
    references = {
      { system = "ssg", id = SSG .. "package_cron_installed" },
      { system = "ssg", id = SSG .. "service_cron_enabled" },
      { system = "cis-debian12", id = "2.4.1.1", title = "Ensure cron daemon is enabled and active" },
    },
    rationale = "Log rotation, package cache cleaning, integrity checks and certificate renewal run "
      .. "from cron. A host where it is stopped, or will not start at the next boot, quietly stops "
      .. "doing its maintenance.",
    check = function(posture)
      if #installed(posture, { "cron", "cronie" }) == 0 then return "fail", "cron is not installed: apt install cron" end
      local s = service_state(posture, "cron", "cron")
      if s.running and s.enabled then return "pass", s.what end
      if s.running and s.enabled == nil then
        return "notchecked", { s.what, "without systemd this collector cannot see whether it starts at boot" }
      end
      local bad = { s.what }
      if not s.running then bad[#bad + 1] = "start it: systemctl start cron" end
      if s.enabled == false then bad[#bad + 1] = "enable it for the next boot: systemctl enable cron" end
      return "fail", bad
    end,
  },
}

-- { rule id part, CIS number, CIS title's service words, packages, systemd unit(s), process(es),
--   SSG rules }
local SERVERS = {
  { "autofs", "2.1.1", "autofs", { "autofs" }, "autofs", "automount", { "service_autofs_disabled", "package_autofs_removed" } },
  { "avahi", "2.1.2", "avahi daemon", { "avahi-daemon" }, "avahi-daemon", "avahi-daemon",
    { "package_avahi_removed", "service_avahi-daemon_disabled" } },
  { "dhcp-server", "2.1.3", "dhcp server", { "isc-dhcp-server", "kea-dhcp4-server" }, "isc-dhcp-server", "dhcpd",
    { "package_dhcp_removed", "service_dhcpd_disabled" } },
  { "dns-server", "2.1.4", "dns server", { "bind9" }, "named", "named", { "package_bind_removed", "service_named_disabled" } },
  { "dnsmasq", "2.1.5", "dnsmasq", { "dnsmasq" }, "dnsmasq", "dnsmasq", { "package_dnsmasq_removed", "service_dnsmasq_disabled" } },
  { "ftp-server", "2.1.6", "ftp server", { "vsftpd" }, "vsftpd", "vsftpd", { "package_vsftpd_removed", "service_vsftpd_disabled" } },
  { "ldap-server", "2.1.7", "ldap server", { "slapd" }, "slapd", "slapd",
    { "package_openldap-servers_removed", "service_slapd_disabled" } },
  { "mail-access-server", "2.1.8", "message access server", { "dovecot-imapd", "dovecot-pop3d" }, "dovecot", "dovecot",
    { "package_dovecot_removed", "service_dovecot_disabled" } },
  { "nfs-server", "2.1.9", "network file system", { "nfs-kernel-server" }, "nfs-server", "nfsd",
    { "package_nfs-kernel-server_removed", "service_nfs_disabled" } },
  { "print-server", "2.1.11", "print server", { "cups" }, "cups", "cupsd", { "package_cups_removed", "service_cups_disabled" } },
  { "rpcbind", "2.1.12", "rpcbind", { "rpcbind" }, "rpcbind", "rpcbind", { "package_rpcbind_removed", "service_rpcbind_disabled" } },
  { "rsync-server", "2.1.13", "rsync", { "rsync" }, "rsync", "rsync", { "package_rsync_removed", "service_rsyncd_disabled" } },
  { "samba", "2.1.14", "samba file server", { "samba" }, "smbd", "smbd", { "package_samba_removed", "service_smb_disabled" } },
  { "snmp", "2.1.15", "snmp", { "snmpd" }, "snmpd", "snmpd", { "package_net-snmp_removed", "service_snmpd_disabled" } },
  { "web-proxy", "2.1.17", "web proxy server", { "squid" }, "squid", "squid", { "package_squid_removed", "service_squid_disabled" } },
  { "web-server", "2.1.18", "web server", { "apache2", "nginx" }, { "apache2", "nginx" }, { "apache2", "nginx" },
    { "package_httpd_removed", "package_nginx_removed", "service_httpd_disabled", "service_nginx_disabled" } },
  { "xinetd", "2.1.19", "xinetd", { "xinetd" }, "xinetd", "xinetd", { "package_xinetd_removed", "service_xinetd_disabled" } },
}
for _, s in ipairs(SERVERS) do
  local refs = {}
  for _, name in ipairs(s[7]) do refs[#refs + 1] = { system = "ssg", id = SSG .. name } end
  refs[#refs + 1] = { system = "cis-debian12", id = s[2], title = ("Ensure %s services are not in use"):format(s[3]) }
  rules[#rules + 1] = {
    id = "service-" .. s[1] .. "-not-in-use",
    title = ("No %s is in use"):format(s[3]),
    severity = "medium",
    requires = { "packages", "services" },
    references = refs,
    rationale = ("A %s that a server does not need is a network service that can be attacked, "
      .. "misconfigured or forgotten when patches come out. Not installing it is best; where another "
      .. "package pulls it in, it must neither run nor start at boot."):format(s[3]),
    check = not_in_use(s[4], type(s[5]) == "table" and s[5] or { s[5] }, type(s[6]) == "table" and s[6] or { s[6] }),
  }
end

-- { rule id part, CIS number, CIS title, packages, SSG rules, why }
local CLIENTS = {
  { "prelink", "1.5.4", "Ensure prelink is not installed", { "prelink" }, { "package_prelink_removed" },
    "prelink rewrites binaries and libraries in place, which defeats address randomisation of libraries and breaks the checksums integrity tools (AIDE, debsums) compare against." },
  { "nis-client", "2.2.1", "Ensure NIS Client is not installed", { "nis" }, { "package_nis_removed" },
    "NIS sends account data, password hashes included, unencrypted to anyone on the network who asks for the domain; a client trusts whatever server answers." },
  { "rsh-client", "2.2.2", "Ensure rsh client is not installed", { "rsh-client", "rsh-redone-client" }, { "package_rsh_removed" },
    "rsh, rcp and rlogin send sessions and credentials in clear text; their presence invites their use against servers that still accept them." },
  { "talk-client", "2.2.3", "Ensure talk client is not installed", { "talk", "ytalk" }, { "package_talk_removed" },
    "talk sends its messages unencrypted and is a remnant nobody needs on a server; each unneeded network client is code an attacker can use from the host." },
  { "telnet-client", "2.2.4", "Ensure telnet client is not installed", { "telnet", "inetutils-telnet" }, { "package_telnet_removed" },
    "telnet sends passwords in clear text. Without the client, nobody on the host types a password into a session that anyone on the path can read." },
  { "ldap-client", "2.2.5", "Ensure ldap client is not installed", { "ldap-utils" }, { "package_openldap-clients_removed" },
    "The LDAP command line tools are only needed where the host is an LDAP administrator's workstation; elsewhere they give an intruder a ready tool to query the directory." },
  { "ftp-client", "2.2.6", "Ensure ftp client is not installed", { "ftp", "tnftp" }, { "package_ftp_removed", "package_tnftp_removed" },
    "FTP sends credentials and data unencrypted; SFTP and HTTPS replace it. An installed client keeps the habit alive and is a ready exfiltration tool." },
}
for _, c in ipairs(CLIENTS) do
  local refs = {}
  for _, name in ipairs(c[5]) do refs[#refs + 1] = { system = "ssg", id = SSG .. name } end
  refs[#refs + 1] = { system = "cis-debian12", id = c[2], title = c[3] }
  rules[#rules + 1] = {
    id = "packages-" .. c[1] .. "-removed",
    title = ("%s is not installed"):format(table.concat(c[4], " / ")),
    severity = "low",
    requires = { "packages" },
    references = refs,
    rationale = c[6],
    check = not_installed(c[4]),
  }
end

return {
  id = "services",
  title = "Services and packages",
  description = "Network services a server does not need are not in use (not running, not starting at boot); "
    .. "clear-text clients are not installed; cron runs.",
  rules = rules,
}
