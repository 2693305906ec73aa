-- sacm.sqlite against real database files in a fresh temporary directory per test, and a real
-- child sacmrun process killed with SIGKILL while it commits.
local sqlite = require "sacm.sqlite"
local fs = require "sacm.fs"
local task = require "sacm.task"
local time = require "sacm.time"
local proc_core = require "sacm._proc"
local tmp = require "support.tmp"

local BIN = os.getenv("SACMRUN_BIN") or "./sacmrun"

local function all_bytes()
  local t = {}
  for i = 0, 255 do t[#t + 1] = string.char(i) end
  return table.concat(t):rep(2)
end

describe("sacm.sqlite", function()
  local dir, path

  before_each(function()
    dir = tmp.dir("sqlite")
    path = dir .. "/test.db"
  end)

  after_each(function()
    if dir then tmp.remove(dir) end
    dir = nil
  end)

  describe("open", function()
    it("creates a database in WAL mode with foreign keys on and synchronous NORMAL", function()
      local db <close> = assert(sqlite.open(path))
      assert.equal("wal", db:first("PRAGMA journal_mode").journal_mode)
      assert.equal(1, db:first("PRAGMA foreign_keys").foreign_keys)
      assert.equal(1, db:first("PRAGMA synchronous").synchronous) -- 1 is NORMAL
      assert.equal(path, db:path())
      assert.is_true(fs.exists(path))
      assert.matches("^sqlite%.Database %(.*test%.db%)$", tostring(db))
    end)

    it("takes synchronous, wal, foreign_keys and busy_timeout options", function()
      local db <close> = assert(sqlite.open(path, { synchronous = "FULL", foreign_keys = false,
                                                    busy_timeout = 0.25 }))
      assert.equal(2, db:first("PRAGMA synchronous").synchronous)
      assert.equal(0, db:first("PRAGMA foreign_keys").foreign_keys)
      assert.equal(250, db:first("PRAGMA busy_timeout").timeout)
      local plain <close> = assert(sqlite.open(dir .. "/plain.db", { wal = false }))
      assert.equal("delete", plain:first("PRAGMA journal_mode").journal_mode)
      assert.equal(2, plain:first("PRAGMA synchronous").synchronous) -- FULL without WAL
    end)

    it("fails with the SQLite error name for a missing directory, create = false and readonly writes", function()
      local db, err = sqlite.open(dir .. "/no/such/dir/x.db")
      assert.is_nil(db)
      assert.equal("SQLITE_CANTOPEN", err.condition)
      assert.matches("no/such/dir/x%.db: unable to open database file", err.text)

      db, err = sqlite.open(path, { create = false })
      assert.is_nil(db)
      assert.equal("SQLITE_CANTOPEN", err.condition)
      assert.is_false(fs.exists(path))

      local rw = assert(sqlite.open(path))
      assert(rw:exec("CREATE TABLE t (x)"))
      rw:close()
      local ro <close> = assert(sqlite.open(path, { readonly = true }))
      local ok, werr = ro:exec("INSERT INTO t VALUES (1)")
      assert.is_nil(ok)
      assert.equal("SQLITE_READONLY", werr.condition)
      assert.equal("attempt to write a readonly database", werr.text)
    end)

    it("raises on bad arguments", function()
      assert.has_error(function() sqlite.open(42) end, "sqlite.open: path must be a string, got number")
      assert.has_error(function() sqlite.open(path, { walk = true }) end, 'sqlite.open: unknown option "walk"')
      assert.has_error(function() sqlite.open(path, { synchronous = "SOMETIMES" }) end)
      assert.has_error(function() sqlite.open(path .. "\0x") end)
    end)

    it("is reachable as sacm.sqlite", function()
      assert.equal(sqlite, sacm.sqlite)
      assert.matches("^3%.%d+", sqlite.version)
    end)
  end)

  describe("values", function()
    local db
    before_each(function()
      db = assert(sqlite.open(path))
      assert(db:exec("CREATE TABLE v (id INTEGER PRIMARY KEY, x)"))
    end)
    after_each(function() db:close() end)

    local function round_trip(value)
      local _, id = assert(db:run("INSERT INTO v (x) VALUES (?)", { value }))
      local row = assert(db:first("SELECT x, typeof(x) AS t FROM v WHERE id = ?", { id }))
      return row.x, row.t
    end

    it("keeps 64-bit integers exact and integers as Lua integers", function()
      for _, n in ipairs({ 0, 1, -1, math.maxinteger, math.mininteger, (1 << 53) + 1, -(1 << 62) - 7 }) do
        local x, t = round_trip(n)
        assert.equal("integer", t)
        assert.equal("integer", math.type(x))
        assert.equal(n, x)
      end
    end)

    it("keeps REAL as floats, including infinities", function()
      for _, f in ipairs({ 0.5, -1e300, 1 / 3, 2.0, math.huge, -math.huge }) do
        local x, t = round_trip(f)
        assert.equal("real", t)
        assert.equal("float", math.type(x))
        assert.equal(f, x)
      end
    end)

    it("keeps TEXT byte for byte, embedded NULs and invalid UTF-8 included", function()
      for _, s in ipairs({ "", "plain", "grüße ✓", "a\0b\0", "\xff\xfe" }) do
        local x, t = round_trip(s)
        assert.equal("text", t)
        assert.equal(s, x)
      end
    end)

    it("keeps BLOBs byte for byte, embedded NULs included", function()
      for _, s in ipairs({ "", "\0", all_bytes(), ("\0"):rep(1000) }) do
        local x, t = round_trip(sqlite.blob(s))
        assert.equal("blob", t)
        assert.equal(s, x)
      end
      local big = all_bytes():rep(2048) -- 1 MiB
      assert.equal(big, (round_trip(sqlite.blob(big))))
    end)

    it("gives NULL as a missing field (nil) and stores booleans as 1 and 0", function()
      local x, t = round_trip(nil)
      assert.equal("null", t)
      assert.is_nil(x)
      local row = assert(db:first("SELECT NULL AS a, 1 AS b"))
      assert.same({ b = 1 }, row)
      assert.equal(1, (round_trip(true)))
      assert.equal(0, (round_trip(false)))
    end)

    it("raises when asked to bind a value SQLite cannot hold", function()
      assert.has_error(function() db:run("INSERT INTO v (x) VALUES (?)", { {} }) end,
        "cannot bind a table to SQL parameter 1 (nil, boolean, number, string or sqlite.blob(s))")
      assert.has_error(function() db:run("INSERT INTO v (x) VALUES (?)", { print }) end)
      assert.has_error(function() db:run("INSERT INTO v (x) VALUES (?)", { coroutine.create(print) }) end)
      assert.has_error(function() db:run("INSERT INTO v (x) VALUES (?)", "not a table") end)
      -- and the statement is usable afterwards
      assert.equal(1, (db:run("INSERT INTO v (x) VALUES (?)", { 5 })))
    end)
  end)

  describe("parameters", function()
    local db
    before_each(function()
      db = assert(sqlite.open(":memory:"))
    end)
    after_each(function() db:close() end)

    it("binds by name with :name, $name and @name, and by position with ? and ?NNN", function()
      assert.same({ a = 1, b = "two", c = 3.5 },
        db:first("SELECT :x AS a, $y AS b, @z AS c", { x = 1, y = "two", z = 3.5 }))
      assert.same({ a = "p", b = "q", c = "p" }, db:first("SELECT ? AS a, ? AS b, ?1 AS c", { "p", "q" }))
      -- a hole in the list and a missing name bind NULL
      assert.same({ b = 3 }, db:first("SELECT ? AS a, ? AS c, ? AS b", { nil, nil, 3 }))
      assert.same({}, db:first("SELECT :missing AS a"))
    end)

    it("binds on prepared statements by position or from a table, resetting first", function()
      local st <close> = assert(db:prepare("SELECT ?1 + ?2 AS s, :n AS n"))
      assert.same({ s = 5 }, st:bind(2, 3):step())
      assert.same({ s = 30, n = "x" }, st:bind({ 10, 20, n = "x" }):step())
      -- bind resets: the next step gives the first row again, with every parameter NULL first
      assert.same({ s = 3 }, st:bind(1, 2):step())
      assert.has_error(function() st:bind(1, 2, 3, 4) end, "statement has 3 parameter(s), got 4 values")
    end)
  end)

  describe("errors", function()
    local db
    before_each(function()
      db = assert(sqlite.open(path))
      assert(db:exec([[
        CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
        CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER NOT NULL REFERENCES parent (id));
        INSERT INTO parent (id, name) VALUES (1, 'one');
      ]]))
    end)
    after_each(function() db:close() end)

    it("reports constraint violations as SQLITE_CONSTRAINT with the extended name", function()
      local ok, err = db:run("INSERT INTO parent (name) VALUES ('one')")
      assert.is_nil(ok)
      assert.equal("SQLITE_CONSTRAINT", err.condition)
      assert.equal("SQLITE_CONSTRAINT_UNIQUE", err.extended)
      assert.equal("UNIQUE constraint failed: parent.name", err.text)
      assert.equal("SQLITE_CONSTRAINT: UNIQUE constraint failed: parent.name", tostring(err))
      assert.is_true(require("sacm.error").is(err))

      ok, err = db:run("INSERT INTO parent (name) VALUES (NULL)")
      assert.is_nil(ok)
      assert.equal("SQLITE_CONSTRAINT_NOTNULL", err.extended)
      ok, err = db:run("INSERT INTO child (parent) VALUES (99)")
      assert.is_nil(ok)
      assert.equal("SQLITE_CONSTRAINT_FOREIGNKEY", err.extended)
      assert.equal("FOREIGN KEY constraint failed", err.text)
      assert.equal(0, db:first("SELECT count(*) AS n FROM child").n)
    end)

    it("returns nil, err for bad SQL, with the position of the error", function()
      local st, err = db:prepare("SELECT * FROM parent WHERE")
      assert.is_nil(st)
      assert.equal("SQLITE_ERROR", err.condition)
      assert.equal("incomplete input", err.text)
      st, err = db:prepare("SELEC 1")
      assert.is_nil(st)
      assert.equal('near "SELEC": syntax error', err.text)
      assert.equal(1, err.position)
      local rows, qerr = db:query("SELECT nope FROM parent")
      assert.is_nil(rows)
      assert.equal("no such column: nope", qerr.text)
      local ok, eerr = db:exec("CREATE TABLE x (a); INSERT INTO nowhere VALUES (1)")
      assert.is_nil(ok)
      assert.equal("no such table: nowhere", eerr.text)
      assert.truthy(db:first("SELECT name FROM sqlite_master WHERE name = 'x'")) -- exec ran up to the error
    end)

    it("refuses to prepare more than one statement, and no statement at all", function()
      local st, err = db:prepare("SELECT 1; SELECT 2")
      assert.is_nil(st)
      assert.equal("SQLITE_MISUSE", err.condition)
      assert.matches("more than one SQL statement", err.text)
      st = assert(db:prepare("SELECT 1 AS one; -- a comment\n"))
      assert.same({ one = 1 }, st:step())
      st:finalize()
      st, err = db:prepare("  -- only a comment")
      assert.is_nil(st)
      assert.equal("SQLITE_MISUSE", err.condition)
    end)

    it("reads double-quoted words as names, never as strings", function()
      local rows, err = db:query('SELECT * FROM parent WHERE name = "one"')
      assert.is_nil(rows)
      assert.equal('no such column: one', err.text)
    end)
  end)

  describe("statements", function()
    local db
    before_each(function()
      db = assert(sqlite.open(path))
      assert(db:exec("CREATE TABLE n (i INTEGER)"))
      assert(db:transaction(function()
        for i = 1, 10 do assert(db:run("INSERT INTO n VALUES (?)", { i })) end
        return true
      end))
    end)
    after_each(function() db:close() end)

    it("steps row by row, then says false, and rows() iterates from the start", function()
      local st <close> = assert(db:prepare("SELECT i FROM n WHERE i > ? ORDER BY i"))
      st:bind(7)
      assert.same({ i = 8 }, st:step())
      assert.same({ i = 9 }, st:step())
      assert.same({ i = 10 }, st:step())
      assert.is_false(st:step())
      local seen = {}
      for row in st:rows() do seen[#seen + 1] = row.i end
      assert.same({ 8, 9, 10 }, seen)
      assert.same({ "i" }, st:columns())
      assert.equal("SELECT i FROM n WHERE i > ? ORDER BY i", st:sql())
    end)

    it("resets a statement when a rows() loop is left early, so checkpoints are not blocked", function()
      local st <close> = assert(db:prepare("SELECT i FROM n"))
      local other <close> = assert(sqlite.open(path))
      assert(other:run("INSERT INTO n VALUES (11)"))
      local function checkpoint_blocked()
        return other:first("PRAGMA wal_checkpoint(TRUNCATE)").busy == 1
      end
      assert.is_false(checkpoint_blocked())
      for _ in st:rows() do break end
      assert.is_false(checkpoint_blocked())
      -- while a statement is mid-way, it holds its snapshot: the check can fail
      assert(other:run("INSERT INTO n VALUES (12)"))
      assert.truthy(st:step())
      assert.is_true(checkpoint_blocked())
      st:reset()
      assert.is_false(checkpoint_blocked())
    end)

    it("raises the error value from a rows() loop", function()
      local st <close> = assert(db:prepare("SELECT CASE WHEN i = 3 THEN json('{bad') ELSE i END AS x FROM n"))
      local seen = 0
      local ok, err = pcall(function() for _ in st:rows() do seen = seen + 1 end end)
      assert.is_false(ok)
      assert.equal(2, seen)
      assert.equal("SQLITE_ERROR", err.condition)
      assert.equal("malformed JSON", err.text)
      -- step reports the same as nil, err
      st:reset()
      st:step(); st:step()
      local row, serr = st:step()
      assert.is_nil(row)
      assert.equal("malformed JSON", serr.text)
    end)

    it("finalizes every statement when the database closes; they raise afterwards", function()
      local other = assert(sqlite.open(path))
      local a = assert(other:prepare("SELECT i FROM n"))
      local b = assert(other:prepare("SELECT count(*) AS c FROM n"))
      assert.truthy(a:step()) -- one mid-way
      assert.truthy(other:query("SELECT 1")) -- and one in the cache
      other:close()
      other:close() -- idempotent
      assert.is_false(other:is_open())
      assert.has_error(function() a:step() end,
        "attempt to use a finalized sqlite statement (or one of a closed database)")
      assert.has_error(function() b:bind(1) end)
      assert.has_error(function() other:query("SELECT 1") end, "attempt to use a closed sqlite database")
      a:finalize(); b:finalize() -- idempotent after the database did it
      assert.equal("sqlite.Statement (finalized)", tostring(a))
      assert.equal("sqlite.Database (closed)", tostring(other))
    end)

    it("lets the collector finalize statements and databases in any order", function()
      for _ = 1, 50 do
        local d = assert(sqlite.open(path))
        local st = assert(d:prepare("SELECT i FROM n"))
        st:step()
        if _ % 2 == 0 then d = nil else st = nil end -- luacheck: ignore
      end
      collectgarbage()
      collectgarbage()
      assert.equal(10, db:first("SELECT count(*) AS c FROM n").c)
    end)

    it("raises, never touches freed memory, when a finalizer closes the database mid-query", function()
      local other = assert(sqlite.open(path))
      assert(other:exec([[
        CREATE TABLE big (s TEXT);
        WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20000)
        INSERT INTO big SELECT printf('row %d', i) FROM c;
      ]]))
      local closed_by_gc = false
      setmetatable({}, { __gc = function() other:close(); closed_by_gc = true end })
      collectgarbage("step", 0) -- start a cycle so the finalizer runs during the query's allocations
      -- 20000 rows allocate far more than one collection cycle needs
      local ok, err = pcall(other.query, other, "SELECT s, s AS t FROM big")
      assert.is_true(closed_by_gc)
      assert.is_false(ok)
      -- depending on which allocation ran the finalizer, the database or the statement was gone
      local msg = tostring(err)
      assert.truthy(msg:find("attempt to use a finalized sqlite statement", 1, true)
        or msg:find("attempt to use a closed sqlite database", 1, true), msg)
      other:close()
    end)

    it("keeps more distinct SQL than the cache holds working", function()
      for round = 1, 2 do
        for i = 1, 150 do
          local row = assert(db:first(("SELECT %d + ? AS v"):format(i), { round }))
          assert.equal(i + round, row.v)
        end
      end
    end)

    it("runs a script of many statements with exec", function()
      assert(db:exec("CREATE TABLE a (x); INSERT INTO a VALUES (1); INSERT INTO a VALUES (2);"))
      assert.same({ { s = 3 } }, db:query("SELECT sum(x) AS s FROM a"))
      local changes, id = db:run("UPDATE n SET i = i + 100 WHERE i <= 3")
      assert.equal(3, changes)
      assert.equal("integer", math.type(id))
      assert.is_nil(db:first("SELECT i FROM n WHERE i = 1000"))
    end)
  end)

  describe("transactions", function()
    local db
    before_each(function()
      db = assert(sqlite.open(path))
      assert(db:exec("CREATE TABLE t (k TEXT PRIMARY KEY, v)"))
    end)
    after_each(function() db:close() end)

    local function keys()
      local out = {}
      for _, row in ipairs(assert(db:query("SELECT k FROM t ORDER BY k"))) do out[#out + 1] = row.k end
      return out
    end

    it("commits when fn returns and passes its results on", function()
      local a, b = db:transaction(function(d, x)
        assert.is_true(d:in_transaction())
        assert(d:run("INSERT INTO t VALUES ('a', ?)", { x }))
        return "done", 2
      end, 42)
      assert.equal("done", a)
      assert.equal(2, b)
      assert.is_false(db:in_transaction())
      assert.same({ "a" }, keys())
      -- visible to another connection: committed
      local other <close> = assert(sqlite.open(path))
      assert.equal(42, other:first("SELECT v FROM t WHERE k = 'a'").v)
    end)

    it("rolls back and re-raises the same error when fn raises", function()
      local boom = setmetatable({}, { __tostring = function() return "boom" end })
      local ok, err = pcall(db.transaction, db, function(d)
        assert(d:run("INSERT INTO t VALUES ('x', 1)"))
        error(boom)
      end)
      assert.is_false(ok)
      assert.equal(boom, err)
      assert.is_false(db:in_transaction())
      assert.same({}, keys())
    end)

    it("rolls back and returns nil, err when fn returns nil, err", function()
      local ok, err = db:transaction(function(d)
        assert(d:run("INSERT INTO t VALUES ('x', 1)"))
        return d:run("INSERT INTO t VALUES ('x', 2)") -- SQLITE_CONSTRAINT
      end)
      assert.is_nil(ok)
      assert.equal("SQLITE_CONSTRAINT", err.condition)
      assert.same({}, keys())
    end)

    it("nests with savepoints: an inner failure undoes only the inner part", function()
      assert(db:transaction(function(d)
        assert(d:run("INSERT INTO t VALUES ('outer', 1)"))
        local ok = pcall(d.transaction, d, function()
          assert(d:run("INSERT INTO t VALUES ('inner', 1)"))
          error("inner fails")
        end)
        assert.is_false(ok)
        assert(d:transaction(function()
          return d:run("INSERT INTO t VALUES ('inner2', 1)")
        end))
        return true
      end))
      assert.same({ "inner2", "outer" }, keys())
      -- an outer failure undoes the committed inner parts too
      pcall(db.transaction, db, function(d)
        assert(d:transaction(function() return d:run("INSERT INTO t VALUES ('lost', 1)") end))
        error("outer fails")
      end)
      assert.same({ "inner2", "outer" }, keys())
    end)

    it("returns SQLITE_BUSY when another connection holds the write lock", function()
      local other <close> = assert(sqlite.open(path, { busy_timeout = 0 }))
      assert(db:exec("BEGIN IMMEDIATE"))
      local ok, err = other:transaction(function() error("not reached") end)
      assert.is_nil(ok)
      assert.equal("SQLITE_BUSY", err.condition)
      assert(db:exec("COMMIT"))
      assert.equal(1, other:transaction(function() return 1 end))
    end)

    it("refuses a second task's transaction while the first one waits", function()
      local inside = require("sacm.sync").event()
      local release = require("sacm.sync").event()
      local first = task.spawn(function()
        return db:transaction(function(d)
          assert(d:run("INSERT INTO t VALUES ('first', 1)"))
          inside:set()
          release:wait()
          return true
        end)
      end)
      inside:wait()
      assert.has_error(function() db:transaction(function() end) end,
        "db:transaction: another task has a transaction open on this database (a transaction must not wait for anything)")
      release:set()
      assert.is_true(first:await())
      assert.same({ "first" }, keys())
      assert.equal(1, db:transaction(function() return 1 end)) -- free again
    end)
  end)

  describe("migrate", function()
    local function applied(db)
      local out = {}
      for _, row in ipairs(assert(db:query("SELECT step FROM log ORDER BY seq"))) do out[#out + 1] = row.step end
      return out
    end

    local migrations = {
      "CREATE TABLE log (seq INTEGER PRIMARY KEY, step INTEGER); INSERT INTO log (step) VALUES (1);",
      "INSERT INTO log (step) VALUES (2); CREATE TABLE posture (id INTEGER PRIMARY KEY, endpoint TEXT);",
      function(db)
        assert(db:run("INSERT INTO log (step) VALUES (3)"))
        return db:exec("CREATE INDEX posture_endpoint ON posture (endpoint)")
      end,
    }

    it("applies missing migrations once each, in order, across reopenings", function()
      local db = assert(sqlite.open(path))
      assert.equal(2, db:migrate({ migrations[1], migrations[2] }))
      assert.equal(2, db:migrate({ migrations[1], migrations[2] }))
      assert.same({ 1, 2 }, applied(db))
      db:close()
      db = assert(sqlite.open(path))
      assert.equal(3, db:migrate(migrations))
      assert.same({ 1, 2, 3 }, applied(db))
      assert.equal(3, db:first("PRAGMA user_version").user_version)
      assert.truthy(db:first("SELECT name FROM sqlite_master WHERE name = 'posture_endpoint'"))
      db:close()
    end)

    it("rolls a failing migration back whole and keeps the ones before it", function()
      local db <close> = assert(sqlite.open(path))
      local list = { migrations[1], "INSERT INTO log (step) VALUES (2); INSERT INTO nowhere VALUES (1);", migrations[3] }
      local v, err = db:migrate(list)
      assert.is_nil(v)
      assert.equal(2, err.migration)
      assert.equal("no such table: nowhere", err.text)
      assert.same({ 1 }, applied(db))
      assert.equal(1, db:first("PRAGMA user_version").user_version)
    end)

    it("refuses a database newer than the migrations it is given", function()
      local db <close> = assert(sqlite.open(path))
      assert(db:migrate(migrations))
      local v, err = db:migrate({ migrations[1] })
      assert.is_nil(v)
      assert.equal("schema-too-new", err.condition)
      assert.equal(3, err.version)
      assert.has_error(function() db:migrate({ 42 }) end,
        "db:migrate: migration 1 must be SQL text or a function, got number")
    end)
  end)

  describe("durability", function()
    it("keeps every id a killed process reported as committed", function()
      local script = dir .. "/writer.lua"
      assert(fs.write(script, [[
        local sqlite = require "sacm.sqlite"
        local db = assert(sqlite.open(arg[1]))
        assert(db:migrate({ "CREATE TABLE ids (id INTEGER PRIMARY KEY, note TEXT NOT NULL)" }))
        local i = 0
        while true do
          i = i + 1
          local id
          if i % 2 == 0 then
            id = select(2, assert(db:run("INSERT INTO ids (note) VALUES (?)", { "autocommit " .. i })))
          else
            id = assert(db:transaction(function(d)
              assert(d:run("INSERT INTO ids (note) VALUES (?)", { "batch " .. i }))
              return select(2, assert(d:run("INSERT INTO ids (note) VALUES (?)", { "batch " .. i })))
            end))
          end
          io.stdout:write(id, "\n")
          io.stdout:flush()
        end
      ]]))
      local done = require("sacm.sync").event()
      local result
      local p = assert(proc_core.spawn({
        file = BIN, args = { BIN, script, path }, max_output = 64 * 1024 * 1024,
      }, function(r) result = r; done:set() end))

      -- wait until the writer is well into its stream, reading the database as it grows
      local deadline = time.monotonic() + 60
      local reader
      while true do
        assert(time.monotonic() < deadline, "the writer did not get going")
        assert.is_nil(result, "the writer exited on its own")
        if not reader and fs.exists(path) then reader = assert(sqlite.open(path, { create = false })) end
        local row = reader and reader:first("SELECT count(*) AS n FROM ids")
        if row and row.n >= 3000 then break end
        task.sleep(0.01)
      end
      p:kill("SIGKILL")
      done:wait()
      p:close()
      assert.equal(9, result.signal)
      reader:close()

      local db <close> = assert(sqlite.open(path))
      local reported = 0
      for line in result.stdout:gmatch("([^\n]*)\n") do
        local id = assert(math.tointeger(tonumber(line)), line)
        assert(db:first("SELECT id FROM ids WHERE id = ?", { id }), "committed id " .. id .. " is missing")
        reported = reported + 1
      end
      assert.is_true(reported >= 1500)
      -- the database may hold a commit whose report the kill cut off, never less
      local n = db:first("SELECT count(*) AS n FROM ids").n
      assert.is_true(n >= reported)
      assert.equal("ok", db:first("PRAGMA integrity_check").integrity_check)
    end)
  end)
end)
