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

---@class sacm.sqlite.OpenOptions
---@field readonly? boolean open for reading only (false)
---@field create? boolean create the file if missing (true)
---@field busy_timeout? number seconds to wait for another connection's lock (2)
---@field wal? boolean journal_mode = WAL (true)
---@field synchronous? "NORMAL"|"FULL"|"EXTRA"|"OFF"
---@field foreign_keys? boolean enforce REFERENCES (true)

local M = {
  version = core.version, -- the SQLite library's version, "3.40.1"
  ---@type fun(bytes: string): table a value bound as a BLOB rather than TEXT
  blob = core.blob,
  DEFAULT_BUSY_TIMEOUT = 2, -- seconds
}

-- values bound by position (?) or by name (:name)
---@alias sacm.sqlite.Params any[]|table<string, any>

---@class sacm.sqlite.Statement
---@field bind fun(self: sacm.sqlite.Statement, ...: any): sacm.sqlite.Statement by position, or from one table of params
---@field step fun(self: sacm.sqlite.Statement): table|false|nil, sacm.Error? the next row, false when no more, or nil, err
---@field rows fun(self: sacm.sqlite.Statement): fun(): table? for a generic for; raises a stepping error
---@field reset fun(self: sacm.sqlite.Statement): sacm.sqlite.Statement
---@field columns fun(self: sacm.sqlite.Statement): string[]
---@field sql fun(self: sacm.sqlite.Statement): string
---@field finalize fun(self: sacm.sqlite.Statement) idempotent; also __close and __gc

---@class sacm.sqlite.Database
---@field exec fun(self: sacm.sqlite.Database, sql: string): true?, sacm.Error? every statement of a script
---@field run fun(self: sacm.sqlite.Database, sql: string, params?: sacm.sqlite.Params): integer?, integer|sacm.Error|nil changes and last_insert_rowid, or nil, err
---@field query fun(self: sacm.sqlite.Database, sql: string, params?: sacm.sqlite.Params): table[]?, sacm.Error? every row, keyed by column name
---@field first fun(self: sacm.sqlite.Database, sql: string, params?: sacm.sqlite.Params): table?, sacm.Error? the first row, nil when none
---@field prepare fun(self: sacm.sqlite.Database, sql: string): sacm.sqlite.Statement?, sacm.Error?
---@field close fun(self: sacm.sqlite.Database) idempotent; also __close and __gc
---@field in_transaction fun(self: sacm.sqlite.Database): boolean
---@field changes fun(self: sacm.sqlite.Database): integer of the last statement
---@field last_insert_rowid fun(self: sacm.sqlite.Database): integer
---@field busy_timeout fun(self: sacm.sqlite.Database, ms: integer) the lock wait, in milliseconds
---@field path fun(self: sacm.sqlite.Database): string the absolute file name ("" in memory)
---@field is_open fun(self: sacm.sqlite.Database): boolean
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
---@param path string a file name, or ":memory:"
---@param opts? sacm.sqlite.OpenOptions
---@return sacm.sqlite.Database? db
---@return sacm.Error? err
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
---@param fn fun(db: sacm.sqlite.Database, ...: any): any its results are the call's; nil, err rolls back
---@param ... any passed to fn
---@return any ... fn's results, or nil, err
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
---@param migrations (string|fun(db: sacm.sqlite.Database): true?, sacm.Error?)[]
---@return integer? version the schema version reached
---@return sacm.Error? err err.migration: the failing entry; schema-too-new
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
