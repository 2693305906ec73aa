-- Kernel hardening through sysctl (posture kind "sysctl": attributes keyed by the dotted sysctl
-- name, values as the strings /proc/sys gives). A key the kernel does not have is absent, and the
-- rule is then not applicable: the feature it guards does not exist on that kernel.

-- The rule shared by every setting here: each key present must have the wanted value.
local function expect(keys, wanted, advice)
  return function(posture)
    local attrs = posture.sysctl.attributes
    local bad, good = {}, {}
    for _, key in ipairs(keys) do
      local value = attrs[key]
      if value ~= nil then
        value = trim(tostring(value))
        if value == wanted then
          good[#good + 1] = ("%s = %s"):format(key, value)
        else
          bad[#bad + 1] = ("%s = %s (want %s)"):format(key, value, wanted)
        end
      end
    end
    if #bad > 0 then
      bad[#bad + 1] = advice
      return "fail", bad
    end
    if #good == 0 then
      return "notapplicable", ("this kernel has none of %s"):format(table.concat(keys, ", "))
    end
    return "pass", good
  end
end

return {
  id = "kernel-hardening",
  title = "Kernel network and memory hardening",
  description = "sysctl settings that close network redirection tricks and make memory attacks harder.",
  rules = {
    {
      id = "kernel-ip-forward",
      title = "IPv4 forwarding is off",
      severity = "medium",
      requires = { "sysctl" },
      rationale = "A host that forwards packets acts as a router: it can carry traffic between "
        .. "networks that were meant to be separate and bypass the firewalls between them. Only "
        .. "machines whose job is routing (and container hosts that need it) should forward.",
      check = expect({ "net.ipv4.ip_forward" }, "0", "set net.ipv4.ip_forward = 0 in /etc/sysctl.d/"),
    },
    {
      id = "kernel-accept-redirects",
      title = "ICMP redirects are not accepted",
      severity = "medium",
      requires = { "sysctl" },
      rationale = "An ICMP redirect tells a host to send traffic for a destination through "
        .. "another gateway. Anyone on the local network can forge one and put themselves in the "
        .. "path of the host's traffic; hosts with a static route table gain nothing from them.",
      check = expect({ "net.ipv4.conf.all.accept_redirects", "net.ipv4.conf.default.accept_redirects",
        "net.ipv6.conf.all.accept_redirects", "net.ipv6.conf.default.accept_redirects" }, "0",
        "set the accept_redirects keys to 0 in /etc/sysctl.d/"),
    },
    {
      id = "kernel-send-redirects",
      title = "ICMP redirects are not sent",
      severity = "medium",
      requires = { "sysctl" },
      rationale = "Only routers have a reason to send redirects. A host that sends them reveals "
        .. "routing information and, if it is ever made to forward, helps steer other hosts' "
        .. "traffic.",
      check = expect({ "net.ipv4.conf.all.send_redirects", "net.ipv4.conf.default.send_redirects" }, "0",
        "set net.ipv4.conf.all.send_redirects and .default.send_redirects to 0"),
    },
    {
      id = "kernel-randomize-va-space",
      title = "Full address space layout randomisation",
      severity = "high",
      requires = { "sysctl" },
      rationale = "Randomising where the stack, heap, libraries and the program itself are "
        .. "mapped (value 2) means an exploit cannot rely on fixed addresses; most memory "
        .. "corruption exploits then need a second, information-leaking bug. Values 0 and 1 "
        .. "switch part or all of it off.",
      check = expect({ "kernel.randomize_va_space" }, "2", "set kernel.randomize_va_space = 2"),
    },
    {
      id = "kernel-protected-links",
      title = "Symbolic and hard link protection is on",
      severity = "medium",
      requires = { "sysctl" },
      rationale = "Without these, a user can plant a link in a world-writable directory such as "
        .. "/tmp and wait for a privileged program to follow it, turning a predictable file name "
        .. "into a write to any file on the system (the classic time-of-check-to-time-of-use race).",
      check = expect({ "fs.protected_symlinks", "fs.protected_hardlinks" }, "1",
        "set fs.protected_symlinks = 1 and fs.protected_hardlinks = 1"),
    },
    {
      id = "kernel-dmesg-restrict",
      title = "Kernel log is readable by root only",
      severity = "low",
      requires = { "sysctl" },
      rationale = "The kernel log holds kernel addresses and hardware details that help an "
        .. "attacker defeat kernel address randomisation and aim an exploit. Unprivileged users "
        .. "have no need to read it.",
      check = expect({ "kernel.dmesg_restrict" }, "1", "set kernel.dmesg_restrict = 1"),
    },
  },
}
