-- cron and at: who may schedule jobs and who may change the system's (posture kind
-- "file_permissions": items {path, exists, type, mode, owner, group, ...}). Everything here is
-- notapplicable where /etc/crontab (cron) or /etc/at.allow and /etc/at.deny (at) are absent.

local SSG = "xccdf_org.ssgproject.content_rule_"

local function mode_of(item) return tonumber(tostring(item.mode or ""), 8) end

-- Owner root, group in groups, no mode bit beyond max_mode; nil when the item is fine, else the
-- problems.
local function problems(f, ftype, max_mode, groups)
  local bad = {}
  if f.type ~= ftype then bad[#bad + 1] = ("%s is a %s, not a %s"):format(f.path, tostring(f.type), ftype) end
  if f.owner ~= "root" then
    bad[#bad + 1] = ("%s is owned by %s, not root"):format(f.path, tostring(f.owner or ("uid " .. tostring(f.uid))))
  end
  if not contains(groups, f.group) then
    bad[#bad + 1] = ("%s has group %s, not %s"):format(f.path, tostring(f.group or ("gid " .. tostring(f.gid))),
      table.concat(groups, " or "))
  end
  local mode = mode_of(f)
  if mode == nil or mode & ~max_mode ~= 0 then
    bad[#bad + 1] = ("%s has mode %s: chmod %04o %s"):format(f.path, tostring(f.mode), mode and (mode & max_mode) or max_mode, f.path)
  end
  return #bad > 0 and bad or nil
end

local function item(posture, path) return find_item(posture.file_permissions.items, "path", path) end

local function cron_installed(posture)
  local crontab = item(posture, "/etc/crontab")
  return crontab ~= nil and crontab.exists ~= false
end

local function cron_path(path, ftype, max_mode)
  return function(posture)
    if not cron_installed(posture) then return "notapplicable", "no /etc/crontab: cron is not installed" end
    local f = item(posture, path)
    if f == nil then return "notchecked", path .. " was not among the paths collected" end
    if f.exists == false then return "pass", path .. " does not exist" end
    local bad = problems(f, ftype, max_mode, { "root" })
    if bad then return "fail", bad end
    return "pass", ("%s: owner root, group root, mode %s"):format(path, tostring(f.mode))
  end
end

-- The allow file must exist (only the users it lists may use the tool) and, like a deny file
-- left next to it, be root's and not writable by the group or readable by others.
local function allow_list(tool, allow, deny, groups, installed)
  return function(posture)
    if not installed(posture) then return "notapplicable", tool .. " is not installed" end
    local bad, good = {}, {}
    local a, d = item(posture, allow), item(posture, deny)
    if a == nil or d == nil then return "notchecked", allow .. " and " .. deny .. " were not among the paths collected" end
    if a.exists == false then
      bad[#bad + 1] = ("%s does not exist: without it every user not in %s may use %s; create it "
        .. "(root:%s, mode 0640) listing the users allowed"):format(allow, deny, tool, groups[#groups])
    else
      local p = problems(a, "file", 6 * 64 + 4 * 8, groups)
      if p then for _, x in ipairs(p) do bad[#bad + 1] = x end
      else good[#good + 1] = ("%s: owner root, group %s, mode %s"):format(allow, tostring(a.group), tostring(a.mode)) end
    end
    if d.exists ~= false then
      local p = problems(d, "file", 6 * 64 + 4 * 8, groups)
      if p then for _, x in ipairs(p) do bad[#bad + 1] = x end end
    end
    if #bad > 0 then return "fail", bad end
    return "pass", good
  end
end

local rules = {
  {
    id = "cron-allow-restricted",
    title = "Only the users listed in /etc/cron.allow may use crontab",
    severity = "low",
    requires = { "file_permissions" },
    references = {
      { system = "ssg", id = SSG .. "file_permissions_cron_allow" },
      { system = "ssg", id = SSG .. "file_owner_cron_allow" },
      { system = "ssg", id = SSG .. "file_groupowner_cron_allow" },
      { system = "cis-debian12", id = "2.4.1.8", title = "Ensure crontab is restricted to authorized users" },
    },
    rationale = "A scheduled job is a way to keep code running on the host after a break-in and to "
      .. "run it when nobody watches. With /etc/cron.allow only the users it names may have crontabs; "
      .. "a deny list instead lets every account not thought of.",
    check = allow_list("crontab", "/etc/cron.allow", "/etc/cron.deny", { "root", "crontab" }, cron_installed),
  },
  {
    id = "at-allow-restricted",
    title = "Only the users listed in /etc/at.allow may use at",
    severity = "low",
    requires = { "file_permissions" },
    references = {
      { system = "ssg", id = SSG .. "file_at_allow_exists" },
      { system = "ssg", id = SSG .. "file_permissions_at_allow" },
      { system = "ssg", id = SSG .. "file_owner_at_allow" },
      { system = "ssg", id = SSG .. "file_groupowner_at_allow" },
      { system = "cis-debian12", id = "2.4.2.1", title = "Ensure at is restricted to authorized users" },
    },
    rationale = "at runs a command once, later, with the submitter's rights: the same persistence and "
      .. "timing tool as cron. With /etc/at.allow only the users it names may use it.",
    check = allow_list("at", "/etc/at.allow", "/etc/at.deny", { "root", "daemon" }, function(posture)
      -- Debian's at package ships /etc/at.deny; either file shows it is installed
      local a, d = item(posture, "/etc/at.allow"), item(posture, "/etc/at.deny")
      return (a ~= nil and a.exists ~= false) or (d ~= nil and d.exists ~= false)
    end),
  },
}

-- { path, rule id part, type, max mode, SSG name, CIS number }
for _, c in ipairs({
  { "/etc/crontab", "crontab", "file", 6 * 64, "crontab", "2.4.1.2" },
  { "/etc/cron.hourly", "cron-hourly", "directory", 7 * 64, "cron_hourly", "2.4.1.3" },
  { "/etc/cron.daily", "cron-daily", "directory", 7 * 64, "cron_daily", "2.4.1.4" },
  { "/etc/cron.weekly", "cron-weekly", "directory", 7 * 64, "cron_weekly", "2.4.1.5" },
  { "/etc/cron.monthly", "cron-monthly", "directory", 7 * 64, "cron_monthly", "2.4.1.6" },
  { "/etc/cron.d", "cron-d", "directory", 7 * 64, "cron_d", "2.4.1.7" },
}) do
  local path = c[1]
  rules[#rules + 1] = {
    id = "cron-" .. c[2]:gsub("^cron%-", "") .. "-permissions",
    title = ("%s is root's alone (mode %04o or stricter)"):format(path, c[4]),
    severity = "medium",
    requires = { "file_permissions" },
    references = {
      { system = "ssg", id = SSG .. "file_permissions_" .. c[5] },
      { system = "ssg", id = SSG .. "file_owner_" .. c[5] },
      { system = "ssg", id = SSG .. "file_groupowner_" .. c[5] },
      { system = "cis-debian12", id = c[6], title = ("Ensure permissions on %s are configured"):format(path) },
    },
    rationale = ("cron runs what %s holds as root (or as the user each line names). Whoever can change "
      .. "it runs code as root; whoever can read it learns what runs when, and which scripts to go "
      .. "after. Only root needs either."):format(path),
    check = cron_path(path, c[3], c[4]),
  }
end

return {
  id = "cron",
  title = "Job schedulers",
  description = "cron's and at's files are root's, and only listed users may schedule jobs.",
  rules = rules,
}
