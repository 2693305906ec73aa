-- Local accounts (posture kind "users": items {name, uid, gid, home, shell, password, shadowed}
-- where password is "set", "empty", "locked" or "unknown" when the shadow file was not readable)
-- and groups (kind "groups": items {name, gid, members}).

local refs = references -- SSG rules and the CIS recommendation (docs/policies.md)

-- Accounts below this UID are system accounts (login.defs UID_MIN, 1000 on Debian).
local UID_MIN = 1000
-- System accounts that legitimately have a shell-like program or GID 0 on some systems.
local SHELL_EXEMPT = { root = true, sync = true, shutdown = true, halt = true }
local GID0_EXEMPT = { sync = true, shutdown = true, halt = true, operator = true }
local NO_LOGIN = { ["/usr/sbin/nologin"] = true, ["/sbin/nologin"] = true, ["/bin/false"] = true,
  ["/usr/bin/false"] = true }

-- items grouped by key: {[value] = {item, ...}} for the values held by more than one item
local function duplicates(items, key)
  local by, out = {}, {}
  for _, item in ipairs(items) do
    local v = item[key]
    by[v] = by[v] or {}
    table.insert(by[v], item)
  end
  for v, list in pairs(by) do
    if #list > 1 then out[#out + 1] = { value = v, items = list } end
  end
  table.sort(out, function(a, b) return tostring(a.value) < tostring(b.value) end)
  return out
end

