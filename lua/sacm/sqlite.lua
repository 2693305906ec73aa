--- sacm.sqlite: SQLite databases, for the repository role and any script that must remember.
--
--   local db = assert(sqlite.open("/var/lib/sacm/repo.db"))
--   assert(db:migrate({ "CREATE TABLE posture (id INTEGER PRIMARY KEY, endpoint TEXT, data BLOB)" }))
--   local n, id = db:run("INSERT INTO posture (endpoint, data) VALUES (:ep, :data)",
--                        { ep = "host1", data = sqlite.blob(bytes) })
--   for _, row in ipairs(assert(db:query("SELECT * FROM posture WHERE endpoint = ?", { "host1" }))) do ... end
--
-- Calls are synchronous (docs/api/sqlite.md says why that is fine and where it stops being so).
-- Expected failures return nil, err with err.condition the SQLite error name (SQLITE_CONSTRAINT,
-- SQLITE_BUSY, ...); bad arguments and use after close raise.
local core = require "sacm._sqlite"
local serror = require "sacm.error"

local M = {
  version = core.version, -- the SQLite library's version, "3.40.1"
  blob = core.blob,
  DEFAULT_BUSY_TIMEOUT = 2, -- seconds
}

local Database = core.Database

local OPTIONS = {
  readonly = "boolean", create = "boolean", busy_timeout = "number", wal = "boolean",
  synchronous = "string", foreign_keys = "boolean",
}
local SYNCHRONOUS = { OFF = true, NORMAL = true, FULL = true, EXTRA = true }

