--- spec/support/ejabberd_cluster.lua: a private two-node ejabberd 23.01 cluster on loopback,
-- serving one domain, for the specs that need a server node to die (../shared/notes/scale-out.md).
--
--   local cluster = require "support.ejabberd_cluster"
--   local c = cluster.start({ users = { alice = "secret" }, shipped = true })
--   -- c.domain, c.pubsub, c.ca_file, c:jid(user); c.nodes[1], c.nodes[2] (support.ejabberd
--   -- servers: host, port, kill(), restart()); c:servers() -> {"127.0.0.1:P1", "127.0.0.1:P2"}
--   c:stop()
--
-- How: a private epmd (started here, listening on 127.0.0.1 only, on a free port below 32768)
-- that both nodes and a hidden control node register with (ERL_EPMD_PORT); each node a named
-- Erlang node (-sname n1@localhost, n2@localhost) with a random cookie and its distribution on
-- 127.0.0.1 on a port of its own; localhost mapped to 127.0.0.1 by an inetrc. Node 1 starts
-- and takes the accounts (through its HTTP API; Mnesia replicates them), node 2 starts with the
-- same certificates and joins through ejabberd_admin:join_cluster called from the control node.
-- Stopping stops both nodes by pid, then the epmd by pid.
local proc = require "sacm.proc"
local fs = require "sacm.fs"
local crypto = require "sacm.crypto"
local time = require "sacm.time"
local task = require "sacm.task"
local tmp = require "support.tmp"
local h = require "support.harness"
local ejabberd = require "support.ejabberd"

local M = {}

M.JOIN_TIMEOUT = 60 -- seconds join_cluster may take (3-5 s measured on a loaded machine)

local Cluster = {}
Cluster.__index = Cluster
Cluster.__close = function(self) self:stop() end

function Cluster:jid(user) return user .. "@" .. self.domain end

--- c:servers() -> the c2s addresses of the nodes, "127.0.0.1:port", node 1 first.
function Cluster:servers()
  local out = {}
  for i, n in ipairs(self.nodes) do out[i] = n.host .. ":" .. n.port end
  return out
end

--- c:erl(expr) -> the printed value of an Erlang expression evaluated by a hidden control node
-- (expr must be one expression; its value is printed with ~p). Raises on failure.
function Cluster:erl(expr)
  local r, err = proc.run({ "erl", "-noshell", "-hidden", "-sname", "ctl" .. crypto.hex(crypto.random(4)) .. "@localhost",
    "-setcookie", self.cookie, "-kernel", "inet_dist_use_interface", "{127,0,0,1}",
    "-eval", ("R = (%s), io:format(\"~p~n\", [R]), halt()."):format(expr) },
    { env = { ERL_EPMD_PORT = tostring(self.epmd_port), ERL_EPMD_ADDRESS = "127.0.0.1", ERL_INETRC = self.inetrc,
      HOME = self.dir }, timeout = M.JOIN_TIMEOUT + 10 })
  if not r or not r.ok then
    error(("support.ejabberd_cluster: the control node failed on %s: %s%s"):format(expr, tostring(err or r.code),
      r and ("\n" .. r.stdout .. r.stderr) or ""), 2)
  end
  return (r.stdout:gsub("%s+$", ""))
end

--- c:running_nodes() -> sorted list of the Mnesia nodes running, as node 2 sees them.
function Cluster:running_nodes()
  local out = self:erl("rpc:call('n2@localhost', mnesia, system_info, [running_db_nodes])")
  local nodes = {}
  for n in out:gmatch("[%w_]+@[%w_.%-]+") do nodes[#nodes + 1] = n end
  table.sort(nodes)
  return nodes
end

function Cluster:stop()
  if self.stopped then return end
  self.stopped = true
  for i = #self.nodes, 1, -1 do
    local ok, err = pcall(self.nodes[i].stop, self.nodes[i])
    if not ok then h.note("ejabberd_cluster", "stopping node %d: %s", i, tostring(err)) end
  end
  if self.epmd then self.epmd:stop(5) end
  if self.dir and not h.keep_dirs() then tmp.remove(self.dir) end
end

-- ejabberd's PostgreSQL schema (Debian's ejabberd package; the new schema, with server_host).
M.PG_SCHEMA = "/usr/share/ejabberd/sql/pg.new.sql"

