-- Kernel hardening through sysctl (posture kind "sysctl"). Each setting has two sides, and both
-- are judged, as SSG and CIS do:
--   run time:   attributes keyed by the dotted sysctl name, the value /proc/sys gives now;
--   persistent: items {name, value, file, line, glob}, the assignment sysctl.d(5) applies at boot
--               (the winner after systemd-sysctl's precedence, resolved by the collector).
-- A value right only at run time is undone by the next reboot; one right only on disk is not in
-- force until then. A key the running kernel does not have is not judged (the feature it guards
-- does not exist here, e.g. IPv6 switched off); a rule none of whose keys exist is notapplicable.

local refs = references -- SSG rules and the CIS recommendation (docs/policies.md)

local function describe(wanted)
  if #wanted == 1 then return wanted[1] end
  return table.concat(wanted, " or ")
end

-- Where a persistent value should go: /etc/sysctl.d, in a file that sorts after the one that wins
-- now (later files win), or the winning line itself when it is the administrator's file already.
local function advice(key, want, item)
  local line = ("%s = %s"):format(key, want)
  if item == nil then
    return ("add \"%s\" to a file in /etc/sysctl.d/ (e.g. /etc/sysctl.d/60-hardening.conf)"):format(line)
  end
  local file = tostring(item.file)
  if file:find("^/etc/") then
    return ("change %s line %s to \"%s\""):format(file, tostring(item.line), line)
  end
  local name = file:match("[^/]*$")
  return ("add \"%s\" to a file in /etc/sysctl.d/ whose name sorts after %s, or copy %s to "
    .. "/etc/sysctl.d/%s and change the line there (a file of that name in /etc hides the whole of %s)")
    :format(line, name, file, name, file)
end

-- The rule shared by every setting here: each key the kernel has must have one of the wanted
-- values at run time and in the persistent configuration.
local function expect(keys, wanted)
  if type(wanted) == "string" then wanted = { wanted } end
  return function(posture)
    local attrs, items = posture.sysctl.attributes, posture.sysctl.items
    local bad, good, absent = {}, {}, {}
    for _, key in ipairs(keys) do
      local runtime = attrs[key]
      if runtime == nil then
        absent[#absent + 1] = key
      else
        runtime = trim(tostring(runtime))
        local item = find_item(items, "name", key)
        local persistent = item and trim(tostring(item.value))
        local where = item and ("%s:%s%s"):format(tostring(item.file), tostring(item.line),
          item.glob and (" via " .. tostring(item.glob)) or "") or nil
        local ok_run, ok_disk = contains(wanted, runtime), persistent ~= nil and contains(wanted, persistent)
        if ok_run and ok_disk then
          good[#good + 1] = ("%s = %s at run time and persistently (%s)"):format(key, runtime, where)
        else
          if not ok_run then
            bad[#bad + 1] = ("%s = %s at run time (want %s): run \"sysctl -w %s=%s\""):format(key, runtime,
              describe(wanted), key, wanted[1])
          end
          if persistent == nil then
            bad[#bad + 1] = ("%s is not set persistently (want %s; a reboot gives the kernel's default): %s")
              :format(key, describe(wanted), advice(key, wanted[1], nil))
          elseif not ok_disk then
            bad[#bad + 1] = ("%s = %s persistently in %s (want %s): %s"):format(key, persistent, where,
              describe(wanted), advice(key, wanted[1], item))
          end
        end
      end
    end
    if #bad > 0 then return "fail", bad end
    if #good == 0 then
      return "notapplicable", ("this kernel has none of %s"):format(table.concat(keys, ", "))
    end
    if #absent > 0 then good[#good + 1] = "not on this kernel: " .. table.concat(absent, ", ") end
    return "pass", good
  end
end

return {
  id = "kernel-hardening",
  title = "Kernel network and memory hardening",
  description = "sysctl settings that close network redirection tricks and make memory attacks "
    .. "harder, judged at run time and in the persistent configuration (sysctl.d).",
  rules = {
    {
      id = "kernel-ip-forward",
      title = "IP forwarding is off (IPv4 and IPv6)",
      severity = "medium",
      requires = { "sysctl" },
      references = refs({ "sysctl_net_ipv4_ip_forward", "sysctl_net_ipv6_conf_all_forwarding" },
        "3.3.1", "Ensure ip forwarding is disabled"),
      rationale = "A host that forwards packets acts as a router: it can carry traffic between "
        .. "networks that were meant to be separate and bypass the firewalls between them. Only "
        .. "machines whose job is routing (and container hosts that need it) should forward.",
      check = expect({ "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding" }, "0"),
    },
    {
      id = "kernel-accept-redirects",
      title = "ICMP redirects are not accepted",
      severity = "medium",
      requires = { "sysctl" },
      references = refs({ "sysctl_net_ipv4_conf_all_accept_redirects", "sysctl_net_ipv4_conf_default_accept_redirects",
        "sysctl_net_ipv6_conf_all_accept_redirects", "sysctl_net_ipv6_conf_default_accept_redirects" },
        "3.3.5", "Ensure icmp redirects are not accepted"),
      rationale = "An ICMP redirect tells a host to send traffic for a destination through "
        .. "another gateway. Anyone on the local network can forge one and put themselves in the "
        .. "path of the host's traffic; hosts with a static route table gain nothing from them.",
      check = expect({ "net.ipv4.conf.all.accept_redirects", "net.ipv4.conf.default.accept_redirects",
        "net.ipv6.conf.all.accept_redirects", "net.ipv6.conf.default.accept_redirects" }, "0"),
    },
    {
      id = "kernel-secure-redirects",
      title = "ICMP redirects from gateways are not accepted either",
      severity = "medium",
      requires = { "sysctl" },
      references = refs({ "sysctl_net_ipv4_conf_all_secure_redirects", "sysctl_net_ipv4_conf_default_secure_redirects" },
        "3.3.6", "Ensure secure icmp redirects are not accepted"),
      rationale = "\"Secure\" redirects are the ones that claim to come from a gateway the host "
        .. "already uses. The claim is only the packet's source address, which anyone on the link "
        .. "can forge, so they steer traffic just as well as any other redirect.",
      check = expect({ "net.ipv4.conf.all.secure_redirects", "net.ipv4.conf.default.secure_redirects" }, "0"),
    },
    {
      id = "kernel-send-redirects",
      title = "ICMP redirects are not sent",
      severity = "medium",
      requires = { "sysctl" },
      references = refs({ "sysctl_net_ipv4_conf_all_send_redirects", "sysctl_net_ipv4_conf_default_send_redirects" },
        "3.3.2", "Ensure packet redirect sending is disabled"),
      rationale = "Only routers have a reason to send redirects. A host that sends them reveals "
        .. "routing information and, if it is ever made to forward, helps steer other hosts' "
        .. "traffic.",
      check = expect({ "net.ipv4.conf.all.send_redirects", "net.ipv4.conf.default.send_redirects" }, "0"),
    },
    {
      id = "kernel-accept-source-route",
      title = "Source-routed packets are not accepted",
      severity = "medium",
      requires = { "sysctl" },
      references = refs({ "sysctl_net_ipv4_conf_all_accept_source_route", "sysctl_net_ipv4_conf_default_accept_source_route",
        "sysctl_net_ipv6_conf_all_accept_source_route", "sysctl_net_ipv6_conf_default_accept_source_route" },
        "3.3.8", "Ensure source routed packets are not accepted"),
      rationale = "A source-routed packet names the path it wants to take. Accepting them lets a "
        .. "sender route traffic through this host to addresses that filtering would otherwise "
        .. "keep out of reach, and makes a forged source address answerable.",
      check = expect({ "net.ipv4.conf.all.accept_source_route", "net.ipv4.conf.default.accept_source_route",
        "net.ipv6.conf.all.accept_source_route", "net.ipv6.conf.default.accept_source_route" }, "0"),
    },
    {
      id = "kernel-log-martians",
      title = "Packets with impossible addresses are logged",
      severity = "low",
      requires = { "sysctl" },
      references = refs({ "sysctl_net_ipv4_conf_all_log_martians", "sysctl_net_ipv4_conf_default_log_martians" },
        "3.3.9", "Ensure suspicious packets are logged"),
      rationale = "Packets whose source address cannot be right on the interface they arrived on "
        .. "(\"martians\") are a sign of spoofing or of a misconfigured network. Logging them gives "
        .. "the administrator a chance to notice an attack that filtering quietly drops.",
      check = expect({ "net.ipv4.conf.all.log_martians", "net.ipv4.conf.default.log_martians" }, "1"),
    },
    {
      id = "kernel-rp-filter",
      title = "Reverse path filtering is strict",
      severity = "medium",
      requires = { "sysctl" },
      references = refs({ "sysctl_net_ipv4_conf_all_rp_filter", "sysctl_net_ipv4_conf_default_rp_filter" },
        "3.3.7", "Ensure reverse path filtering is enabled"),
      rationale = "With strict reverse path filtering (1) the kernel drops packets whose source "
        .. "address it would not route back through the interface they came in on, which stops "
        .. "most spoofed traffic at the door. Loose mode (2, systemd's default) only checks that "
        .. "some route exists and accepts what strict mode drops.",
      check = expect({ "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter" }, "1"),
    },
    {
      id = "kernel-icmp-echo-ignore-broadcasts",
      title = "Broadcast ICMP echo requests are ignored",
      severity = "low",
      requires = { "sysctl" },
      references = refs({ "sysctl_net_ipv4_icmp_echo_ignore_broadcasts" },
        "3.3.4", "Ensure broadcast icmp requests are ignored"),
      rationale = "Answering pings sent to a broadcast address makes the host an amplifier in a "
        .. "smurf attack: one forged request to the broadcast address becomes a reply from every "
        .. "host on the network, all sent to the victim.",
      check = expect({ "net.ipv4.icmp_echo_ignore_broadcasts" }, "1"),
    },
    {
      id = "kernel-icmp-ignore-bogus-errors",
      title = "Bogus ICMP error responses are ignored",
      severity = "low",
      requires = { "sysctl" },
      references = refs({ "sysctl_net_ipv4_icmp_ignore_bogus_error_responses" },
        "3.3.3", "Ensure bogus icmp responses are ignored"),
      rationale = "Some routers answer broadcast frames with ICMP errors that violate RFC 1122. "
        .. "Logging each one lets anyone who can send them fill the logs and hide what matters; "
        .. "ignoring them loses nothing.",
      check = expect({ "net.ipv4.icmp_ignore_bogus_error_responses" }, "1"),
    },
    {
      id = "kernel-tcp-syncookies",
      title = "TCP SYN cookies are on",
      severity = "medium",
      requires = { "sysctl" },
      references = refs({ "sysctl_net_ipv4_tcp_syncookies" }, "3.3.10", "Ensure tcp syn cookies is enabled"),
      rationale = "A SYN flood fills the queue of half-open connections so that real clients are "
        .. "turned away. With SYN cookies the kernel keeps accepting connections when the queue "
        .. "is full, encoding their state in the sequence number instead of memory.",
      check = expect({ "net.ipv4.tcp_syncookies" }, "1"),
    },
    {
      id = "kernel-ipv6-accept-ra",
      title = "IPv6 router advertisements are not accepted",
      severity = "medium",
      requires = { "sysctl" },
      references = refs({ "sysctl_net_ipv6_conf_all_accept_ra", "sysctl_net_ipv6_conf_default_accept_ra" },
        "3.3.11", "Ensure ipv6 router advertisements are not accepted"),
      rationale = "Any host on the link can send a router advertisement and become the default "
        .. "gateway of every machine that accepts it, putting itself in the path of their "
        .. "traffic. Servers with configured addresses and routes do not need them.",
      check = expect({ "net.ipv6.conf.all.accept_ra", "net.ipv6.conf.default.accept_ra" }, "0"),
    },
    {
      id = "kernel-randomize-va-space",
      title = "Full address space layout randomisation",
      severity = "high",
      requires = { "sysctl" },
      references = refs({ "sysctl_kernel_randomize_va_space" },
        "1.5.1", "Ensure address space layout randomization is enabled"),
      rationale = "Randomising where the stack, heap, libraries and the program itself are "
        .. "mapped (value 2) means an exploit cannot rely on fixed addresses; most memory "
        .. "corruption exploits then need a second, information-leaking bug. Values 0 and 1 "
        .. "switch part or all of it off.",
      check = expect({ "kernel.randomize_va_space" }, "2"),
    },
    {
      id = "kernel-ptrace-scope",
      title = "ptrace is restricted to a process's descendants (or more)",
      severity = "medium",
      requires = { "sysctl" },
      references = refs({ "sysctl_kernel_yama_ptrace_scope" }, "1.5.2", "Ensure ptrace_scope is restricted"),
      rationale = "With ptrace_scope 0 any process may attach to every other process of the same "
        .. "user and read its memory: one compromised program can lift the SSH agent's keys or a "
        .. "browser's session from its neighbours. 1 limits ptrace to descendants (debuggers still "
        .. "work), 2 to administrators, 3 switches it off.",
      check = expect({ "kernel.yama.ptrace_scope" }, { "1", "2", "3" }),
    },
    {
      id = "kernel-suid-dumpable",
      title = "Set-user-ID programs do not dump core",
      severity = "medium",
      requires = { "sysctl" },
      references = refs({ "sysctl_fs_suid_dumpable" }, "1.5.3", "Ensure core dumps are restricted"),
      rationale = "A core dump of a privileged program holds whatever it had in memory (password "
        .. "hashes, keys) and may be written where its user can read it. fs.suid_dumpable 0 keeps "
        .. "programs that changed privileges from dumping core at all.",
      check = expect({ "fs.suid_dumpable" }, "0"),
    },
    {
      id = "kernel-protected-links",
      title = "Symbolic and hard link protection is on",
      severity = "medium",
      requires = { "sysctl" },
      references = refs({ "sysctl_fs_protected_symlinks", "sysctl_fs_protected_hardlinks" }),
      rationale = "Without these, a user can plant a link in a world-writable directory such as "
        .. "/tmp and wait for a privileged program to follow it, turning a predictable file name "
        .. "into a write to any file on the system (the classic time-of-check-to-time-of-use race).",
      check = expect({ "fs.protected_symlinks", "fs.protected_hardlinks" }, "1"),
    },
    {
      id = "kernel-dmesg-restrict",
      title = "Kernel log is readable by root only",
      severity = "low",
      requires = { "sysctl" },
      references = refs({ "sysctl_kernel_dmesg_restrict" }),
      rationale = "The kernel log holds kernel addresses and hardware details that help an "
        .. "attacker defeat kernel address randomisation and aim an exploit. Unprivileged users "
        .. "have no need to read it.",
      check = expect({ "kernel.dmesg_restrict" }, "1"),
    },
    {
      id = "kernel-kptr-restrict",
      title = "Kernel pointers are hidden from unprivileged users",
      severity = "low",
      requires = { "sysctl" },
      references = refs({ "sysctl_kernel_kptr_restrict" }),
      rationale = "Kernel addresses printed in /proc (kallsyms, modules) undo kernel address "
        .. "randomisation for whoever reads them. kptr_restrict 1 shows them to privileged users "
        .. "only, 2 to nobody.",
      check = expect({ "kernel.kptr_restrict" }, { "1", "2" }),
    },
  },
}
