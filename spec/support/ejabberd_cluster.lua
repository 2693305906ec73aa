--- spec/support/ejabberd_cluster.lua: a private two-node (or more) ejabberd 23.01 cluster on
-- loopback, for the specs that must see the grid survive the loss of a server node.
--
--   local cluster = require "support.ejabberd_cluster"
--   local c = cluster.start({ nodes = 2, shipped = true, users = { alice = "secret" } })
--   -- c.nodes[i]: support.ejabberd servers (same domain, CA and server certificate, their own
--   -- ports); c.servers: {"127.0.0.1:PORT", ...} for xmpp.connect's servers option
--   c.nodes[1]:kill()       -- a crashed node; the others carry the domain on
--   c:stop()
--
-- The nodes form one Erlang cluster the way docs/scale.md tells operators to: the same
-- configuration on every node (here the shipped examples/servers/ejabberd.yml with the test
-- values substituted), one cookie, and `join_cluster` run for each later node against the first.
-- Everything stays private: the cluster's own epmd, started as a child of the spec run on a
-- port we pick and bound to 127.0.0.1 (ERL_EPMD_ADDRESS), every node port picked below 32768
-- and on 127.0.0.1 only, the cookie in each node's $HOME/.erlang.cookie (mode 0400). Accounts
-- are registered on the first node after the join: Mnesia replicates them. stop() stops every
-- node and then epmd, each by its pid. Waiting calls must run in a task.
local proc = require "sacm.proc"
local crypto = require "sacm.crypto"
local fs = require "sacm.fs"
local time = require "sacm.time"
local shutdown = require "sacm.shutdown"
local tmp = require "support.tmp"
local h = require "support.harness"
local ejabberd = require "support.ejabberd"

local M = {}

M.JOIN_TIMEOUT = 90 -- seconds for join_cluster (3-5 s measured, more under load)

local Cluster = {}
Cluster.__index = Cluster

local function note(fmt, ...) h.note("ejabberd_cluster", fmt, ...) end

-- Starts the cluster's epmd and waits until it listens.
local function start_epmd(self)
  for _ = 1, 5 do
    self.epmd_port = h.pick_port({})
    local p, err = proc.spawn({ "epmd", "-port", tostring(self.epmd_port), "-address", "127.0.0.1" },
      { env = { ERL_EPMD_ADDRESS = "127.0.0.1" } })
    if not p then error("support.ejabberd_cluster: cannot start epmd: " .. tostring(err), 0) end
    local deadline = time.monotonic() + 5
    while time.monotonic() < deadline do
      if h.listening(self.epmd_port) then
        self.epmd = p
        return
      end
      if p:wait(0.02) then break end -- it exited: the port was taken, say
    end
    p:stop(1)
  end
  error("support.ejabberd_cluster: epmd did not listen on 127.0.0.1 (5 ports tried)", 0)
end

-- Runs Erlang code on a hidden control node of the cluster; returns what it printed.
local function control(self, code)
  local port = h.pick_port({})
  local argv = { "erl", "-noshell", "-hidden" }
  for _, a in ipairs(ejabberd.distribution_args("ctl" .. crypto.hex(crypto.random(3)), port)) do
    argv[#argv + 1] = a
  end
  argv[#argv + 1], argv[#argv + 2] = "-eval", code
  local r, err = proc.run(argv, { timeout = M.JOIN_TIMEOUT, cwd = self.dir,
    env = { HOME = self.dir, ERL_EPMD_PORT = tostring(self.epmd_port), ERL_EPMD_ADDRESS = "127.0.0.1" } })
  if not r then error("support.ejabberd_cluster: the control node did not run: " .. tostring(err), 0) end
  return r.stdout .. r.stderr, r
end

--- cluster.start([opts]) -> cluster. opts: nodes (2), users ({name = password}), shipped, and
-- what support.ejabberd.start takes besides (domain, log_level, start_timeout, ...).
function M.start(opts)
  opts = opts or {}
  local n = opts.nodes or 2
  if math.type(n) ~= "integer" or n < 2 then error("ejabberd_cluster.start: nodes must be an integer >= 2", 2) end
  local self = setmetatable({ nodes = {}, servers = {}, dir = tmp.dir("ejabberd-cluster"),
    cookie = crypto.hex(crypto.random(16)) }, Cluster)
  self._shutdown_reg = shutdown.on_shutdown(function() self:stop() end)
  local ok, err = pcall(function()
    h.must(fs.write(self.dir .. "/.erlang.cookie", self.cookie, { mode = tonumber("400", 8) }), nil, "writing the cookie")
    start_epmd(self)
    for i = 1, n do
      local o = {}
      for k, v in pairs(opts) do o[k] = v end
      o.nodes, o.users = nil, nil
      o.node = { name = "n" .. i, cookie = self.cookie, epmd_port = self.epmd_port }
      o.certificates = self.nodes[1]
      local t0 = time.monotonic()
      self.nodes[i] = ejabberd.start(o)
      if i > 1 then
        local out = control(self, ("R = rpc:call('n%d@localhost', ejabberd_admin, join_cluster, [<<\"n1@localhost\">>], %d), "
          .. "io:format(\"~p~n\", [R]), halt()."):format(i, M.JOIN_TIMEOUT * 1000))
        if not out:match("^ok\n") then
          error(("support.ejabberd_cluster: node n%d could not join n1: %s\n(log: %s)"):format(i, out,
            self.nodes[i].log_file), 0)
        end
      end
      self.nodes[i].timings.join = time.monotonic() - t0
    end
    for i, node in ipairs(self.nodes) do self.servers[i] = node.host .. ":" .. node.port end
    local first = self.nodes[1]
    self.domain, self.host, self.ca_file, self.pubsub, self._ca = first.domain, first.host, first.ca_file, first.pubsub, first._ca
    if opts.users then first:_register_all(opts.users) end
  end)
  if not ok then
    self:stop()
    error(err, 2)
  end
  return self
end

--- cluster:jid(user) -> "user@domain"
function Cluster:jid(user) return user .. "@" .. self.domain end

--- cluster:members() -> the node names the first running node sees in its cluster, sorted
function Cluster:members()
  local target
  for i, node in ipairs(self.nodes) do
    if node:running() then target = ("n%d@localhost"):format(i) break end
  end
  if not target then return {} end
  local out = control(self, ("io:format(\"~p~n\", [rpc:call('%s', ejabberd_cluster, get_nodes, [], 10000)]), halt().")
    :format(target))
  local names = {}
  for name in out:gmatch("'?(n%d+@localhost)'?") do names[#names + 1] = name end
  table.sort(names)
  return names
end

--- cluster:stop(): stops every node (SIGTERM, then SIGKILL after their grace) and epmd, by pid;
-- removes the directories. Idempotent.
function Cluster:stop()
  if self.stopped then return end
  self.stopped = true
  for i = #self.nodes, 1, -1 do
    local ok, err = pcall(self.nodes[i].stop, self.nodes[i])
    if not ok then note("stopping node %d: %s", i, tostring(err)) end
  end
  if self.epmd then self.epmd:stop(2) end
  if self._shutdown_reg then self._shutdown_reg.cancel() end
  if h.keep_dirs() then note("kept %s", self.dir) else tmp.remove(self.dir) end
end
Cluster.__close = Cluster.stop

return M