-- Makes the database `name` on a support.postgres server and loads ejabberd's schema into it.
local function make_database(server, name)
  local pg = require "sacm.pg"
  local admin = h.must(pg.connect(server:conninfo("postgres")))
  h.must(admin:run(("CREATE DATABASE %s"):format(name)), nil, "creating database " .. name)
  admin:close()
  local schema = h.must(fs.read(M.PG_SCHEMA), nil, "reading ejabberd's schema " .. M.PG_SCHEMA
    .. " (package ejabberd)")
  local db = h.must(pg.connect(server:conninfo(name)))
  h.must(db:exec(schema), nil, "loading " .. M.PG_SCHEMA)
  db:close()
end

--- ejabberd_cluster.start(opts) -> cluster. opts: users ({name = password}), shipped, domain,
-- log_level: as for support.ejabberd.start, given to both nodes; postgres (a support.postgres
-- server: both nodes keep accounts, rosters and pubsub in its database `ejabberd`, made here
-- with ejabberd's schema; needs Debian's erlang-p1-pgsql).
function M.start(opts)
  opts = opts or {}
  local self = setmetatable({ nodes = {}, cookie = crypto.hex(crypto.random(16)), timings = {} }, Cluster)
  local t0 = time.monotonic()
  local ok, err = pcall(function()
    self.dir = tmp.dir("ejabberd-cluster")
    self.inetrc = self.dir .. "/inetrc"
    h.must(fs.write(self.inetrc, '{host, {127,0,0,1}, ["localhost"]}.\n{lookup, [file, native]}.\n'), nil,
      "writing " .. self.inetrc)
    -- the epmd is ours: started (not as a daemon) so its pid is known and it is stopped with the rest
    for _ = 1, 5 do
      self.epmd_port = h.pick_port({})
      self.epmd = assert(proc.spawn({ "epmd", "-port", tostring(self.epmd_port), "-address", "127.0.0.1" },
        { env = { ERL_EPMD_ADDRESS = false, ERL_EPMD_PORT = false } }))
      local deadline = time.monotonic() + 5
      while not h.listening(self.epmd_port) and not self.epmd.result and time.monotonic() < deadline do
        task.sleep(0.02)
      end
      if h.listening(self.epmd_port) then break end
      self.epmd:stop(1)
      self.epmd = nil
    end
    if not self.epmd then error("support.ejabberd_cluster: epmd did not listen on 127.0.0.1", 0) end
    local sql
    if opts.postgres then
      make_database(opts.postgres, "ejabberd")
      sql = { host = opts.postgres.host, port = opts.postgres.port, database = "ejabberd", username = "sacm" }
      self.postgres = opts.postgres
    end
    local function node_opts(i, extra)
      local o = { shipped = opts.shipped, domain = opts.domain, log_level = opts.log_level, sql = sql,
        start_timeout = opts.start_timeout,
        cluster = { node = "n" .. i .. "@localhost", cookie = self.cookie, epmd_port = self.epmd_port, inetrc = self.inetrc } }
      for k, v in pairs(extra or {}) do o[k] = v end
      return o
    end
    self.nodes[1] = ejabberd.start(node_opts(1, { users = opts.users }))
    self.nodes[2] = ejabberd.start(node_opts(2, { certificates_of = self.nodes[1] }))
    local first = self.nodes[1]
    self.domain, self.pubsub, self.ca_file, self._ca = first.domain, first.pubsub, first.ca_file, first._ca
    self.host, self.port = first.host, first.port
    local t1 = time.monotonic()
    local joined = self:erl(("rpc:call('n2@localhost', ejabberd_admin, join_cluster, [<<\"n1@localhost\">>], %d)")
      :format(M.JOIN_TIMEOUT * 1000))
    if joined ~= "ok" then error("support.ejabberd_cluster: node 2 did not join node 1: " .. joined, 0) end
    self.timings.join = time.monotonic() - t1
  end)
  if not ok then
    pcall(Cluster.stop, self)
    error(err, 2)
  end
  self.timings.start = time.monotonic() - t0
  return self
end

return M
