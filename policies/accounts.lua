-- Local accounts (posture kind "users": items {name, uid, gid, home, shell, password} where
-- password is "set", "empty", "locked" or "unknown" when the shadow file was not readable).

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
  },
}
