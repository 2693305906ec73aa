-- OpenSSH server hardening. Reads sshd's effective settings (posture kind "sshd": keys are
-- sshd_config keywords in lower case, as `sshd -T` prints them). Where a key is absent the rule
-- falls back to OpenSSH's compiled-in default, and says so in the evidence.

-- OpenSSH's defaults (sshd_config(5), OpenSSH 7.0 and later) for the keys checked here.
local DEFAULTS = {
  permitrootlogin = "prohibit-password",
  passwordauthentication = "yes",
  permitemptypasswords = "no",
  x11forwarding = "no",
}

-- The rule shared by every setting here: sshd present, key's value one of `wanted`.
local function expect(key, wanted, advice)
  return function(posture)
    local attrs = posture.sshd.attributes
    if is_empty(attrs) then return "notapplicable", "sshd is not installed" end
    local value, origin = attrs[key], "configured"
    if value == nil then value, origin = DEFAULTS[key], "OpenSSH default" end
    value = tostring(value):lower()
    local source = attrs.source and (" (from " .. attrs.source .. ")") or ""
    if contains(wanted, value) then
      return "pass", ("%s is %s (%s)%s"):format(key, value, origin, source)
    end
    return "fail", { ("%s is %s (%s)%s"):format(key, value, origin, source), advice }
  end
end

return {
  id = "ssh-hardening",
  title = "OpenSSH server hardening",
  description = "Settings of the OpenSSH daemon that decide who can log in remotely and how.",
  rules = {
    {
      id = "ssh-permit-root-login",
      title = "sshd does not allow root to log in",
      severity = "high",
      requires = { "sshd" },
      rationale = "A direct root login leaves no trace of which person used the account and gives "
        .. "an attacker who guesses or steals one credential the whole machine at once. "
        .. "Administrators should log in as themselves and raise their privileges with sudo, "
        .. "which is logged per person. Even key-only root logins (prohibit-password) keep root "
        .. "as a remote target, so only 'no' passes.",
      check = expect("permitrootlogin", { "no" }, "set PermitRootLogin no in sshd_config"),
    },
    {
      id = "ssh-password-authentication",
      title = "sshd does not accept passwords",
      severity = "high",
      requires = { "sshd" },
      rationale = "Passwords offered over the network can be guessed, sprayed and replayed from "
        .. "other breaches, and every internet-facing sshd sees such attempts around the clock. "
        .. "Public keys (or certificates) cannot be guessed and are not reused across sites; "
        .. "turning password authentication off removes the whole class of attack.",
      check = expect("passwordauthentication", { "no" },
        "set PasswordAuthentication no in sshd_config (after installing keys for every user)"),
    },
    {
      id = "ssh-permit-empty-passwords",
      title = "sshd refuses accounts with empty passwords",
      severity = "high",
      requires = { "sshd" },
      rationale = "An account with an empty password is open to anyone who knows its name. "
        .. "sshd refuses such logins by default; this rule catches a configuration that turned "
        .. "the protection off.",
      check = expect("permitemptypasswords", { "no" }, "set PermitEmptyPasswords no in sshd_config"),
    },
    {
      id = "ssh-x11-forwarding",
      title = "sshd does not forward X11",
      severity = "low",
      requires = { "sshd" },
      rationale = "X11 forwarding lets programs on the server open windows on the client's "
        .. "display, and a compromised server can use that channel to read the client's "
        .. "keystrokes and screen. Servers rarely need it; leaving it off removes the exposure "
        .. "for administrators who connect with forwarding enabled by habit.",
      check = expect("x11forwarding", { "no" }, "set X11Forwarding no in sshd_config"),
    },
  },
}
