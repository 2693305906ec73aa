-- Installed software (posture kind "packages": items {name, version, arch, status, manager}).

-- Server packages of protocols that send passwords in clear text or trust the client's word
-- about who the user is, by their Debian and RPM names.
local LEGACY_SERVERS = {}
for _, name in ipairs({
  "telnetd", "telnetd-ssl", "inetutils-telnetd", "telnet-server",        -- telnet
  "rsh-server", "rsh-redone-server", "rsh-reload-server",                -- rsh, rlogin, rexec
  "ypserv",                                                              -- NIS server
  "tftpd", "tftpd-hpa", "atftpd", "tftp-server",                         -- tftp
}) do LEGACY_SERVERS[name] = true end

-- dpkg says "install ok installed" and keeps "deinstall ok config-files" for removed packages
-- whose configuration is left; rpm lists installed packages only.
local function installed(item)
  local status = item.status
  if status == nil then return true end
  status = tostring(status)
  return not status:find("not-installed", 1, true) and not status:find("config-files", 1, true)
end

return {
  id = "legacy-services",
  title = "No clear-text legacy network servers",
  description = "Server packages of telnet, the r-commands, NIS and TFTP must not be installed.",
  rules = {
    {
      id = "packages-legacy-servers",
      title = "No telnet, rsh/rlogin, NIS or TFTP server is installed",
      severity = "high",
      requires = { "packages" },
      references = {
        { system = "ssg", id = "xccdf_org.ssgproject.content_rule_package_telnetd_removed" },
        { system = "ssg", id = "xccdf_org.ssgproject.content_rule_package_rsh-server_removed" },
        { system = "ssg", id = "xccdf_org.ssgproject.content_rule_package_ypserv_removed" },
        { system = "ssg", id = "xccdf_org.ssgproject.content_rule_package_tftp-server_removed" },
        { system = "cis-debian12", id = "2.1.10", title = "Ensure nis server services are not in use" },
        { system = "cis-debian12", id = "2.1.16", title = "Ensure tftp server services are not in use" },
      },
      rationale = "telnet and the r-commands send passwords and sessions in clear text, and rsh "
        .. "and rlogin can trust a client's claim about the user's name (.rhosts). NIS hands out "
        .. "password hashes to anyone who asks for the domain, and TFTP serves files without "
        .. "any authentication. SSH replaces all of them; an installed server package is one "
        .. "misstep away from a listening one, so the package itself fails the rule.",
      check = function(posture)
        local found = {}
        for _, item in ipairs(posture.packages.items) do
          if LEGACY_SERVERS[item.name] and installed(item) then
            found[#found + 1] = ("%s %s is installed (%s)"):format(item.name, tostring(item.version or "?"),
              tostring(item.manager or posture.packages.attributes.manager or "package manager"))
          end
        end
        if #found > 0 then return "fail", found end
        local count = posture.packages.attributes.count or #posture.packages.items
        return "pass", ("none of %d installed packages is a legacy clear-text server"):format(count)
      end,
    },
  },
}
