-- sudo (posture kinds "sudoers": items {kind = "defaults", binding, name, value, negated, file,
-- line} and {kind = "rule", text, nopasswd, file, line}, attributes "defaults.<name>" = the last
-- global value; and "packages"). The kind is not applicable where /etc/sudoers does not exist,
-- so these rules are notapplicable without sudo, except sudo-installed.

local refs = references -- SSG rules and the CIS recommendation (docs/policies.md)

local function where(e) return ("%s:%s"):format(tostring(e.file), tostring(e.line)) end

-- The last global Defaults entry for name (sudo applies them in order), or nil.
local function last_default(sudoers, name)
  local found
  for _, e in ipairs(sudoers.items) do
    if e.kind == "defaults" and e.binding == "" and e.name == name then found = e end
  end
  return found
end

local function installed(item)
  local status = tostring(item.status or "installed")
  return status == "installed" or status:find("ok installed", 1, true) ~= nil
end

return {
  id = "sudo",
  title = "sudo",
  description = "Privilege escalation goes through sudo, which asks for a password, uses a terminal of its own and logs.",
  rules = {
    {
      id = "sudo-installed",
      title = "sudo is installed",
      severity = "medium",
      requires = { "packages" },
      references = refs({ "package_sudo_installed" }, "5.2.1", "Ensure sudo is installed"),
      rationale = "sudo lets administrators run single commands as root under their own name, with "
        .. "every command logged, instead of sharing root's password and working in root shells "
        .. "that leave no trace of who did what.",
      check = function(posture)
        for _, p in ipairs(posture.packages.items) do
          if (p.name == "sudo" or p.name == "sudo-ldap") and installed(p) then
            return "pass", ("%s %s is installed"):format(p.name, tostring(p.version))
          end
        end
        return "fail", "neither sudo nor sudo-ldap is installed: apt install sudo"
      end,
    },
    {
      id = "sudo-use-pty",
      title = "sudo runs commands in a pseudo-terminal of their own",
      severity = "medium",
      requires = { "sudoers" },
      references = refs({ "sudo_add_use_pty" }, "5.2.2", "Ensure sudo commands use pty"),
      rationale = "A command run with sudo on the user's own terminal can keep running in the "
        .. "background after sudo exits and push input into that terminal (TIOCSTI), typing commands "
        .. "into the administrator's shell. use_pty gives it a terminal of its own.",
      check = function(posture)
        local e = last_default(posture.sudoers, "use_pty")
        if e and e.value == true then return "pass", ("Defaults use_pty (%s)"):format(where(e)) end
        if e then return "fail", ("Defaults !use_pty (%s) turns it off: remove it, add Defaults use_pty"):format(where(e)) end
        return "fail", "no \"Defaults use_pty\" in /etc/sudoers or its includes"
      end,
    },
    {
      id = "sudo-logfile",
      title = "sudo keeps a log file of its own",
      severity = "low",
      requires = { "sudoers" },
      references = refs({ "sudo_custom_logfile" }, "5.2.3", "Ensure sudo log file exists"),
      rationale = "sudo logs to syslog by default, mixed with everything else and rotated with it. A "
        .. "dedicated log file keeps the record of who ran what as root in one place that is easy "
        .. "to review and to protect.",
      check = function(posture)
        local e = last_default(posture.sudoers, "logfile")
        if e and type(e.value) == "string" and e.value ~= "" then
          return "pass", ("Defaults logfile=\"%s\" (%s)"):format(e.value, where(e))
        end
        return "fail", "no Defaults logfile=... in /etc/sudoers or its includes: add Defaults logfile=\"/var/log/sudo.log\""
      end,
    },
    {
      id = "sudo-password-required",
      title = "sudo asks for a password (no NOPASSWD)",
      severity = "medium",
      requires = { "sudoers" },
      references = refs({ "sudo_require_authentication" }, "5.2.4", "Ensure users must provide password for privilege escalation"),
      rationale = "Without the password prompt, anything that runs as the user (a malicious "
        .. "dependency, a browser exploit) can become root without the user knowing. The prompt is "
        .. "what makes sudo a decision of the person.",
      check = function(posture)
        local bad = {}
        for _, e in ipairs(posture.sudoers.items) do
          if e.kind == "rule" and e.nopasswd then bad[#bad + 1] = ("%s: %s"):format(where(e), tostring(e.text)) end
        end
        if #bad > 0 then return "fail", bad end
        return "pass", "no sudoers rule has NOPASSWD"
      end,
    },
    {
      id = "sudo-authenticate",
      title = "Re-authentication is not switched off",
      severity = "medium",
      requires = { "sudoers" },
      references = refs({ "sudo_remove_no_authenticate" }, "5.2.5", "Ensure re-authentication for privilege escalation is not disabled globally"),
      rationale = "Defaults !authenticate lets the users it applies to run sudo without any password, "
        .. "as NOPASSWD does for single rules, and is easy to overlook in a Defaults line.",
      check = function(posture)
        local bad = {}
        for _, e in ipairs(posture.sudoers.items) do
          if e.kind == "defaults" and e.name == "authenticate" and e.negated then
            bad[#bad + 1] = ("Defaults%s !authenticate (%s)"):format(tostring(e.binding), where(e))
          end
        end
        if #bad > 0 then return "fail", bad end
        return "pass", "no Defaults !authenticate"
      end,
    },
    {
      id = "sudo-timestamp-timeout",
      title = "sudo asks again after at most 15 minutes",
      severity = "low",
      requires = { "sudoers" },
      references = refs({ "sudo_require_reauthentication" }, "5.2.6", "Ensure sudo authentication timeout is configured correctly"),
      rationale = "After a password sudo trusts the terminal for timestamp_timeout minutes. A long or "
        .. "negative (never expiring) timeout leaves root a keystroke away for anyone who gets to an "
        .. "unattended terminal or a process running in that session.",
      check = function(posture)
        local e = last_default(posture.sudoers, "timestamp_timeout")
        if e == nil then return "pass", "timestamp_timeout is not set: sudo's default of 5 minutes applies" end
        local n = tonumber(tostring(e.value))
        if n and n >= 0 and n <= 15 then
          return "pass", ("Defaults timestamp_timeout=%s (%s)"):format(tostring(e.value), where(e))
        end
        return "fail", ("Defaults timestamp_timeout=%s (%s): want 15 or less, and not negative"):format(tostring(e.value), where(e))
      end,
    },
  },
}
