--- spec/support/grid.lua: the options of grid roles on a private test server (Prosody or
-- ejabberd from support.prosody / support.ejabberd), for specs that run roles in their own
-- process, and a synthetic dpkg status file for posture of a given size.
--
--   local grid = require "support.grid"
--   local g = grid.new(server, dir)                -- certificates for the repository's HTTPS
--   local repo = assert(repository.start(g:options("repository", { database = dir .. "/grid.db" })))
--   local coll = assert(collector.start(g:options("collector", { kinds = { "os" } })))
--   g:config()                                     -- the same as a grid config table (docs/guide.md)
local fs = require "sacm.fs"
local certs = require "support.certs"

local M = {}

local Grid = {}
Grid.__index = Grid

--- grid.new(server, dir [, opts]) -> grid. opts.password: every account's (default "pw").
function M.new(server, dir, opts)
  opts = opts or {}
  local self = setmetatable({ server = server, dir = dir, password = opts.password or "pw", running = {} }, Grid)
  -- the repository's HTTPS certificate comes from the test CA that also signed the XMPP server's,
  -- as a deployment's grid CA signs both
  self.https = certs.server(server._ca, dir .. "/repository-https", { cn = "localhost", dns = { "localhost" },
    ips = { "127.0.0.1" } })
  return self
end

--- g:options(role, [extra]) -> the options of <role>.start. role may be "collector2" etc.: the
-- account is the role name as given.
function Grid:options(role, extra)
  local s = self.server
  local o = { jid = s:jid(role) .. "/spec", password = self.password, host = s.host, port = s.port,
    cafile = s.ca_file, peers = { s:jid("orchestrator") }, heartbeat = false, max_backoff = 0.5,
    delivery_backoff = 0.5 }
  if s.servers then
    -- a cluster (support.ejabberd_cluster): every node, the first one first
    o.host, o.port, o.servers = nil, nil, s:servers()
  end
  if role == "repository" then
    o.upload = { listen = { host = "127.0.0.1", port = 0, cert = self.https.cert, key = self.https.key } }
    o.peers = { s:jid("orchestrator") }
  else
    o.repository = s:jid("repository")
  end
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

--- g:start(mod, role, [extra]) -> mod.start(g:options(role, extra)), asserted; remembered so
-- that g:close_roles() closes every role started, newest first.
function Grid:start(mod, role, extra)
  local r = assert(mod.start(self:options(role, extra)))
  self.running[#self.running + 1] = r
  return r
end

function Grid:close_roles()
  for i = #self.running, 1, -1 do self.running[i]:close() end
  self.running = {}
end

--- grid.dpkg_status(path, bytes) -> the number of packages in a synthetic dpkg status file
-- whose packages posture is about `bytes` long on the wire.
function M.dpkg_status(path, bytes)
  local parts, n, size = {}, 0, 0
  while size < bytes do
    n = n + 1
    parts[n] = ("Package: synthetic-package-%05d\nStatus: install ok installed\nPriority: optional\n"
      .. "Architecture: amd64\nVersion: %d.%d.%d-%d+deb12u1\nDescription: a package that exists for a test\n\n")
      :format(n, n % 7, n % 13, n % 100, n % 5)
    size = size + 203 -- about what one package costs as posture (attributes name, version, arch, status, manager)
  end
  assert(fs.write(path, table.concat(parts)))
  return n
end

return M
