--- spec/support/postgres.lua: a real, private PostgreSQL 15 on loopback for the specs.
--
--   local postgres = require "support.postgres"
--   local server = postgres.start()
--   local db = assert(pg.connect(server:conninfo()))   -- or server:url()
--   server:restart()                                    -- same port and data
--   server:stop()
--
-- initdb and postgres refuse to run as root, so when the specs run as root both run as `nobody`
-- (setpriv, util-linux), which then owns the private directory $TMPDIR/sacmrun-postgres-XXXX
-- (mode 0700): the data, the Unix socket directory (0700, so only that user and root can use the
-- socket) and the log. The server listens on 127.0.0.1 only, on a free port below 32768, with
-- trust authentication for the role `sacm` (a private throwaway cluster: nothing else can reach
-- a loopback port in a test run that matters), fsync off. It runs in the foreground as a child
-- of the spec run, in its own process group, and is stopped by its pid (SIGINT: PostgreSQL's fast
-- shutdown; SIGTERM would wait for every client to leave). Shared with the XMPP servers: the
-- process, directory and port handling of support.harness.
--
-- Waiting calls must run in a task; failures raise with the log's tail.
--
-- Environment: SACMRUN_KEEP_TEST_DIRS=1 keeps the directory; SACMRUN_POSTGRES_BIN the directory
-- of initdb and postgres (default /usr/lib/postgresql/15/bin, Debian's).
local proc = require "sacm.proc"
local fs = require "sacm.fs"
local time = require "sacm.time"
local h = require "support.harness"

local M = {}

M.BIN = os.getenv("SACMRUN_POSTGRES_BIN") or "/usr/lib/postgresql/15/bin"
M.START_TIMEOUT = 20
M.STOP_GRACE = 10
M.USER = "sacm"         -- the superuser role initdb creates
M.RUN_AS = "nobody"      -- when the specs run as root
M.RUN_GROUP = "nogroup"

local function running_as_root()
  local status = fs.read("/proc/self/status") or ""
  return status:match("\nUid:%s+%d+%s+(%d+)") == "0"
end

---------------------------------------------------------------------------- the server
local Server = setmetatable({}, { __index = h.Server })
Server.__index = Server
Server.__close = h.Server.stop
Server.NAME = "postgres"
Server.PORTS = { "port" }
Server.SUBDIRS = {}
Server.POLL = 0.02

-- argv run as the unprivileged user when we are root (and with the parent-death signal, which a
-- change of user would clear if it were set before: setpriv sets it after switching).
function Server:_as_user(argv)
  if not self._setpriv then return argv end
  local out = { self._setpriv, "--reuid=" .. M.RUN_AS, "--regid=" .. M.RUN_GROUP, "--clear-groups",
    "--pdeathsig", "TERM", "--" }
  table.move(argv, 1, #argv, #out + 1, out)
  return out
end

function Server:_argv()
  -- sh appends the server's output to the log and execs it, so the pid is postgres's own
  return self:_as_user({ "/bin/sh", "-c", 'exec "$@" >>"$0" 2>&1', self.log_file,
    M.BIN .. "/postgres", "-D", self.data_dir, "-p", tostring(self.port), "-k", self.socket_dir,
    "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_permissions=0700",
    "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
    "-c", "max_connections=40", "-c", "shared_buffers=16MB", "-c", "log_line_prefix=%m [%p] " })
end

-- No PG* variables of ours may change what the server or initdb do.
function Server:_env()
  return h.environ({ PGDATA = false, PGHOST = false, PGPORT = false, PGUSER = false, PGDATABASE = false,
    PGOPTIONS = false, LC_ALL = "C.UTF-8", LANG = false })
end

function Server:_write_config() end -- everything is on the command line

function Server:_ready(log)
  if log:find("Address already in use", 1, true) then return false, ("port %d is taken"):format(self.port) end
  return log:find("database system is ready to accept connections", 1, true) ~= nil and h.listening(self.port)
end

function Server:_exit_reason(log)
  return log:find("Address already in use", 1, true) and "port" or "exited"
end

-- Fast shutdown by default (stop, restart): SIGINT. kill() still sends SIGKILL.
function Server:_terminate(signal)
  return h.Server._terminate(self, signal or "SIGINT")
end

--- server:conninfo([dbname]) -> options for pg.connect
function Server:conninfo(dbname)
  return { host = self.host, port = self.port, user = M.USER, dbname = dbname or "postgres", sslmode = "disable" }
end

--- server:url([dbname]) -> "postgresql://sacm@127.0.0.1:PORT/DBNAME"
function Server:url(dbname)
  return ("postgresql://%s@%s:%d/%s?sslmode=disable"):format(M.USER, self.host, self.port, dbname or "postgres")
end

local function run(self, argv, what)
  local r, err = proc.run(self:_as_user(argv), { cwd = self.dir, env = { LC_ALL = "C.UTF-8", PGDATA = false }, timeout = 120 })
  if not r then error(("support.postgres: %s: %s"):format(what, tostring(err)), 0) end
  if not r.ok then
    error(("support.postgres: %s failed (%s)\n%s%s"):format(what, r.signal or r.code, h.tail(r.stdout), h.tail(r.stderr)), 0)
  end
  return r
end

---------------------------------------------------------------------------- start
--- postgres.start([opts]) -> server
-- opts: port (default: a free one below 32768), start_timeout (M.START_TIMEOUT).
-- The server object: host ("127.0.0.1"), port, user ("sacm"), dir, data_dir, socket_dir, log_file,
-- pid; conninfo(), url(), restart(), kill(), stop(), pause(), resume() (support.harness).
function M.start(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("postgres.start: opts must be a table", 2) end
  if not fs.exists(M.BIN .. "/postgres") then
    error(("postgres.start: no %s/postgres (install postgresql-15: tools/install-deps.sh, or set "
      .. "SACMRUN_POSTGRES_BIN)"):format(M.BIN), 2)
  end
  return h.start(Server, function(self)
    local dir = self.dir
    self.host = "127.0.0.1"
    self.user = M.USER
    self.data_dir = dir .. "/data"
    self.socket_dir = dir .. "/socket"
    self.log_file = dir .. "/postgres.log"
    self.start_timeout = opts.start_timeout or M.START_TIMEOUT
    self.stop_grace = M.STOP_GRACE
    self.fixed_ports = opts.port ~= nil
    if running_as_root() then
      if not fs.exists(h.SETPRIV) then error("postgres.start: running as root needs " .. h.SETPRIV, 0) end
      self._setpriv = h.SETPRIV
      self.pdeathsig = nil -- set by _as_user, after the change of user
    end
  end, function(self)
    local t0 = time.monotonic()
    h.must(fs.mkdir(self.socket_dir, { mode = tonumber("700", 8) }), nil, "creating the socket directory")
    if self._setpriv then
      -- the whole private directory belongs to the server's user; we are root and still reach it
      local r, err = proc.run({ "chown", "-R", M.RUN_AS .. ":" .. M.RUN_GROUP, self.dir }, { timeout = 30 })
      if not r or not r.ok then
        error(("support.postgres: chown %s: %s"):format(self.dir, r and r.stderr or tostring(err)), 0)
      end
    end
    run(self, { M.BIN .. "/initdb", "-D", self.data_dir, "-U", M.USER, "--auth=trust", "-E", "UTF8",
      "--locale=C.UTF-8", "-N" }, "initdb")
    self.timings.initdb = time.monotonic() - t0
    if opts.port then self.port = opts.port else self:_pick_ports({}) end
    local t1 = time.monotonic()
    self:_start_process()
    self.timings.process = time.monotonic() - t1
  end)
end

return M