local function unique(kind, key, label, other)
  return function(posture)
    local dups = duplicates(posture[kind].items, key)
    if #dups == 0 then
      return "pass", ("all %d %s have a %s of their own"):format(#posture[kind].items, kind, label)
    end
    local bad = {}
    for _, d in ipairs(dups) do
      local names = {}
      for _, item in ipairs(d.items) do names[#names + 1] = tostring(item[other]) end
      bad[#bad + 1] = ("%s %s is shared by %s"):format(label, tostring(d.value), table.concat(names, ", "))
    end
    return "fail", bad
  end
end

return {
  id = "accounts",
  title = "Local account hygiene",
  description = "Who has superuser rights and who can log in without a password.",
  rules = {
    {
      id = "accounts-single-uid0",
      title = "Only root has UID 0",
      severity = "high",
      requires = { "users" },
      references = refs({ "accounts_no_uid_except_zero" }, "5.4.2.1", "Ensure root is the only UID 0 account"),
      rationale = "The kernel grants every power to UID 0, whatever the account is called. A "
        .. "second UID 0 account is a second root that escapes reviews of who holds root, and "
        .. "is a common way to keep a back door after a break-in.",
      check = function(posture)
        local others, root_seen = {}, false
        for _, user in ipairs(posture.users.items) do
          if tonumber(user.uid) == 0 then
            if user.name == "root" then
              root_seen = true
            else
              others[#others + 1] = ("%s has UID 0"):format(tostring(user.name))
            end
          end
        end
        if #others > 0 then return "fail", others end
        if not root_seen then return "pass", "no account has UID 0" end
        return "pass", "root is the only account with UID 0"
      end,
    },
    {
      id = "accounts-no-empty-password",
      title = "No account has an empty password",
      severity = "high",
      requires = { "users" },
      references = refs({ "no_empty_passwords_etc_shadow" }, "7.2.2", "Ensure /etc/shadow password fields are not empty"),
      rationale = "An empty password lets anyone who knows the account's name log in on the "
        .. "console, through su, or through any service that accepts passwords. Accounts that "
        .. "should not log in with a password are locked instead ('!' or '*' in shadow).",
      check = function(posture)
        local empty, unknown, total = {}, 0, 0
        for _, user in ipairs(posture.users.items) do
          total = total + 1
          if user.password == "empty" then
            empty[#empty + 1] = ("%s (UID %s) has an empty password"):format(tostring(user.name), tostring(user.uid))
          elseif user.password == "unknown" or user.password == nil then
            unknown = unknown + 1
          end
        end
        if #empty > 0 then return "fail", empty end
        if total > 0 and unknown == total then
          return "notchecked", "the shadow file was not readable: no password state is known"
        end
        local note = unknown > 0 and (" (%d of unknown state)"):format(unknown) or ""
        return "pass", ("none of %d accounts has an empty password%s"):format(total, note)
      end,
    },
    {
      id = "accounts-root-access-controlled",
      title = "root has a password or is locked",
      severity = "high",
      requires = { "users" },
      references = refs({ "ensure_root_access_controlled" }, "5.4.2.4", "Ensure root account access is controlled"),
      rationale = "root must either need a password or not be able to log in with one at all (locked, "
        .. "administrators using sudo). An empty root password gives the whole machine to anyone at "
        .. "the console or with su.",
      check = function(posture)
        local root = find_item(posture.users.items, "name", "root")
        if root == nil then return "fail", "there is no root account in /etc/passwd" end
        if root.password == "set" then return "pass", "root has a password" end
        if root.password == "locked" then return "pass", "root's password is locked" end
        if root.password == "unknown" then return "notchecked", "the shadow file was not readable" end
        return "fail", ("root's password is %s: passwd root, or passwd -l root"):format(tostring(root.password))
      end,
    },
    {
      id = "accounts-root-gid0",
      title = "root's primary group is GID 0, and no other account's is",
      severity = "medium",
      requires = { "users" },
      references = refs({ "accounts_root_gid_zero" }, "5.4.2.2", "Ensure root is the only GID 0 account"),
      rationale = "Files created by an account belong to its primary group. A second account whose "
        .. "primary group is GID 0 can read and write what is group-root's, much of the system's "
        .. "configuration; root with another primary group hands its files to that group instead.",
      check = function(posture)
        local bad = {}
        local root = find_item(posture.users.items, "name", "root")
        if root and root.gid ~= 0 then bad[#bad + 1] = ("root's primary GID is %s, not 0"):format(tostring(root.gid)) end
        for _, u in ipairs(posture.users.items) do
          if u.gid == 0 and u.name ~= "root" and not GID0_EXEMPT[u.name] then
            bad[#bad + 1] = ("%s (UID %s) has primary GID 0"):format(tostring(u.name), tostring(u.uid))
          end
        end
        if #bad > 0 then return "fail", bad end
        return "pass", "root alone has primary GID 0"
      end,
    },
    {
      id = "groups-single-gid0",
      title = "Only the group root has GID 0",
      severity = "medium",
      requires = { "groups" },
      references = refs({ "groups_no_zero_gid_except_root" }, "5.4.2.3", "Ensure group root is the only GID 0 group"),
      rationale = "A second group name for GID 0 grants root group's rights under a name that reviews "
        .. "of group root's membership do not see.",
      check = function(posture)
        local bad = {}
        for _, g in ipairs(posture.groups.items) do
          if g.gid == 0 and g.name ~= "root" then bad[#bad + 1] = ("group %s has GID 0"):format(tostring(g.name)) end
        end
        if #bad > 0 then return "fail", bad end
        return "pass", "root is the only group with GID 0"
      end,
    },
    {
      id = "accounts-shadowed-passwords",
      title = "Every account keeps its password hash in /etc/shadow",
      severity = "high",
      requires = { "users" },
      references = refs({ "accounts_password_all_shadowed" }, "7.2.1", "Ensure accounts in /etc/passwd use shadowed passwords"),
      rationale = "/etc/passwd is readable by every user. A hash kept there (instead of the \"x\" that "
        .. "points to shadow) can be copied by anyone and cracked offline.",
      check = function(posture)
        local bad = {}
        for _, u in ipairs(posture.users.items) do
          if u.shadowed == false then bad[#bad + 1] = ("%s has its password field in /etc/passwd: run pwconv"):format(tostring(u.name)) end
        end
        if #bad > 0 then return "fail", bad end
        return "pass", ("all %d accounts point to /etc/shadow"):format(#posture.users.items)
      end,
    },
    {
      id = "accounts-groups-exist",
      title = "Every account's primary group exists",
      severity = "low",
      requires = { "users", "groups" },
      references = refs({ "gid_passwd_group_same" }, "7.2.3", "Ensure all groups in /etc/passwd exist in /etc/group"),
      rationale = "An account whose primary GID has no group entry creates files owned by a number "
        .. "that a group created later will inherit, with whatever access that group's members get.",
      check = function(posture)
        local gids = {}
        for _, g in ipairs(posture.groups.items) do gids[g.gid] = true end
        local bad = {}
        for _, u in ipairs(posture.users.items) do
          if not gids[u.gid] then bad[#bad + 1] = ("%s has primary GID %s, which /etc/group does not have"):format(tostring(u.name), tostring(u.gid)) end
        end
        if #bad > 0 then return "fail", bad end
        return "pass", "every primary GID is in /etc/group"
      end,
    },
    {
      id = "groups-shadow-empty",
      title = "The shadow group has no members",
      severity = "medium",
      requires = { "users", "groups" },
      references = refs({ "ensure_shadow_group_empty" }, "7.2.4", "Ensure shadow group is empty"),
      rationale = "Members of the shadow group can read /etc/shadow and crack every password hash on "
        .. "the host offline. Only programs (through set-group-ID binaries) need that access.",
      check = function(posture)
        local g = find_item(posture.groups.items, "name", "shadow")
        if g == nil then return "pass", "there is no shadow group" end
        local bad = {}
        if tostring(g.members or "") ~= "" then bad[#bad + 1] = ("group shadow lists members: %s"):format(tostring(g.members)) end
        for _, u in ipairs(posture.users.items) do
          if u.gid == g.gid then bad[#bad + 1] = ("%s has shadow as its primary group"):format(tostring(u.name)) end
        end
        if #bad > 0 then return "fail", bad end
        return "pass", "group shadow has no members"
      end,
    },
    {
      id = "accounts-unique-uid",
      title = "No two accounts share a UID",
      severity = "medium",
      requires = { "users" },
      references = refs({ "account_unique_id" }, "7.2.5", "Ensure no duplicate UIDs exist"),
      rationale = "The kernel knows users by number only: accounts sharing a UID share every file and "
        .. "process, and logs show one name for what the other did.",
      check = unique("users", "uid", "UID", "name"),
    },
    {
      id = "groups-unique-gid",
      title = "No two groups share a GID",
      severity = "low",
      requires = { "groups" },
      references = refs({ "group_unique_id" }, "7.2.6", "Ensure no duplicate GIDs exist"),
      rationale = "Groups sharing a GID are one group with two names: membership granted under one "
        .. "name gives the other's access too, which reviews by name miss.",
      check = unique("groups", "gid", "GID", "name"),
    },
    {
      id = "accounts-unique-name",
      title = "No two accounts share a name",
      severity = "medium",
      requires = { "users" },
      references = refs({ "account_unique_name" }, "7.2.7", "Ensure no duplicate user names exist"),
      rationale = "With two entries of one name, programs take the first and tools disagree about which "
        .. "UID the name stands for; the second entry can hide an extra account (or a second root).",
      check = unique("users", "name", "name", "uid"),
    },
    {
      id = "groups-unique-name",
      title = "No two groups share a name",
      severity = "low",
      requires = { "groups" },
      references = refs({ "group_unique_name" }, "7.2.8", "Ensure no duplicate group names exist"),
      rationale = "A group name given twice means two GIDs answer to it, and permissions granted to the "
        .. "name may not reach the group people think they do.",
      check = unique("groups", "name", "name", "gid"),
    },
    {
      id = "accounts-system-no-shell",
      title = "System accounts cannot log in (nologin or false as shell)",
      severity = "medium",
      requires = { "users" },
      references = refs({ "no_shelllogin_for_systemaccounts" }, "5.4.2.7", "Ensure system accounts do not have a valid login shell"),
      rationale = "Accounts of daemons (UIDs below 1000, and nobody) are not people and need no interactive login. "
        .. "With a real shell, a password or key set on one by a package or an attacker becomes a "
        .. "login that nobody watches.",
      check = function(posture)
        local bad = {}
        for _, u in ipairs(posture.users.items) do
          local uid = tonumber(u.uid)
          -- 65534 is nobody: not below UID_MIN, but no person either
          if uid and (uid < UID_MIN or uid == 65534) and not SHELL_EXEMPT[u.name] then
            if not NO_LOGIN[tostring(u.shell)] then
              bad[#bad + 1] = ("%s (UID %s) has shell %s: usermod -s /usr/sbin/nologin %s"):format(tostring(u.name),
                tostring(u.uid), tostring(u.shell), tostring(u.name))
            end
          end
        end
        if #bad > 0 then return "fail", bad end
        return "pass", "no system account has a login shell"
      end,
    },
  },
}
