-- Files and directories the collector was told to look at (posture kind "files": items {path,
-- exists, type, mode ("0644"), uid, gid, owner, group, world_writable, setuid, setgid, ...}).

-- The sticky bit (01000): in a world-writable directory such as /tmp it keeps users from
-- removing or renaming each other's files, which makes the directory safe to share.
local function sticky(mode)
  local special = tonumber(tostring(mode or "0"):sub(-4, -4), 8)
  return special ~= nil and special & 1 == 1
end

return {
  id = "file-permissions",
  title = "File permissions in monitored paths",
  description = "Files others can change are files an attacker can change.",
  rules = {
    {
      id = "files-no-world-writable",
      title = "No world-writable files in monitored paths",
      severity = "medium",
      requires = { "files" },
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
