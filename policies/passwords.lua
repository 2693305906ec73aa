-- Password policy: the shadow suite's defaults (posture kind "logindefs": attributes by login.defs
-- name in lower case, "useradd.inactive", ...), what the accounts have now (kind "users":
-- password_max_days, ... from shadow), and PAM (kind "pam": items are the lines of the stacks
-- {service, type, control, module, args, line}; attributes "pwquality.minlen" = value with
-- "pwquality.minlen.from" = "file:line", likewise faillock.* and pwhistory.*).
--
-- login.defs only sets the defaults for accounts created or passwords changed from now on: the
-- ageing rules also judge the accounts that exist (their shadow entries), the way the sysctl rules
-- judge the persistent and the run-time value.

local refs = references -- SSG rules and the CIS recommendation (docs/policies.md)

local function int(v) return math.tointeger(tonumber(v)) end

---------------------------------------------------------------------------- login.defs

-- Accounts whose password ageing matters: those with a usable password.
local function with_password(users)
  return filter_items(users.items, function(u) return u.password == "set" end)
end

-- login.defs NAME must satisfy ok(n); each account with a password must satisfy ok on its shadow
-- field (nil: the field is empty, which means "no limit" and fails unless empty_ok).
local function ageing(name, field, ok, want, empty_ok)
  return function(posture)
    local bad, good = {}, {}
    local value = posture.logindefs.attributes[name]
    local n = int(value)
    local where = "/etc/login.defs"
    if value == nil then
      bad[#bad + 1] = ("%s is not set in %s (want %s)"):format(name:upper(), where, want)
    elseif n == nil or not ok(n) then
      bad[#bad + 1] = ("%s is %s in %s (want %s)"):format(name:upper(), tostring(value), where, want)
    else
      good[#good + 1] = ("%s is %d in %s"):format(name:upper(), n, where)
    end
    if not posture.users.attributes.shadow_readable then
      if #bad == 0 then
        return "notchecked", "the shadow file was not readable: existing accounts could not be checked"
      end
    else
      local accounts = with_password(posture.users)
      local offenders = {}
      for _, u in ipairs(accounts) do
        local v = u[field]
        if (v == nil and not empty_ok) or (v ~= nil and not ok(v)) then
          offenders[#offenders + 1] = ("%s (%s)"):format(tostring(u.name), v == nil and "not set" or tostring(v))
        end
      end
      if #offenders > 0 then
        bad[#bad + 1] = ("accounts whose own setting is not %s (chage -%s): %s"):format(want,
          ({ password_max_days = "M", password_min_days = "m", password_warn_days = "W",
            password_inactive = "I" })[field] or "?", table.concat(offenders, ", "))
      else
        good[#good + 1] = ("all %d accounts with a password have it"):format(#accounts)
      end
    end
    if #bad > 0 then return "fail", bad end
    return "pass", good
  end
end

---------------------------------------------------------------------------- PAM

-- The lines of a stack that call a module (of a type).
local function lines_of(pam, service, module, ptype)
  return filter_items(pam.items, function(i)
    return i.service == service and i.module == module and (ptype == nil or i.type == ptype)
  end)
end

local function at(service, line) return ("/etc/pam.d/%s:%s"):format(service, tostring(line)) end

-- A module's setting in effect: value and where it came from, else the module's default.
local function setting(pam, module, name, default)
  local v = pam.attributes[module .. "." .. name]
  if v == nil then return default, "the module's default" end
  return v, tostring(pam.attributes[module .. "." .. name .. ".from"])
end

-- A rule on one pwquality / faillock / pwhistory setting. The module must be in its stack
-- (else its settings do nothing); ok(value) judges the value in effect.
local MODULE_STACK = {
  pwquality = { "common-password", "pam_pwquality", "password" },
  faillock = { "common-auth", "pam_faillock", "auth" },
  pwhistory = { "common-password", "pam_pwhistory", "password" },
}
local function module_setting(module, name, default, ok, want)
  return function(posture)
    local pam = posture.pam
    local stack = MODULE_STACK[module]
    if #lines_of(pam, stack[1], stack[2], stack[3]) == 0 then
      return "fail", ("%s is not in /etc/pam.d/%s: its %s setting does nothing"):format(stack[2], stack[1], name)
    end
    local value, from = setting(pam, module, name, default)
    local shown = value == true and "set" or value == nil and "not set" or tostring(value)
    if ok(value) then
      return "pass", ("%s %s is %s (%s)"):format(module, name, shown, from)
    end
    return "fail", ("%s %s is %s (%s); want %s"):format(module, name, shown, from, want)
  end
end

local function module_enabled(service, module, ptypes)
  return function(posture)
    local bad, good = {}, {}
    for _, ptype in ipairs(ptypes) do
      local found = lines_of(posture.pam, service, module, ptype)
      if #found == 0 then
        bad[#bad + 1] = ("no %s line calls %s in /etc/pam.d/%s (pam-auth-update enables it)"):format(ptype, module, service)
      else
        good[#good + 1] = ("%s %s %s %s (%s)"):format(ptype, found[1].control, module, found[1].args,
          at(service, found[1].line))
      end
    end
    if not posture.pam.attributes[service .. ".read"] then
      return "fail", ("/etc/pam.d/%s could not be read"):format(service)
    end
    if #bad > 0 then return "fail", bad end
    return "pass", good
  end
end

local function number(lo, hi)
  return function(v)
    local n = int(v)
    return n ~= nil and n >= lo and (hi == nil or n <= hi)
  end
end

-- pam_unix lines of the stacks, with args as a set
local function unix_lines(pam, service, ptype)
  local out = {}
  for _, l in ipairs(lines_of(pam, service, "pam_unix", ptype)) do
    local args = {}
    for w in tostring(l.args):gmatch("%S+") do args[w:match("^([^=]+)")] = true end
    out[#out + 1] = { line = l, args = args }
  end
  return out
end

local rules = {
  {
    id = "logindefs-pass-max-days",
    title = "Passwords expire after at most 365 days",
    severity = "medium",
    requires = { "logindefs", "users" },
    references = refs({ "accounts_maximum_age_login_defs", "accounts_password_set_max_life_existing" },
      "5.4.1.1", "Ensure password expiration is configured"),
    rationale = "A password that never expires stays useful to whoever obtained it (from a breach of "
      .. "another site, a shoulder, an old backup) forever. A maximum age bounds that window. login.defs "
      .. "only sets the default for new passwords, so each account's own maximum in shadow is judged too.",
    check = ageing("pass_max_days", "password_max_days", number(1, 365), "between 1 and 365"),
  },
  {
    id = "logindefs-pass-min-days",
    title = "Passwords cannot be changed again within a day",
    severity = "low",
    requires = { "logindefs", "users" },
    references = refs({ "accounts_minimum_age_login_defs", "accounts_password_set_min_life_existing" },
      "5.4.1.2", "Ensure minimum password days is configured"),
    rationale = "Without a minimum age a user forced to change a password can change it several times "
      .. "in a row and end up with the old one again, defeating both expiry and password history.",
    check = ageing("pass_min_days", "password_min_days", number(1), "at least 1", false),
  },
  {
    id = "logindefs-pass-warn-age",
    title = "Users are warned at least 7 days before their password expires",
    severity = "low",
    requires = { "logindefs", "users" },
    references = refs({ "accounts_password_warn_age_login_defs" },
      "5.4.1.3", "Ensure password expiration warning days is configured"),
    rationale = "A warning well ahead of expiry lets users choose a good new password in their own "
      .. "time instead of an easy one under pressure, and keeps accounts from locking unexpectedly.",
    check = ageing("pass_warn_age", "password_warn_days", number(7), "at least 7"),
  },
  {
    id = "logindefs-encrypt-method",
    title = "New passwords are hashed with yescrypt or SHA-512",
    severity = "medium",
    requires = { "logindefs" },
    references = refs({ "set_password_hashing_algorithm_logindefs" },
      "5.4.1.4", "Ensure strong password hashing algorithm is configured"),
    rationale = "The hash in shadow is what an attacker who reads the file tries to crack. DES and MD5 "
      .. "crypt fall to a single graphics card in hours; yescrypt (Debian 12's default) and SHA-512 "
      .. "crypt are slow by design and salted.",
    check = function(posture)
      local v = posture.logindefs.attributes.encrypt_method
      local upper = v and tostring(v):upper()
      if upper == "YESCRYPT" or upper == "SHA512" then
        return "pass", ("ENCRYPT_METHOD is %s in /etc/login.defs"):format(tostring(v))
      end
      return "fail", ("ENCRYPT_METHOD is %s in /etc/login.defs; want YESCRYPT or SHA512"):format(v and tostring(v) or "not set")
    end,
  },
  {
    id = "logindefs-inactive",
    title = "Accounts lock 45 days or less after their password expired",
    severity = "low",
    requires = { "logindefs", "users" },
    references = refs({ "account_disable_post_pw_expiration" }, "5.4.1.5", "Ensure inactive password lock is configured"),
    rationale = "An account whose password expired and was never changed is usually abandoned; "
      .. "locking it after a grace period keeps such accounts from being taken over unnoticed. The "
      .. "default for new accounts is useradd's INACTIVE; each account's own setting is in shadow.",
    check = function(posture)
      local bad, good = {}, {}
      local v = posture.logindefs.attributes["useradd.inactive"]
      local n = int(v)
      if n == nil or n < 0 or n > 45 then
        bad[#bad + 1] = ("INACTIVE is %s in /etc/default/useradd (want 0 to 45): useradd -D -f 45"):format(
          v == nil and "not set (never lock)" or tostring(v))
      else
        good[#good + 1] = ("INACTIVE is %d in /etc/default/useradd"):format(n)
      end
      if posture.users.attributes.shadow_readable then
        local offenders = {}
        for _, u in ipairs(with_password(posture.users)) do
          local i = u.password_inactive
          if i == nil or i < 0 or i > 45 then
            offenders[#offenders + 1] = ("%s (%s)"):format(tostring(u.name), i == nil and "not set" or tostring(i))
          end
        end
        if #offenders > 0 then
          bad[#bad + 1] = "accounts that never lock after expiry (chage --inactive 45): " .. table.concat(offenders, ", ")
        end
      elseif #bad == 0 then
        return "notchecked", "the shadow file was not readable: existing accounts could not be checked"
      end
      if #bad > 0 then return "fail", bad end
      return "pass", good
    end,
  },
  {
    id = "logindefs-umask",
    title = "The default umask keeps new files from other users (027 or stricter)",
    severity = "low",
    requires = { "logindefs" },
    references = refs({ "accounts_umask_etc_login_defs" }, "5.4.3.3", "Ensure default user umask is configured"),
    rationale = "With Debian's 022, every file a user creates is readable by every other user unless "
      .. "they think of changing it. A umask of 027 keeps new files within the owner's group, so "
      .. "sharing becomes a decision instead of the default.",
    check = function(posture)
      local v = posture.logindefs.attributes.umask
      local n = v and tonumber(tostring(v), 8)
      -- 027 or stricter: group may not write (020), others may do nothing (007)
      if n and n & 0x17 == 0x17 then
        return "pass", ("UMASK is %s in /etc/login.defs"):format(tostring(v))
      end
      return "fail", ("UMASK is %s in /etc/login.defs; want 027 or stricter"):format(v and tostring(v) or "not set")
    end,
  },
  {
    id = "pam-pwquality-enabled",
    title = "Password changes go through pam_pwquality",
    severity = "medium",
    requires = { "pam" },
    references = refs({ "accounts_password_pam_pwquality_enabled" }, "5.3.2.3", "Ensure pam_pwquality module is enabled"),
    rationale = "pam_pwquality is what checks a new password's length, variety and presence in a "
      .. "dictionary. Without it in the password stack, none of its settings are applied and users "
      .. "may pick any password pam_unix accepts.",
    check = module_enabled("common-password", "pam_pwquality", { "password" }),
  },
  {
    id = "pam-pwquality-minlen",
    title = "New passwords have at least 14 characters",
    severity = "medium",
    requires = { "pam" },
    references = refs({ "accounts_password_pam_minlen" }, "5.3.3.2.2", "Ensure minimum password length is configured"),
    rationale = "Length is what makes a password expensive to guess or crack: every added character "
      .. "multiplies the work. 14 characters puts offline cracking of a good hash out of reach of "
      .. "ordinary attackers.",
    check = module_setting("pwquality", "minlen", "8", number(14), "at least 14"),
  },
  {
    id = "pam-pwquality-complexity",
    title = "New passwords mix four kinds of characters",
    severity = "low",
    requires = { "pam" },
    references = refs({ "accounts_password_pam_minclass" }, "5.3.3.2.3", "Ensure password complexity is configured"),
    rationale = "Requiring digits, upper and lower case and other characters keeps users from the "
      .. "smallest and most guessed part of the password space (lower-case words). minclass = 4 asks "
      .. "for all four; negative dcredit, ucredit, lcredit and ocredit do the same one by one.",
    check = function(posture)
      local pam = posture.pam
      if #lines_of(pam, "common-password", "pam_pwquality", "password") == 0 then
        return "fail", "pam_pwquality is not in /etc/pam.d/common-password: no complexity is required"
      end
      local minclass, from = setting(pam, "pwquality", "minclass", "0")
      if (int(minclass) or 0) >= 4 then return "pass", ("pwquality minclass is %s (%s)"):format(tostring(minclass), from) end
      local each = {}
      for _, c in ipairs({ "dcredit", "ucredit", "lcredit", "ocredit" }) do
        local v = setting(pam, "pwquality", c, "0")
        if (int(v) or 0) >= 0 then
          return "fail", ("pwquality minclass is %s (%s) and %s is %s: want minclass = 4 or all four credits "
            .. "negative"):format(tostring(minclass), from, c, tostring(v))
        end
        each[#each + 1] = c .. " " .. tostring(v)
      end
      return "pass", "pwquality requires each class: " .. table.concat(each, ", ")
    end,
  },
  {
    id = "pam-pwquality-difok",
    title = "A new password differs from the old one in at least 2 characters",
    severity = "low",
    requires = { "pam" },
    references = refs({ "accounts_password_pam_difok" }, "5.3.3.2.1", "Ensure password number of changed characters is configured"),
    rationale = "Users told to change a password tend to change its last digit. Whoever knew the old "
      .. "one then guesses the new one at the first try; difok makes the change count.",
    check = module_setting("pwquality", "difok", "1", number(2), "at least 2"),
  },
  {
    id = "pam-pwquality-maxrepeat",
    title = "New passwords repeat a character at most 3 times in a row",
    severity = "low",
    requires = { "pam" },
    references = refs({ "accounts_password_pam_maxrepeat" }, "5.3.3.2.4", "Ensure password same consecutive characters is configured"),
    rationale = "Runs of the same character (\"aaaa1111\") satisfy length rules while adding almost "
      .. "nothing to the guessing work; password crackers try them first.",
    check = module_setting("pwquality", "maxrepeat", "0", number(1, 3), "between 1 and 3"),
  },
  {
    id = "pam-pwquality-maxsequence",
    title = "New passwords contain no monotonic sequence longer than 3",
    severity = "low",
    requires = { "pam" },
    references = refs({ "accounts_password_pam_maxsequence" }, "5.3.3.2.5", "Ensure password maximum sequential characters is configured"),
    rationale = "Sequences such as \"12345\" or \"abcde\" are the first thing guessing tools try and "
      .. "make long passwords weak; maxsequence rejects them.",
    check = module_setting("pwquality", "maxsequence", "0", number(1, 3), "between 1 and 3"),
  },
  {
    id = "pam-pwquality-dictcheck",
    title = "New passwords are checked against a dictionary",
    severity = "medium",
    requires = { "pam" },
    references = refs({ "accounts_password_pam_dictcheck" }, "5.3.3.2.6", "Ensure password dictionary check is enabled"),
    rationale = "Dictionary words and their common variations are what every guessing attack starts "
      .. "with; the cracklib check refuses them however long they are.",
    check = module_setting("pwquality", "dictcheck", "1", function(v) return v == true or int(v) ~= 0 end, "not 0"),
  },
  {
    id = "pam-pwquality-enforcing",
    title = "Password quality failures are refused, not just warned about",
    severity = "medium",
    requires = { "pam" },
    references = refs({ "accounts_password_pam_enforcing" }, "5.3.3.2.7", "Ensure password quality checking is enforced"),
    rationale = "With enforcing = 0 pam_pwquality only prints a warning and accepts the weak password "
      .. "anyway, which makes every other setting advisory.",
    check = module_setting("pwquality", "enforcing", "1", function(v) return v == true or int(v) ~= 0 end, "not 0"),
  },
  {
    id = "pam-pwquality-enforce-for-root",
    title = "Password quality is enforced for root too",
    severity = "low",
    requires = { "pam" },
    references = refs({ "accounts_password_pam_enforce_root" }, "5.3.3.2.8", "Ensure password quality is enforced for the root user"),
    rationale = "By default root may set any password, and root's password is the most valuable one "
      .. "on the host. enforce_for_root applies the same checks to it.",
    check = module_setting("pwquality", "enforce_for_root", nil, function(v) return v ~= nil and v ~= false end, "set"),
  },
  {
    id = "pam-faillock-enabled",
    title = "Repeated login failures lock the account (pam_faillock)",
    severity = "medium",
    requires = { "pam" },
    references = refs({ "accounts_passwords_pam_faillock_enabled" }, "5.3.2.2", "Ensure pam_faillock module is enabled"),
    rationale = "Without a lockout an attacker can try passwords against an account as fast as the "
      .. "services answer. pam_faillock counts failures (preauth and authfail lines in the auth stack) "
      .. "and refuses logins once the limit is reached; the account stack resets the count on success.",
    check = function(posture)
      local pam = posture.pam
      local bad, good = {}, {}
      local auth = lines_of(pam, "common-auth", "pam_faillock", "auth")
      local has = { preauth = false, authfail = false }
      for _, l in ipairs(auth) do
        for w in tostring(l.args):gmatch("%S+") do
          if has[w] ~= nil then
            has[w] = true
            good[#good + 1] = ("auth %s pam_faillock %s (%s)"):format(l.control, w, at("common-auth", l.line))
          end
        end
      end
      for word, found in pairs(has) do
        if not found then bad[#bad + 1] = ("no \"auth ... pam_faillock.so %s\" line in /etc/pam.d/common-auth"):format(word) end
      end
      if #lines_of(pam, "common-account", "pam_faillock", "account") == 0 then
        bad[#bad + 1] = "no \"account required pam_faillock.so\" line in /etc/pam.d/common-account"
      end
      table.sort(bad)
      if #bad > 0 then return "fail", bad end
      return "pass", good
    end,
  },
  {
    id = "pam-faillock-deny",
    title = "Accounts lock after at most 5 failed logins",
    severity = "medium",
    requires = { "pam" },
    references = refs({ "accounts_passwords_pam_faillock_deny" }, "5.3.3.1.1", "Ensure password failed attempts lockout is configured"),
    rationale = "A low failure limit turns online password guessing from millions of tries into a "
      .. "handful per unlock period, which no realistic password list survives.",
    check = module_setting("faillock", "deny", "3", number(1, 5), "between 1 and 5"),
  },
  {
    id = "pam-faillock-unlock-time",
    title = "Locked accounts stay locked for at least 15 minutes",
    severity = "low",
    requires = { "pam" },
    references = refs({ "accounts_passwords_pam_faillock_unlock_time" }, "5.3.3.1.2", "Ensure password unlock time is configured"),
    rationale = "The unlock time is what makes the failure limit slow an attacker down: with faillock's "
      .. "default of 10 minutes a patient script still gets its tries; 0 means an administrator must "
      .. "unlock the account.",
    check = module_setting("faillock", "unlock_time", "600", function(v)
      local n = int(v)
      return n ~= nil and (n == 0 or n >= 900)
    end, "0 (never) or at least 900"),
  },
  {
    id = "pam-faillock-root",
    title = "Failed logins lock root as well",
    severity = "low",
    requires = { "pam" },
    references = refs({ "accounts_passwords_pam_faillock_root_unlock_time" }, "5.3.3.1.3", "Ensure password failed attempts lockout includes root account"),
    rationale = "pam_faillock leaves root out unless told otherwise, which leaves the most valuable "
      .. "account open to unlimited guessing. even_deny_root (or a root_unlock_time of at least 60 "
      .. "seconds) includes it.",
    check = function(posture)
      local pam = posture.pam
      if #lines_of(pam, "common-auth", "pam_faillock", "auth") == 0 then
        return "fail", "pam_faillock is not in /etc/pam.d/common-auth: nothing locks any account"
      end
      local even, from = setting(pam, "faillock", "even_deny_root", nil)
      if even ~= nil and even ~= false then return "pass", ("faillock even_deny_root is set (%s)"):format(from) end
      local rut, rfrom = setting(pam, "faillock", "root_unlock_time", nil)
      if (int(rut) or 0) >= 60 then return "pass", ("faillock root_unlock_time is %s (%s)"):format(tostring(rut), rfrom) end
      return "fail", "neither even_deny_root nor a root_unlock_time of 60 or more is set for pam_faillock"
    end,
  },
  {
    id = "pam-pwhistory-remember",
    title = "The last 24 passwords cannot be reused",
    severity = "low",
    requires = { "pam" },
    references = refs({ "accounts_password_pam_pwhistory_remember" }, "5.3.3.3.1", "Ensure password history remember is configured"),
    rationale = "Expiry is worth little if users may go back to the password they just retired. "
      .. "pam_pwhistory keeps old hashes (in /etc/security/opasswd) and refuses their reuse.",
    check = module_setting("pwhistory", "remember", "10", number(24), "at least 24"),
  },
  {
    id = "pam-unix-no-nullok",
    title = "pam_unix does not accept empty passwords",
    severity = "high",
    requires = { "pam" },
    references = refs({ "no_empty_passwords_unix" }, "5.3.3.4.1", "Ensure pam_unix does not include nullok"),
    rationale = "With nullok, pam_unix lets an account whose password field is empty log in without "
      .. "any password. Debian's default stacks carry it; removing it means such an account cannot "
      .. "log in at all until it is given a password.",
    check = function(posture)
      local found, checked = {}, 0
      for _, service in ipairs({ "common-auth", "common-account", "common-password", "common-session" }) do
        for _, u in ipairs(unix_lines(posture.pam, service)) do
          checked = checked + 1
          if u.args.nullok then
            found[#found + 1] = ("%s %s pam_unix %s (%s)"):format(u.line.type, u.line.control, u.line.args, at(service, u.line.line))
          end
        end
      end
      if #found > 0 then
        found[#found + 1] = "remove nullok from these lines (pam-auth-update would put it back: edit the profile in /usr/share/pam-configs)"
        return "fail", found
      end
      if checked == 0 then return "fail", "pam_unix is in none of the common-* stacks" end
      return "pass", ("none of %d pam_unix lines has nullok"):format(checked)
    end,
  },
  {
    id = "pam-unix-strong-hash",
    title = "pam_unix hashes new passwords with yescrypt or SHA-512",
    severity = "medium",
    requires = { "pam" },
    references = refs({ "set_password_hashing_algorithm_systemauth" }, "5.3.3.4.3", "Ensure pam_unix includes a strong password hashing algorithm"),
    rationale = "pam_unix, not login.defs, decides how a password changed with passwd is hashed. "
      .. "Its password line must name yescrypt or sha512; without either it falls back to the "
      .. "crypt default, and md5 or bigcrypt are crackable.",
    check = function(posture)
      local lines = unix_lines(posture.pam, "common-password", "password")
      if #lines == 0 then return "fail", "no password line calls pam_unix in /etc/pam.d/common-password" end
      for _, u in ipairs(lines) do
        if not (u.args.yescrypt or u.args.sha512) then
          return "fail", ("password %s pam_unix %s (%s) names neither yescrypt nor sha512"):format(u.line.control,
            u.line.args, at("common-password", u.line.line))
        end
      end
      return "pass", ("pam_unix: %s (%s)"):format(lines[1].line.args, at("common-password", lines[1].line.line))
    end,
  },
  {
    id = "pam-unix-enabled",
    title = "pam_unix is in every common stack",
    severity = "medium",
    requires = { "pam" },
    references = refs({ "accounts_password_pam_unix_enabled" }, "5.3.2.1", "Ensure pam_unix module is enabled"),
    rationale = "pam_unix checks and changes the passwords in /etc/shadow and applies account expiry. "
      .. "A stack without it either lets everyone in or no one, depending on what else it holds.",
    check = function(posture)
      local bad, good = {}, {}
      for _, st in ipairs({ { "common-auth", "auth" }, { "common-account", "account" }, { "common-password", "password" },
        { "common-session", "session" } }) do
        local l = lines_of(posture.pam, st[1], "pam_unix", st[2])
        if #l == 0 then bad[#bad + 1] = ("no %s line calls pam_unix in /etc/pam.d/%s"):format(st[2], st[1])
        else good[#good + 1] = ("%s pam_unix (%s)"):format(st[2], at(st[1], l[1].line)) end
      end
      if #bad > 0 then return "fail", bad end
      return "pass", good
    end,
  },
  {
    id = "pam-pwhistory-enabled",
    title = "Password changes go through pam_pwhistory",
    severity = "low",
    requires = { "pam" },
    references = refs({ "accounts_password_pam_pwhistory_enabled" }, "5.3.2.4", "Ensure pam_pwhistory module is enabled"),
    rationale = "pam_pwhistory is what remembers earlier passwords and refuses them; without it in the "
      .. "password stack, expiry can be answered by setting the same password again.",
    check = module_enabled("common-password", "pam_pwhistory", { "password" }),
  },
  {
    id = "pam-pwhistory-enforce-for-root",
    title = "Password history applies to root too",
    severity = "low",
    requires = { "pam" },
    references = refs({ "accounts_password_pam_pwhistory_enforce_root" }, "5.3.3.3.2", "Ensure password history is enforced for the root user"),
    rationale = "pam_pwhistory lets root reuse old passwords unless enforce_for_root is given, and "
      .. "root's is the password whose reuse matters most.",
    check = module_setting("pwhistory", "enforce_for_root", nil, function(v) return v ~= nil and v ~= false end, "set"),
  },
  {
    id = "pam-pwhistory-use-authtok",
    title = "pam_pwhistory checks the password the stack already asked for",
    severity = "low",
    requires = { "pam" },
    references = refs({ "accounts_password_pam_pwhistory_use_authtok" }, "5.3.3.3.3", "Ensure pam_pwhistory includes use_authtok"),
    rationale = "With use_authtok pam_pwhistory judges the new password pam_pwquality accepted instead "
      .. "of prompting again, so the password checked for reuse is the one that is set.",
    check = module_setting("pwhistory", "use_authtok", nil, function(v) return v ~= nil and v ~= false end, "set"),
  },
  {
    id = "pam-unix-no-remember",
    title = "pam_unix keeps no password history of its own",
    severity = "low",
    requires = { "pam" },
    references = refs({ "accounts_password_pam_unix_no_remember" }, "5.3.3.4.2", "Ensure pam_unix does not include remember"),
    rationale = "pam_unix's remember option stores old hashes in /etc/security/opasswd with the hash "
      .. "method of its own day and duplicates what pam_pwhistory does; one place for the history is "
      .. "easier to protect and reason about.",
    check = function(posture)
      for _, service in ipairs({ "common-auth", "common-account", "common-password", "common-session" }) do
        for _, u in ipairs(unix_lines(posture.pam, service)) do
          if u.args.remember then
            return "fail", ("pam_unix %s (%s) has remember: use pam_pwhistory instead"):format(u.line.args, at(service, u.line.line))
          end
        end
      end
      return "pass", "no pam_unix line has remember"
    end,
  },
  {
    id = "pam-unix-use-authtok",
    title = "pam_unix sets the password the stack already checked",
    severity = "low",
    requires = { "pam" },
    references = refs({ "accounts_password_pam_unix_authtok" }, "5.3.3.4.4", "Ensure pam_unix includes use_authtok"),
    rationale = "Without use_authtok pam_unix may prompt for the new password itself, and then sets a "
      .. "password pam_pwquality and pam_pwhistory never saw.",
    check = function(posture)
      local lines = unix_lines(posture.pam, "common-password", "password")
      if #lines == 0 then return "fail", "no password line calls pam_unix in /etc/pam.d/common-password" end
      for _, u in ipairs(lines) do
        if not u.args.use_authtok then
          return "fail", ("password pam_unix %s (%s) lacks use_authtok"):format(u.line.args, at("common-password", u.line.line))
        end
      end
      return "pass", ("password pam_unix %s (%s)"):format(lines[1].line.args, at("common-password", lines[1].line.line))
    end,
  },
  {
    id = "pam-su-restricted",
    title = "su is restricted to the members of an empty group",
    severity = "medium",
    requires = { "pam", "groups" },
    references = refs({ "use_pam_wheel_group_for_su", "ensure_pam_wheel_group_empty" }, "5.2.7", "Ensure access to the su command is restricted"),
    rationale = "Anyone who learns root's password can become root with su from any account. With "
      .. "pam_wheel and an empty group nobody can: administrators use sudo, which names the person "
      .. "and logs the command.",
    check = function(posture)
      local wheel = lines_of(posture.pam, "su", "pam_wheel", "auth")
      if #wheel == 0 then
        return "fail", "no \"auth required pam_wheel.so use_uid group=...\" line in /etc/pam.d/su"
      end
      local l = wheel[1]
      local args = tostring(l.args)
      local group = args:match("group=(%S+)") or "root"
      if not args:find("use_uid", 1, true) then
        return "fail", ("pam_wheel in /etc/pam.d/su:%s lacks use_uid (it would check the login name, not the caller)"):format(tostring(l.line))
      end
      local g = find_item(posture.groups.items, "name", group)
      if g == nil then return "fail", ("group %s named by pam_wheel does not exist"):format(group) end
      if tostring(g.members or "") ~= "" then
        return "fail", ("group %s of pam_wheel (/etc/pam.d/su:%s) has members: %s"):format(group, tostring(l.line), tostring(g.members))
      end
      return "pass", ("su requires membership of %s, which is empty (/etc/pam.d/su:%s)"):format(group, tostring(l.line))
    end,
  },
}

return {
  id = "password-policy",
  title = "Password policy",
  description = "Password ageing and hashing (login.defs, shadow), strength, lockout and reuse (PAM).",
  rules = rules,
}