local function check_opts(opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(("sqlite.open: options must be a table, got %s"):format(type(opts)), 3)
  end
  for k, v in pairs(opts) do
    local want = OPTIONS[k]
    if not want then error(("sqlite.open: unknown option %q"):format(tostring(k)), 3) end
    if type(v) ~= want then
      error(("sqlite.open: option %s must be a %s, got %s"):format(k, want, type(v)), 3)
    end
  end
  if opts.synchronous and not SYNCHRONOUS[opts.synchronous:upper()] then
    error(("sqlite.open: synchronous must be NORMAL, FULL, EXTRA or OFF, got %q"):format(opts.synchronous), 3)
  end
  if opts.busy_timeout and opts.busy_timeout < 0 then
    error("sqlite.open: busy_timeout must not be negative", 3)
  end
  return opts
end

local function in_memory(path)
  return path == "" or path == ":memory:"
end

-- The per-connection settings open() promises. Returns true or nil, err.
local function configure(db, path, opts)
  local timeout = opts.busy_timeout or M.DEFAULT_BUSY_TIMEOUT
  db:busy_timeout(math.floor(timeout * 1000 + 0.5))
  if opts.foreign_keys ~= false then
    local ok, err = db:exec("PRAGMA foreign_keys = ON")
    if not ok then return nil, err end
  end
  if opts.readonly then return true end
  local wal = opts.wal ~= false
  if wal then
    local row, err = db:first("PRAGMA journal_mode = WAL")
    if not row then return nil, err or serror.new("SQLITE_ERROR", "journal_mode gave no answer") end
    if row.journal_mode ~= "wal" and not in_memory(path) then
      return nil, serror.new("SQLITE_ERROR",
        ("%s: cannot use WAL (journal_mode is %s)"):format(path, tostring(row.journal_mode)))
    end
  end
  -- WAL with NORMAL loses nothing when the process dies, only (the last commits) when the
  -- machine does; without WAL, NORMAL is not safe against that, so FULL is the default there.
  local sync = opts.synchronous and opts.synchronous:upper() or (wal and "NORMAL" or "FULL")
  return db:exec("PRAGMA synchronous = " .. sync)
end

--- open(path [, opts]) -> db | nil, err
-- opts: readonly (false), create (true), busy_timeout (seconds, DEFAULT_BUSY_TIMEOUT),
-- wal (true), synchronous ("NORMAL" with WAL, else "FULL"), foreign_keys (true).
-- ":memory:" opens a private in-memory database.
function M.open(path, opts)
  if type(path) ~= "string" then
    error(("sqlite.open: path must be a string, got %s"):format(type(path)), 2)
  end
  opts = check_opts(opts)
  local db, err = core.open(path, opts.readonly == true, opts.create ~= false)
  if not db then return nil, err end
  local ok, cerr = configure(db, path, opts)
  if not ok then
    db:close()
    return nil, cerr
  end
  return db
end

-- ---- transactions ----

-- Which task holds a transaction open on which database: a transaction that waited (yielded)
-- would otherwise have another task's statements silently join it.
local owners = setmetatable({}, { __mode = "k" })

local function rollback(db, nested)
  if not db:is_open() or not db:in_transaction() then return end
  -- SQLite may already have rolled back on its own (SQLITE_FULL, SQLITE_IOERR): nothing to undo
  if nested then
    db:exec("ROLLBACK TO sacm_tx")
    db:exec("RELEASE sacm_tx")
  else
    db:exec("ROLLBACK")
  end
end

local function leave(db, owner)
  owner.depth = owner.depth - 1
  if owner.depth == 0 then owners[db] = nil end
end

local function finish(db, nested, owner, ok, ...)
  if not ok then
    local e = ...
    rollback(db, nested)
    leave(db, owner)
    error(e, 0)
  end
  local first, second = ...
  if not first and second ~= nil then
    -- fn returned nil, err: an expected failure, undone and passed on
    rollback(db, nested)
    leave(db, owner)
    return ...
  end
  local done, err = db:exec(nested and "RELEASE sacm_tx" or "COMMIT")
  if not done then
    rollback(db, nested)
    leave(db, owner)
    return nil, err
  end
  leave(db, owner)
  return ...
end

--- db:transaction(fn, ...) -> fn's results | nil, err
-- Runs fn(db, ...) in a transaction (BEGIN IMMEDIATE; inside another one, a SAVEPOINT). Commits
-- when fn returns; rolls back and re-raises when fn raises; rolls back and returns nil, err when
-- fn returns nil (or false) and an error. nil, err also when BEGIN or COMMIT fail (SQLITE_BUSY).
function Database:transaction(fn, ...)
  if type(fn) ~= "function" then
    error(("db:transaction: fn must be a function, got %s"):format(type(fn)), 2)
  end
  local co = coroutine.running()
  local owner = owners[self]
  if owner and owner.co ~= co then
    error("db:transaction: another task has a transaction open on this database "
      .. "(a transaction must not wait for anything)", 2)
  end
  local nested = self:in_transaction()
  local ok, err = self:exec(nested and "SAVEPOINT sacm_tx" or "BEGIN IMMEDIATE")
  if not ok then return nil, err end
  if not owner then
    owner = { co = co, depth = 0 }
    owners[self] = owner
  end
  owner.depth = owner.depth + 1
  return finish(self, nested, owner, pcall(fn, self, ...))
end

-- ---- schema versions ----

local function user_version(db)
  local row, err = db:first("PRAGMA user_version")
  if not row then return nil, err end
  return row.user_version
end

local function apply(db, version, migration)
  -- read again inside the write lock: another process may have migrated meanwhile
  local now, err = user_version(db)
  if not now then return nil, err end
  if now >= version then return true end
  local ok, merr
  if type(migration) == "string" then
    ok, merr = db:exec(migration)
  else
    ok, merr = migration(db)
  end
  if not ok then return nil, merr or serror.new("SQLITE_ERROR", "the migration function returned nothing") end
  return db:exec(("PRAGMA user_version = %d"):format(version))
end

--- db:migrate(migrations) -> version | nil, err
-- migrations is a list; entry i (an SQL script, or a function(db) returning true or nil, err)
-- takes the schema from version i-1 to i. The version is PRAGMA user_version. Each missing one
-- is applied in a transaction of its own, in order; a failure rolls that one back and returns
-- nil, err with err.migration = i (the ones before it stay applied). A database newer than the
-- list gives nil, err with condition "schema-too-new".
function Database:migrate(migrations)
  if type(migrations) ~= "table" then
    error(("db:migrate: migrations must be a list, got %s"):format(type(migrations)), 2)
  end
  for i, m in ipairs(migrations) do
    if type(m) ~= "string" and type(m) ~= "function" then
      error(("db:migrate: migration %d must be SQL text or a function, got %s"):format(i, type(m)), 2)
    end
  end
  local target = #migrations
  local current, err = user_version(self)
  if not current then return nil, err end
  if current > target then
    return nil, serror.new("schema-too-new",
      ("the database has schema version %d; this program knows versions up to %d"):format(current, target),
      { version = current })
  end
  for version = current + 1, target do
    local ok, merr = self:transaction(apply, version, migrations[version])
    if not ok then
      if serror.is(merr) then merr.migration = version end
      return nil, merr
    end
  end
  return target
end

return M
