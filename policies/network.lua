-- Listening sockets (posture kind "sockets": items {proto, family, address, port, uid, inode,
-- process, pid}) against an allow-list. Edit ALLOWED for your site: the file is reloaded when it
-- changes.

-- What may listen on addresses other hosts can reach. process is optional: when given, the
-- socket must also belong to that program (its comm, at most 15 characters).
local ALLOWED = {
  { proto = "tcp", port = 22, process = "sshd" },  -- SSH
  { proto = "udp", port = 68 },                    -- DHCP client
  { proto = "udp", port = 546 },                   -- DHCPv6 client
  { proto = "udp", port = 123, process = "chronyd" }, -- NTP
}

-- Sockets bound to loopback are reachable from this host only, so any service may use them.
local function loopback(address)
  address = tostring(address or "")
  return address:find("^127%.") ~= nil or address == "::1" or address:find("^::ffff:127%.") ~= nil
end

local function allowed(socket)
  for _, rule in ipairs(ALLOWED) do
    if rule.proto == socket.proto and rule.port == tonumber(socket.port)
        and (rule.process == nil or rule.process == socket.process) then
      return true
    end
  end
  return false
end

return {
  id = "network-exposure",
  title = "Network exposure",
  description = "Which services accept connections from other hosts.",
  rules = {
    {
      id = "network-listening-allowlist",
      title = "Only allowed services listen on the network",
      severity = "medium",
      requires = { "sockets" },
      references = {
        { system = "cis-debian12", id = "2.1.22", title = "Ensure only approved services are listening on a network interface" },
      },
      rationale = "Every listening socket is attack surface: a service nobody meant to expose "
        .. "(a debug port, a database bound to all addresses, a forgotten daemon) is often how "
        .. "an attacker gets in. Comparing what listens against a short list of what should "
        .. "makes such a service visible the first time it appears. Loopback-only sockets are "
        .. "not reachable from other hosts and are not counted.",
      check = function(posture)
        local bad, exposed = {}, 0
        for _, s in ipairs(posture.sockets.items) do
          if not loopback(s.address) then
            exposed = exposed + 1
            if not allowed(s) then
              local where = s.family == "inet6" and ("[%s]:%s") or ("%s:%s")
              bad[#bad + 1] = ("%s %s is not on the allow-list (process %s, pid %s)"):format(tostring(s.proto),
                where:format(tostring(s.address), tostring(s.port)), tostring(s.process or "unknown"),
                tostring(s.pid or "?"))
            end
          end
        end
        if #bad > 0 then return "fail", bad end
        return "pass", ("all %d sockets reachable from the network are allowed"):format(exposed)
      end,
    },
  },
}
