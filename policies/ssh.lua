-- OpenSSH server hardening. Reads sshd's effective settings (posture kind "sshd": keys are
-- sshd_config keywords in lower case, as `sshd -T` prints them). Where a key is absent the rule
-- falls back to OpenSSH's compiled-in default, and says so in the evidence.

-- OpenSSH's defaults (sshd_config(5), OpenSSH 7.0 and later) for the keys checked here.
local DEFAULTS = {
  permitrootlogin = "prohibit-password",
  passwordauthentication = "yes",
  permitemptypasswords = "no",
  x11forwarding = "no",
  loglevel = "INFO", maxauthtries = "6", ignorerhosts = "yes", hostbasedauthentication = "no",
  permituserenvironment = "no", clientaliveinterval = "0", clientalivecountmax = "3",
  logingracetime = "120", banner = "none", maxstartups = "10:30:100", maxsessions = "10",
  usepam = "no", disableforwarding = "no", gssapiauthentication = "no",
}

local refs = references -- SSG rules and the CIS recommendation (docs/policies.md)

-- The effective value of a key: configured, else sshd's default (the collector fills those in
-- from sshd -T or its own table), else ours. Returns value (lower case), origin; nil without sshd.
local function value_of(attrs, key)
  local value, origin = attrs[key], "configured"
  if value == nil then value, origin = DEFAULTS[key], "OpenSSH default" end
  if value == nil then return nil, "not set" end
  return tostring(value), origin
end

local function source(attrs) return attrs.source and (" (from " .. attrs.source .. ")") or "" end

-- A rule on one key whose value judge(value) accepts; judge returns true, or false and a reason.
local function judged(key, judge, advice)
  return function(posture)
    local attrs = posture.sshd.attributes
    if is_empty(attrs) then return "notapplicable", "sshd is not installed" end
    local value, origin = value_of(attrs, key)
    local ok, why = judge(value)
    local text = ("%s is %s (%s)%s"):format(key, value == nil and "not set" or value, origin, source(attrs))
    if ok then return "pass", text end
    return "fail", { text .. (why and ("; " .. why) or ""), advice }
  end
end

local function int_between(lo, hi)
  return function(v)
    local n = math.tointeger(tonumber(v or ""))
    if n ~= nil and n >= lo and n <= hi then return true end
    return false, ("want %d to %d"):format(lo, hi)
  end
end

