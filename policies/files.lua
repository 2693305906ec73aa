-- Files and directories the collector was told to look at (posture kind "files": items {path,
-- exists, type, mode ("0644"), uid, gid, owner, group, world_writable, setuid, setgid, ...}), and
-- the owners and modes of the system files benchmarks fix (kind "file_permissions": the same
-- items for a fixed list of paths, whatever the site's "files" paths are).

local SSG = "xccdf_org.ssgproject.content_rule_"

-- A mode string ("0640") as a number, or nil.
local function mode_of(item) return tonumber(tostring(item.mode or ""), 8) end

-- The check of one system file: type, owner, one of the groups, and no permission bit beyond
-- max_mode (so 0600 passes where 0640 is the most allowed). absent: the result when the file
-- does not exist ("pass" for backups and optional files, "fail" for the account databases,
-- "notapplicable" for files of software that may not be installed).
local function expect_file(path, spec)
  return function(posture)
    local f = find_item(posture.file_permissions.items, "path", path)
    if f == nil then return "notchecked", path .. " was not among the paths collected" end
    if f.error then return "error", ("%s could not be examined: %s"):format(path, tostring(f.error)) end
    if f.exists == false then
      return spec.absent, ("%s does not exist%s"):format(path, spec.absent_why or "")
    end
    local bad = {}
    if f.type ~= spec.type then
      bad[#bad + 1] = ("%s is a %s, not a %s%s"):format(path, tostring(f.type), spec.type,
        f.target and (" (-> " .. tostring(f.target) .. ")") or "")
    end
    local owner = f.owner or ("uid " .. tostring(f.uid))
    if f.owner ~= "root" then bad[#bad + 1] = ("%s is owned by %s, not root: chown root %s"):format(path, owner, path) end
    local group = f.group or ("gid " .. tostring(f.gid))
    if not contains(spec.groups, f.group) then
      bad[#bad + 1] = ("%s has group %s, not %s: chgrp %s %s"):format(path, group, table.concat(spec.groups, " or "),
        spec.groups[1], path)
    end
    local mode = mode_of(f)
    if mode == nil or mode & ~spec.max_mode ~= 0 then
      bad[#bad + 1] = ("%s has mode %s, more than %04o allows: chmod %04o %s"):format(path, tostring(f.mode),
        spec.max_mode, mode and (mode & spec.max_mode) or spec.max_mode, path)
    end
    if #bad > 0 then return "fail", bad end
    return "pass", ("%s: %s, owner %s, group %s, mode %s"):format(path, tostring(f.type), owner, group, tostring(f.mode))
  end
end

local function ssg_triple(name)
  return {
    { system = "ssg", id = SSG .. "file_permissions_" .. name },
    { system = "ssg", id = SSG .. "file_owner_" .. name },
    { system = "ssg", id = SSG .. "file_groupowner_" .. name },
  }
end

local ROOT, SHADOW = { "root" }, { "root", "shadow" }

-- { rule id part, path, type, max mode, groups, absent result, SSG name, CIS number, CIS title, why }
local SYSTEM_FILES = {
  { "etc-passwd", "/etc/passwd", "file", 6 * 64 + 4 * 8 + 4, ROOT, "fail", "etc_passwd", "7.1.1",
    "Ensure permissions on /etc/passwd are configured",
    "/etc/passwd maps names to user ids for every program on the host. Whoever can write it can give any account UID 0 or change root's shell; it must be root's to change and readable by all." },
  { "etc-passwd-backup", "/etc/passwd-", "file", 6 * 64 + 4 * 8 + 4, ROOT, "pass", "backup_etc_passwd", "7.1.2",
    "Ensure permissions on /etc/passwd- are configured",
    "/etc/passwd- is the previous copy of /etc/passwd that the shadow tools keep. It holds the same information and needs the same protection, or it becomes the way to read or restore an old account list." },
  { "etc-group", "/etc/group", "file", 6 * 64 + 4 * 8 + 4, ROOT, "fail", "etc_group", "7.1.3",
    "Ensure permissions on /etc/group are configured",
    "/etc/group decides group membership, and with it access to sudo, disks, logs and the shadow file. Whoever can write it can join any group." },
  { "etc-group-backup", "/etc/group-", "file", 6 * 64 + 4 * 8 + 4, ROOT, "pass", "backup_etc_group", "7.1.4",
    "Ensure permissions on /etc/group- are configured",
    "/etc/group- is the previous copy of /etc/group and needs the same protection as the file itself." },
  { "etc-shadow", "/etc/shadow", "file", 6 * 64 + 4 * 8, SHADOW, "fail", "etc_shadow", "7.1.5",
    "Ensure permissions on /etc/shadow are configured",
    "/etc/shadow holds the password hashes. Anyone who can read it can crack them offline at leisure; anyone who can write it can set any account's password. Only root and the shadow group may read it." },
  { "etc-shadow-backup", "/etc/shadow-", "file", 6 * 64 + 4 * 8, SHADOW, "pass", "backup_etc_shadow", "7.1.6",
    "Ensure permissions on /etc/shadow- are configured",
    "/etc/shadow- is the previous copy of /etc/shadow, with the same password hashes (often including passwords changed since), and needs the same protection." },
  { "etc-gshadow", "/etc/gshadow", "file", 6 * 64 + 4 * 8, SHADOW, "fail", "etc_gshadow", "7.1.7",
    "Ensure permissions on /etc/gshadow are configured",
    "/etc/gshadow holds group passwords and group administrators. Reading it exposes hashes to cracking; writing it gives a way into any group." },
  { "etc-gshadow-backup", "/etc/gshadow-", "file", 6 * 64 + 4 * 8, SHADOW, "pass", "backup_etc_gshadow", "7.1.8",
    "Ensure permissions on /etc/gshadow- are configured",
    "/etc/gshadow- is the previous copy of /etc/gshadow and needs the same protection as the file itself." },
  { "etc-shells", "/etc/shells", "file", 6 * 64 + 4 * 8 + 4, ROOT, "pass", "etc_shells", "7.1.9",
    "Ensure permissions on /etc/shells are configured",
    "/etc/shells lists the shells chsh lets users choose and some daemons (ftp servers) accept for logins. Whoever can write it can make any program an accepted login shell." },
  { "etc-security-opasswd", "/etc/security/opasswd", "file", 6 * 64, ROOT, "pass", "etc_security_opasswd", "7.1.10",
    "Ensure permissions on /etc/security/opasswd are configured",
    "/etc/security/opasswd keeps the hashes of users' previous passwords for pam_pwhistory. They are as crackable as current ones, and old passwords are often reused elsewhere or varied slightly." },
  { "etc-ssh-sshd-config", "/etc/ssh/sshd_config", "file", 6 * 64, ROOT, "notapplicable", "sshd_config", "5.1.1",
    "Ensure permissions on /etc/ssh/sshd_config are configured",
    "sshd_config decides who may log in remotely and how. Whoever can change it can let themselves in; it holds nothing other users need to read." },
  { "boot-grub-cfg", "/boot/grub/grub.cfg", "file", 6 * 64, ROOT, "notapplicable", "grub2_cfg", "1.4.2",
    "Ensure access to bootloader config is configured",
    "The boot loader's configuration holds the kernel command line (where security modules and audit are switched on) and, if set, the boot password hash. Only root should read or change it." },
  { "etc-motd", "/etc/motd", "file", 6 * 64 + 4 * 8 + 4, ROOT, "pass", "etc_motd", "1.6.4",
    "Ensure access to /etc/motd is configured",
    "The message of the day is shown to every user after login. Whoever can write it can show users forged instructions ('run this to finish the upgrade')." },
  { "etc-issue", "/etc/issue", "file", 6 * 64 + 4 * 8 + 4, ROOT, "pass", "etc_issue", "1.6.5",
    "Ensure access to /etc/issue is configured",
    "/etc/issue is shown before local logins. Whoever can write it can show forged messages to everyone who logs in at the console." },
  { "etc-issue-net", "/etc/issue.net", "file", 6 * 64 + 4 * 8 + 4, ROOT, "pass", "etc_issue_net", "1.6.6",
    "Ensure access to /etc/issue.net is configured",
    "/etc/issue.net is the banner of remote logins. Whoever can write it can show forged messages to everyone who connects." },
}

local system_rules = {}
for _, f in ipairs(SYSTEM_FILES) do
  local refs = f[7] and ssg_triple(f[7]) or {}
  -- SSG checks grub.cfg's owner and mode for CIS 1.4.2, not its group
  if f[7] == "grub2_cfg" then table.remove(refs, 3) end
  refs[#refs + 1] = { system = "cis-debian12", id = f[8], title = f[9] }
  system_rules[#system_rules + 1] = {
    id = "files-" .. f[1] .. "-permissions",
    title = ("%s is root's, group %s, mode %04o or stricter"):format(f[2], table.concat(f[5], "/"), f[4]),
    severity = "medium",
    requires = { "file_permissions" },
    references = refs,
    rationale = f[10],
    check = expect_file(f[2], { type = f[3], max_mode = f[4], groups = f[5], absent = f[6] }),
  }
end

-- The sticky bit (01000): in a world-writable directory such as /tmp it keeps users from
-- removing or renaming each other's files, which makes the directory safe to share.
local function sticky(mode)
  local special = tonumber(tostring(mode or "0"):sub(-4, -4), 8)
  return special ~= nil and special & 1 == 1
end

local policy = {
  id = "file-permissions",
  title = "File permissions",
  description = "Files others can change are files an attacker can change.",
  rules = {
    {
      id = "files-no-world-writable",
      title = "No world-writable files in monitored paths",
      severity = "medium",
      requires = { "files" },
      references = {
        { system = "ssg", id = SSG .. "file_permissions_unauthorized_world_writable" },
        { system = "cis-debian12", id = "7.1.11", title = "Ensure world writable files and directories are secured" },
      },
      rationale = "A file any user may write can be changed by any compromised account or "
        .. "service: a writable script, configuration or binary is a way to run code as "
        .. "whoever uses it next, often root. Directories may be world-writable only with the "
        .. "sticky bit, which keeps users from replacing each other's files. Symbolic links are "
        .. "skipped: their own mode means nothing.",
      check = function(posture)
        local bad, checked = {}, 0
        for _, f in ipairs(posture.files.items) do
          if f.exists ~= false and f.type ~= "link" then
            checked = checked + 1
            if f.world_writable and not (f.type == "directory" and sticky(f.mode)) then
              bad[#bad + 1] = ("%s (%s, mode %s, owner %s)"):format(tostring(f.path), tostring(f.type),
                tostring(f.mode), tostring(f.owner or f.uid))
            end
          end
        end
        if checked == 0 then return "notapplicable", "no monitored path exists on this endpoint" end
        if #bad > 0 then return "fail", bad end
        return "pass", ("none of %d monitored files and directories is world-writable"):format(checked)
      end,
    },
  },
}

for _, r in ipairs(system_rules) do policy.rules[#policy.rules + 1] = r end
return policy
