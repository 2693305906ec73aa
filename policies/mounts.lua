-- Mount options of the file systems users can write to (posture kind "mounts": items {target,
-- mounted, source, fstype, options, fstab, fstab_options, boot_options, boot_from, ...}). Both
-- sides are judged: the options in force now (/proc/self/mounts) and those boot gives (/etc/fstab,
-- or an enabled systemd mount unit such as tmp.mount; the collector resolves which wins).
-- /dev/shm is special: systemd mounts it at every boot with nosuid and nodev (and without
-- noexec) when fstab does not mention it, so those are its persistent options then
-- (attributes.systemd says systemd is the init).

local SSG = "xccdf_org.ssgproject.content_rule_"
local SYSTEMD_DEV_SHM = "nosuid,nodev"

local function has(options, option)
  for o in tostring(options or ""):gmatch("[^,]+") do
    if o == option then return true end
  end
  return false
end

-- the options a target gets at boot and where they come from, or nil when nothing mounts it
local function persistent(item, attrs)
  if item.boot_options ~= nil then return item.boot_options, tostring(item.boot_from) end
  -- collectors older than boot_options report fstab only
  if item.fstab then
    return item.fstab_options, ("/etc/fstab line %s"):format(tostring(item.fstab_line))
  end
  if item.target == "/dev/shm" and attrs.systemd then return SYSTEMD_DEV_SHM, "systemd's built-in /dev/shm mount" end
  return nil
end

local function check_option(target, option)
  return function(posture)
    local item = find_item(posture.mounts.items, "target", target)
    if item == nil or (not item.mounted and not item.fstab and item.boot_options == nil) then
      return "notapplicable", ("%s is not a separate file system (neither mounted nor in /etc/fstab)"):format(target)
    end
    local bad, good = {}, {}
    if not item.mounted then
      bad[#bad + 1] = ("%s is mounted at boot but not mounted now: mount it"):format(target)
    elseif has(item.options, option) then
      good[#good + 1] = ("%s is mounted with %s (%s)"):format(target, option, tostring(item.options))
    else
      bad[#bad + 1] = ("%s is mounted without %s (%s): \"mount -o remount,%s %s\""):format(target, option,
        tostring(item.options), option, target)
    end
    local opts, from = persistent(item, posture.mounts.attributes)
    if opts == nil then
      bad[#bad + 1] = ("%s is mounted but nothing mounts it at boot (neither /etc/fstab nor an enabled "
        .. "mount unit): the next boot will not mount it with %s; add an fstab line with %s"):format(target, option, option)
    elseif has(opts, option) then
      good[#good + 1] = ("%s has %s at boot (%s: %s)"):format(target, option, from, tostring(opts))
    else
      bad[#bad + 1] = ("%s gets no %s at boot (%s: %s): add %s to its options there"):format(target,
        option, from, tostring(opts), option)
    end
    if #bad > 0 then return "fail", bad end
    return "pass", good
  end
end

local function check_separate(target)
  return function(posture)
    local item = find_item(posture.mounts.items, "target", target)
    local bad = {}
    if item == nil or not item.mounted then
      bad[#bad + 1] = ("%s is not a mounted file system of its own: it shares the file system of its parent"):format(target)
    end
    if item == nil or persistent(item, posture.mounts.attributes) == nil then
      bad[#bad + 1] = ("nothing mounts %s at boot (neither /etc/fstab nor an enabled mount unit): add it "
        .. "to /etc/fstab%s"):format(target, target == "/tmp" and " or enable systemd's tmp.mount" or "")
    end
    if #bad > 0 then return "fail", bad end
    local _, from = persistent(item, posture.mounts.attributes)
    return "pass", ("%s is a separate %s file system from %s, mounted at boot by %s"):format(target,
      tostring(item.fstype), tostring(item.source), from)
  end
end

local OPTION_WHY = {
  nodev = "Device files on %s would give whoever can create them there direct access to disks, "
    .. "memory or other hardware, bypassing the permissions of /dev. Only /dev needs device files; "
    .. "nodev makes the kernel refuse to open them anywhere else.",
  nosuid = "A set-user-ID or set-group-ID program on %s would run with its owner's rights. nosuid "
    .. "makes the kernel ignore those bits there, so a file system users can write to cannot "
    .. "become a way to root.",
  noexec = "Exploits and downloaded tools commonly land in world-writable places such as %s and run "
    .. "from there. noexec keeps the kernel from executing programs stored on it (interpreters "
    .. "can still read scripts, so it is one layer of defence, not a wall).",
}

-- { target, CIS section, options with their CIS numbers, separate-partition CIS number }
local TARGETS = {
  { "/tmp", "tmp", "1.1.2.1", { nodev = 2, nosuid = 3, noexec = 4 }, separate = 1 },
  { "/dev/shm", "dev_shm", "1.1.2.2", { nodev = 2, nosuid = 3, noexec = 4 }, separate = 1 },
  { "/home", "home", "1.1.2.3", { nodev = 2, nosuid = 3 } },
  { "/var", "var", "1.1.2.4", { nodev = 2, nosuid = 3 } },
  { "/var/tmp", "var_tmp", "1.1.2.5", { nodev = 2, nosuid = 3, noexec = 4 } },
  { "/var/log", "var_log", "1.1.2.6", { nodev = 2, nosuid = 3, noexec = 4 } },
  { "/var/log/audit", "var_log_audit", "1.1.2.7", { nodev = 2, nosuid = 3, noexec = 4 } },
}

local rules = {}
for _, t in ipairs(TARGETS) do
  local target, ssg_name, cis = t[1], t[2], t[3]
  local slug = ssg_name:gsub("_", "-")
  if t.separate then
    rules[#rules + 1] = {
      id = ("mount-%s-separate"):format(slug),
      title = ("%s is a separate file system"):format(target),
      severity = "low",
      requires = { "mounts" },
      references = {
        { system = "ssg", id = SSG .. "partition_for_" .. ssg_name },
        { system = "cis-debian12", id = ("%s.%d"):format(cis, t.separate),
          title = ("Ensure %s is a separate partition"):format(target) },
      },
      rationale = ("Everyone can write to %s. On a file system of its own, filling it cannot fill "
        .. "the root file system (and stop logging or services), hard links from it cannot reach "
        .. "system files, and it can carry the nodev, nosuid and noexec options."):format(target),
      check = check_separate(target),
    }
  end
  for _, option in ipairs({ "nodev", "nosuid", "noexec" }) do
    local n = t[4][option]
    if n then
      rules[#rules + 1] = {
        id = ("mount-%s-%s"):format(slug, option),
        title = ("%s is mounted %s"):format(target, option),
        severity = "medium",
        requires = { "mounts" },
        references = {
          { system = "ssg", id = ("%smount_option_%s_%s"):format(SSG, ssg_name, option) },
          { system = "cis-debian12", id = ("%s.%d"):format(cis, n),
            title = ("Ensure %s option set on %s partition"):format(option, target) },
        },
        rationale = OPTION_WHY[option]:format(target),
        check = check_option(target, option),
      }
    end
  end
end

return {
  id = "mount-options",
  title = "File system mount options",
  description = "World-writable and user file systems are mounted nodev, nosuid and (where nothing "
    .. "needs to run from them) noexec, now and at boot.",
  rules = rules,
}