-- Algorithms of a crypto list the benchmarks call weak. With no list configured (the collector
-- read the configuration and has no default for these) OpenSSH 9's defaults apply, which hold
-- none of them.
local function no_weak(key, weak)
  return function(posture)
    local attrs = posture.sshd.attributes
    if is_empty(attrs) then return "notapplicable", "sshd is not installed" end
    local list = attrs[key]
    if list == nil then
      return "pass", ("%s is not set: OpenSSH's default list, which has no weak algorithm%s"):format(key, source(attrs))
    end
    local bad = {}
    for alg in tostring(list):gmatch("[^,%s]+") do
      if weak[alg:lower()] then bad[#bad + 1] = alg end
    end
    if #bad > 0 then
      return "fail", { ("%s allows %s%s"):format(key, table.concat(bad, ", "), source(attrs)),
        ("remove them from %s in sshd_config"):format(key) }
    end
    return "pass", ("%s: %s%s"):format(key, tostring(list), source(attrs))
  end
end

local function set_of(list)
  local t = {}
  for _, v in ipairs(list) do t[v] = true end
  return t
end

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
      references = refs({ "sshd_disable_root_login" }, "5.1.20", "Ensure sshd PermitRootLogin is disabled"),
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
      references = refs({ "sshd_disable_empty_passwords" }, "5.1.19", "Ensure sshd PermitEmptyPasswords is disabled"),
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
      references = refs({ "sshd_disable_x11_forwarding" }),
      check = expect("x11forwarding", { "no" }, "set X11Forwarding no in sshd_config"),
    },
    {
      id = "ssh-loglevel",
      title = "sshd logs at INFO or VERBOSE",
      severity = "low",
      requires = { "sshd" },
      references = refs({ "sshd_set_loglevel_info" }, "5.1.14", "Ensure sshd LogLevel is configured"),
      rationale = "Logins, failed attempts and the keys used are what an investigation of a break-in "
        .. "starts from. QUIET and the ERROR levels drop them; DEBUG logs private details of every "
        .. "session. INFO records logins, VERBOSE also the key fingerprints.",
      check = judged("loglevel", function(v)
        v = tostring(v):upper()
        if v == "INFO" or v == "VERBOSE" then return true end
        return false, "want INFO or VERBOSE"
      end, "set LogLevel VERBOSE in sshd_config"),
    },
    {
      id = "ssh-max-auth-tries",
      title = "sshd allows at most 4 authentication attempts per connection",
      severity = "medium",
      requires = { "sshd" },
      references = refs({ "sshd_set_max_auth_tries" }, "5.1.16", "Ensure sshd MaxAuthTries is configured"),
      rationale = "Each connection may try MaxAuthTries passwords or keys before sshd drops it. A low "
        .. "limit slows guessing and, past half of it, gets failures logged, which makes brute force "
        .. "visible.",
      check = judged("maxauthtries", int_between(1, 4), "set MaxAuthTries 4 in sshd_config"),
    },
    {
      id = "ssh-ignore-rhosts",
      title = "sshd ignores .rhosts and .shosts",
      severity = "medium",
      requires = { "sshd" },
      references = refs({ "sshd_disable_rhosts" }, "5.1.11", "Ensure sshd IgnoreRhosts is enabled"),
      rationale = "The r-commands' trust files let a user declare other hosts' accounts trusted without "
        .. "any credential. Ignoring them keeps a file in a home directory from opening the account "
        .. "to a whole network.",
      check = judged("ignorerhosts", function(v) return v == "yes", "want yes" end, "set IgnoreRhosts yes in sshd_config"),
    },
    {
      id = "ssh-hostbased-authentication",
      title = "sshd does not accept host-based authentication",
      severity = "medium",
      requires = { "sshd" },
      references = refs({ "disable_host_auth" }, "5.1.10", "Ensure sshd HostbasedAuthentication is disabled"),
      rationale = "Host-based authentication trusts the client host's word about which user is "
        .. "connecting: whoever is root on any trusted host can log in as anyone here.",
      check = judged("hostbasedauthentication", function(v) return v == "no", "want no" end,
        "set HostbasedAuthentication no in sshd_config"),
    },
    {
      id = "ssh-permit-user-environment",
      title = "sshd does not let users set the environment of their sessions",
      severity = "medium",
      requires = { "sshd" },
      references = refs({ "sshd_do_not_permit_user_env" }, "5.1.21", "Ensure sshd PermitUserEnvironment is disabled"),
      rationale = "With PermitUserEnvironment a user's ~/.ssh/environment can set LD_PRELOAD and similar "
        .. "variables before the session's programs start, which escapes forced commands and other "
        .. "restrictions put on the key.",
      check = judged("permituserenvironment", function(v) return v == "no", "want no" end,
        "set PermitUserEnvironment no in sshd_config"),
    },
    {
      id = "ssh-client-alive",
      title = "sshd drops unresponsive sessions",
      severity = "low",
      requires = { "sshd" },
      references = refs({ "sshd_set_idle_timeout", "sshd_set_keepalive" }, "5.1.7",
        "Ensure sshd ClientAliveInterval and ClientAliveCountMax are configured"),
      rationale = "Sessions whose client has gone away (a closed laptop, a dropped network) stay open "
        .. "and logged in until something notices. A positive ClientAliveInterval with a positive "
        .. "ClientAliveCountMax makes sshd check and close them.",
      check = function(posture)
        local attrs = posture.sshd.attributes
        if is_empty(attrs) then return "notapplicable", "sshd is not installed" end
        local interval = math.tointeger(tonumber(value_of(attrs, "clientaliveinterval") or "")) or 0
        local count = math.tointeger(tonumber(value_of(attrs, "clientalivecountmax") or "")) or 0
        local text = ("ClientAliveInterval %d, ClientAliveCountMax %d%s"):format(interval, count, source(attrs))
        if interval > 0 and count > 0 then return "pass", text end
        return "fail", { text .. "; want both above 0", "set ClientAliveInterval 15 and ClientAliveCountMax 3 in sshd_config" }
      end,
    },
    {
      id = "ssh-login-grace-time",
      title = "sshd gives a login at most 60 seconds",
      severity = "low",
      requires = { "sshd" },
      references = refs({ "sshd_set_login_grace_time" }, "5.1.13", "Ensure sshd LoginGraceTime is configured"),
      rationale = "Unauthenticated connections hold a slot of MaxStartups until LoginGraceTime ends. A "
        .. "short grace time keeps a flood of idle connections from locking real users out.",
      check = judged("logingracetime", int_between(1, 60), "set LoginGraceTime 60 in sshd_config"),
    },
    {
      id = "ssh-banner",
      title = "sshd shows a warning banner",
      severity = "low",
      requires = { "sshd" },
      references = refs({ "sshd_enable_warning_banner_net" }, "5.1.5", "Ensure sshd Banner is configured"),
      rationale = "A banner saying that access is restricted and monitored is what many jurisdictions "
        .. "expect before unauthorised use can be prosecuted, and it tells honest users where they are.",
      check = judged("banner", function(v)
        if v ~= nil and v ~= "none" and v ~= "" then return true end
        return false, "want a banner file"
      end, "set Banner /etc/issue.net in sshd_config"),
    },
    {
      id = "ssh-max-startups",
      title = "sshd limits concurrent unauthenticated connections (10:30:60 or stricter)",
      severity = "low",
      requires = { "sshd" },
      references = refs({ "sshd_set_maxstartups" }, "5.1.18", "Ensure sshd MaxStartups is configured"),
      rationale = "MaxStartups start:rate:full makes sshd refuse new unauthenticated connections, "
        .. "randomly from start and all of them at full. Lower limits keep connection floods from "
        .. "exhausting the daemon while leaving room for real users.",
      check = judged("maxstartups", function(v)
        local a, b, c = tostring(v):match("^(%d+):(%d+):(%d+)$")
        if not a then
          local n = math.tointeger(tonumber(v or ""))
          if n and n <= 10 then return true end
          return false, "want 10:30:60 or stricter"
        end
        if tonumber(a) <= 10 and tonumber(b) <= 30 and tonumber(c) <= 60 then return true end
        return false, "want 10:30:60 or stricter"
      end, "set MaxStartups 10:30:60 in sshd_config"),
    },
    {
      id = "ssh-max-sessions",
      title = "sshd allows at most 10 sessions per connection",
      severity = "low",
      requires = { "sshd" },
      references = refs({ "sshd_set_max_sessions" }, "5.1.17", "Ensure sshd MaxSessions is configured"),
      rationale = "Each connection can multiplex sessions up to MaxSessions. A bound keeps one "
        .. "authenticated connection from consuming the daemon's resources.",
      check = judged("maxsessions", int_between(1, 10), "set MaxSessions 10 in sshd_config"),
    },
    {
      id = "ssh-use-pam",
      title = "sshd uses PAM",
      severity = "medium",
      requires = { "sshd" },
      references = refs({ "sshd_enable_pam" }, "5.1.22", "Ensure sshd UsePAM is enabled"),
      rationale = "Account expiry, lockout after failures (pam_faillock), limits and session logging "
        .. "are PAM's. Without UsePAM, SSH logins skip all of them.",
      check = judged("usepam", function(v) return v == "yes", "want yes" end, "set UsePAM yes in sshd_config"),
    },
    {
      id = "ssh-disable-forwarding",
      title = "sshd forwards nothing (DisableForwarding)",
      severity = "low",
      requires = { "sshd" },
      references = refs({ "sshd_disable_forwarding" }, "5.1.8", "Ensure sshd DisableForwarding is enabled"),
      rationale = "Port, agent, X11 and socket forwarding turn an SSH login into a tunnel through the "
        .. "firewall, in either direction. DisableForwarding switches all of them off at once; servers "
        .. "that need tunnels should allow them per user with Match.",
      check = judged("disableforwarding", function(v) return v == "yes", "want yes" end,
        "set DisableForwarding yes in sshd_config"),
    },
    {
      id = "ssh-gssapi-authentication",
      title = "sshd does not accept GSSAPI authentication",
      severity = "low",
      requires = { "sshd" },
      references = refs({ "sshd_disable_gssapi_auth" }, "5.1.9", "Ensure sshd GSSAPIAuthentication is disabled"),
      rationale = "GSSAPI (Kerberos) authentication adds a large, rarely exercised code path to the "
        .. "daemon that only hosts in a Kerberos realm use; elsewhere it is attack surface for nothing.",
      check = judged("gssapiauthentication", function(v) return v == "no", "want no" end,
        "set GSSAPIAuthentication no in sshd_config"),
    },
    {
      id = "ssh-access-limited",
      title = "sshd limits which users or groups may log in",
      severity = "low",
      requires = { "sshd" },
      references = refs({ "sshd_limit_user_access" }, "5.1.4", "Ensure sshd access is configured"),
      rationale = "AllowUsers, AllowGroups, DenyUsers or DenyGroups name who may use SSH at all, so a "
        .. "service account or a forgotten user with a weak password is not a way in from the network.",
      check = function(posture)
        local attrs = posture.sshd.attributes
        if is_empty(attrs) then return "notapplicable", "sshd is not installed" end
        local set = {}
        for _, key in ipairs({ "allowusers", "allowgroups", "denyusers", "denygroups" }) do
          if attrs[key] ~= nil and tostring(attrs[key]) ~= "" then set[#set + 1] = ("%s %s"):format(key, tostring(attrs[key])) end
        end
        if #set > 0 then return "pass", set end
        return "fail", { "none of AllowUsers, AllowGroups, DenyUsers, DenyGroups is set" .. source(attrs),
          "set AllowGroups to the group of SSH users in sshd_config" }
      end,
    },
    {
      id = "ssh-ciphers",
      title = "sshd offers no weak ciphers",
      severity = "medium",
      requires = { "sshd" },
      references = refs({ "sshd_use_strong_ciphers" }, "5.1.6", "Ensure sshd Ciphers are configured"),
      rationale = "CBC-mode ciphers, 3DES, RC4 (arcfour), Blowfish and CAST are open to known attacks "
        .. "on SSH (plaintext recovery, small blocks). A client that supports them can be made to use "
        .. "them; the server must not offer them.",
      check = no_weak("ciphers", set_of({ "3des-cbc", "aes128-cbc", "aes192-cbc", "aes256-cbc",
        "rijndael-cbc@lysator.liu.se", "blowfish-cbc", "cast128-cbc", "arcfour", "arcfour128", "arcfour256" })),
    },
    {
      id = "ssh-kex",
      title = "sshd offers no weak key exchange algorithms",
      severity = "medium",
      requires = { "sshd" },
      references = refs({ "sshd_use_strong_kex" }, "5.1.12", "Ensure sshd KexAlgorithms is configured"),
      rationale = "The SHA-1 Diffie-Hellman key exchanges (group1, group14-sha1, group-exchange-sha1) "
        .. "rest on a broken hash and, for group1, a 1024-bit group within reach of state attackers.",
      check = no_weak("kexalgorithms", set_of({ "diffie-hellman-group1-sha1", "diffie-hellman-group14-sha1",
        "diffie-hellman-group-exchange-sha1" })),
    },
    {
      id = "ssh-macs",
      title = "sshd offers no weak MACs",
      severity = "medium",
      requires = { "sshd" },
      references = refs({ "sshd_use_strong_macs" }, "5.1.15", "Ensure sshd MACs are configured"),
      rationale = "MD5, RIPEMD-160, truncated SHA-1 and 64-bit UMAC tags are too weak or too short to "
        .. "keep an attacker from forging packets; SSH has strong MACs for every client in use.",
      check = no_weak("macs", set_of({ "hmac-md5", "hmac-md5-96", "hmac-ripemd160", "hmac-sha1-96",
        "umac-64@openssh.com", "hmac-md5-etm@openssh.com", "hmac-md5-96-etm@openssh.com",
        "hmac-ripemd160-etm@openssh.com", "hmac-sha1-96-etm@openssh.com", "umac-64-etm@openssh.com" })),
    },
  },
}
