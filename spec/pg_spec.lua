-- sacm.pg against a real, private PostgreSQL 15 (spec/support/postgres.lua): connecting, values
-- both ways, errors with their SQLSTATE, transactions, pipelining, LISTEN/NOTIFY, the server
-- going away under a query, and tasks cancelled while they wait.
local pg = require "sacm.pg"
local task = require "sacm.task"
local time = require "sacm.time"
local h = require "support.harness"
local postgres = require "support.postgres"

local function all_bytes()
  local t = {}
  for i = 0, 255 do t[#t + 1] = string.char(i) end
  return table.concat(t):rep(2)
end

describe("sacm.pg #e2e", function()
  local server

  lazy_setup(function()
    server = postgres.start()
  end)

  lazy_teardown(function()
    if server then server:stop() end
  end)

  local function connect(dbname)
    return assert(pg.connect(server:conninfo(dbname)))
  end

  -- how many client backends the server has (other than the asking one)
  local function backends(db)
    return db:first("SELECT count(*) AS n FROM pg_stat_activity WHERE backend_type = 'client backend' "
      .. "AND pid <> pg_backend_pid()").n
  end

  describe("connect", function()
    it("connects from options or a URL, without blocking the loop", function()
      local ticks = 0
      local ticker = task.spawn(function() while true do task.sleep(0.001); ticks = ticks + 1 end end)
      local db <close> = connect()
      assert.is_true(db:is_open())
      assert.matches("^pg%.Connection %(127%.0%.0%.1:%d+ postgres, pid %d+%)$", tostring(db))
      assert.is_true(db:backend_pid() > 0)
      assert.is_true(db:server_version() >= 150000)
      local other <close> = assert(pg.connect(server:url(), { connect_timeout = 5 }))
      assert.equal("sacm", other:first("SELECT current_user AS u").u)
      ticker:cancel()
      assert.is_true(ticks > 0)
    end)

    it("fails with connection-failed when nothing listens, and with timeout when nobody answers", function()
      local port = h.pick_port({ [server.port] = true })
      local db, err = pg.connect({ host = "127.0.0.1", port = port, user = "sacm", dbname = "postgres" })
      assert.is_nil(db)
      assert.equal("connection-failed", err.condition)
      assert.equal("08006", err.sqlstate)
      assert.matches("Connection refused", err.text)

      -- a stopped server still accepts TCP connections (the kernel does), but never answers
      server:pause()
      local t0 = time.monotonic()
      db, err = pg.connect(server:url(), { connect_timeout = 0.3 })
      server:resume()
      assert.is_nil(db)
      assert.equal("timeout", err.condition)
      assert.is_true(time.monotonic() - t0 < 2)
    end)

    it("raises on bad arguments before acquiring anything", function()
      assert.has_error(function() pg.connect(42) end,
        "pg.connect: expects a connection string or a table of options, got number")
      assert.has_error(function() pg.connect({ hots = "x" }) end, 'pg.connect: unknown option "hots"')
      assert.has_error(function() pg.connect("host=x", { timeout = 1 }) end)
      assert.has_error(function() pg.connect({ host = "x", connect_timeout = -1 }) end,
        "pg.connect: connect_timeout must be a positive number of seconds")
      assert.has_error(function() pg.connect("host=x\0") end)
    end)

    it("reports a malformed connection string as connection-failed", function()
      local db, err = pg.connect("host=127.0.0.1 nosuchkey=1")
      assert.is_nil(db)
      assert.equal("connection-failed", err.condition)
      assert.matches("nosuchkey", err.text)
    end)
  end)

  describe("values", function()
    local db
    lazy_setup(function() db = connect() end)
    lazy_teardown(function() db:close() end)

    it("types results by OID: integers, floats, numeric, booleans, text, bytea; NULL is absent", function()
      local row = assert(db:first([[SELECT 1::int2 AS i2, (-2147483648)::int4 AS i4,
        9223372036854775807::int8 AS i8, 0.5::float4 AS f4, 2.25::float8 AS f8, 1.5::numeric AS num,
        'Infinity'::float8 AS inf, 'NaN'::float8 AS nan, true AS t, false AS f, 'héllo'::text AS s,
        '\x00ff'::bytea AS b, NULL::int AS n, 'a'::varchar AS v, '2026-01-02'::date AS d]]))
      assert.equal(1, row.i2); assert.equal("integer", math.type(row.i2))
      assert.equal(-2147483648, row.i4)
      assert.equal(math.maxinteger, row.i8); assert.equal("integer", math.type(row.i8))
      assert.equal(0.5, row.f4); assert.equal("float", math.type(row.f4))
      assert.equal(2.25, row.f8)
      assert.equal(1.5, row.num); assert.equal("float", math.type(row.num))
      assert.equal(math.huge, row.inf)
      assert.is_true(row.nan ~= row.nan)
      assert.is_true(row.t); assert.is_false(row.f)
      assert.equal("héllo", row.s)
      assert.equal("\0\255", row.b)
      assert.is_nil(row.n)
      assert.equal("a", row.v)
      assert.equal("2026-01-02", row.d) -- other types as the server's text
    end)

    it("sends Lua values as parameters and reads them back unchanged", function()
      local bytes = all_bytes()
      local row = assert(db:first([[SELECT $1::int8 AS i, $2::float8 AS f, $3::bool AS b, $4::text AS s,
        $5::bytea AS y, $6::int AS n, $7::float8 AS inf, $8::text AS last]],
        { math.mininteger, 0.1, false, "it's \"quoted\" ünïcode", pg.bytea(bytes), nil, -math.huge, "end", n = 8 }))
      assert.equal(math.mininteger, row.i)
      assert.equal(0.1, row.f)
      assert.is_false(row.b)
      assert.equal("it's \"quoted\" ünïcode", row.s)
      assert.equal(bytes, row.y)
      assert.is_nil(row.n)
      assert.equal(-math.huge, row.inf)
      assert.equal("end", row.last)
      -- a hole in the list is a NULL too, without n
      row = assert(db:first("SELECT $1::int AS a, $2::int AS b, $3::int AS c", { 1, nil, 3 }))
      assert.same({ a = 1, c = 3 }, row)
    end)

    it("returns rows as a list with columns, changes and command", function()
      local rows = assert(db:query("SELECT g AS n, g * 2 AS twice FROM generate_series(1, 3) g"))
      assert.same({ { n = 1, twice = 2 }, { n = 2, twice = 4 }, { n = 3, twice = 6 } }, { table.unpack(rows) })
      assert.same({ "n", "twice" }, rows.columns)
      assert.equal("SELECT 3", rows.command)
      assert.equal(3, rows.changes)
      assert.same({}, { table.unpack(assert(db:query("SELECT 1 WHERE false"))) })
      assert.is_nil(db:first("SELECT 1 WHERE false"))
    end)

    it("raises for values text cannot carry", function()
      assert.has_error(function() db:query("SELECT $1", { "a\0b" }) end)
      assert.has_error(function() db:query("SELECT $1", { {} }) end)
      assert.has_error(function() db:query("SELECT $1", { print }) end)
      assert.has_error(function() db:query("SELECT 1", 5) end, "db:query: params must be a table, got number")
      assert.has_error(function() db:query(5) end, "db:query: sql must be a string, got number")
      assert.has_error(function() db:pipeline({ { "SELECT 1" }, { 2 } }) end,
        "db:pipeline: statement 2 must be {sql [, params]}")
      -- and the connection is still in step afterwards
      assert.equal(7, db:first("SELECT 7 AS x").x)
    end)
  end)

  describe("errors", function()
    local db
    lazy_setup(function()
      db = connect()
      assert(db:exec([[CREATE TABLE uniq (id int PRIMARY KEY, name text NOT NULL UNIQUE);
                       INSERT INTO uniq VALUES (1, 'one')]]))
    end)
    lazy_teardown(function()
      assert(db:exec("DROP TABLE uniq"))
      db:close()
    end)

    it("names a syntax error 42601 with the server's message and position", function()
      local rows, err = db:query("SELECT FROM WHERE")
      assert.is_nil(rows)
      assert.equal("42601", err.sqlstate)
      assert.equal("syntax_error", err.condition)
      assert.equal('syntax error at or near "WHERE"', err.text)
      assert.equal("ERROR", err.severity)
      assert.equal(13, err.position)
      assert.equal('syntax_error: syntax error at or near "WHERE"', tostring(err))
    end)

    it("names a unique violation 23505 with its constraint, table and detail", function()
      local n, err = db:run("INSERT INTO uniq VALUES ($1, $2)", { 2, "one" })
      assert.is_nil(n)
      assert.equal("23505", err.sqlstate)
      assert.equal("unique_violation", err.condition)
      assert.equal("uniq_name_key", err.constraint)
      assert.equal("uniq", err.table)
      assert.equal("Key (name)=(one) already exists.", err.detail)
      local _, nerr = db:run("INSERT INTO uniq (id) VALUES (3)")
      assert.equal("not_null_violation", nerr.condition)
      assert.equal("name", nerr.column)
      local _, terr = db:query("SELECT * FROM nowhere")
      assert.equal("42P01", terr.sqlstate)
      assert.equal("undefined_table", terr.condition)
      local _, derr = db:query("SELECT 1 / $1::int", { 0 })
      assert.equal("division_by_zero", derr.condition)
    end)

    it("stops a script at its first error", function()
      local ok, err = db:exec("INSERT INTO uniq VALUES (10, 'ten'); SELEC; INSERT INTO uniq VALUES (11, 'eleven')")
      assert.is_nil(ok)
      assert.equal("syntax_error", err.condition)
      -- a script is one implicit transaction: the first insert is gone too
      assert.is_nil(db:first("SELECT id FROM uniq WHERE id IN (10, 11)"))
    end)
  end)

  describe("transactions", function()
    local db
    lazy_setup(function()
      db = connect()
      assert(db:exec("CREATE TABLE tx (id int PRIMARY KEY, who text)"))
    end)
    lazy_teardown(function()
      assert(db:exec("DROP TABLE tx"))
      db:close()
    end)
    before_each(function() assert(db:run("DELETE FROM tx")) end)

    local function ids()
      local out = {}
      for _, r in ipairs(assert(db:query("SELECT id FROM tx ORDER BY id"))) do out[#out + 1] = r.id end
      return out
    end

    it("commits when fn returns and passes its results on", function()
      local a, b = db:transaction(function(conn, x)
        assert(conn:run("INSERT INTO tx VALUES ($1, 'a')", { x }))
        assert(conn:run("INSERT INTO tx VALUES ($1, 'a')", { x + 1 }))
        return "done", x
      end, 1)
      assert.equal("done", a); assert.equal(1, b)
      assert.same({ 1, 2 }, ids())
    end)

    it("rolls back and re-raises when fn raises, and on nil, err", function()
      local boom = setmetatable({}, { __tostring = function() return "boom" end })
      local ok, e = pcall(db.transaction, db, function()
        assert(db:run("INSERT INTO tx VALUES (1, 'a')"))
        error(boom)
      end)
      assert.is_false(ok); assert.equal(boom, e)
      local r, err = db:transaction(function()
        assert(db:run("INSERT INTO tx VALUES (2, 'a')"))
        return db:run("INSERT INTO tx VALUES (2, 'a')")
      end)
      assert.is_nil(r); assert.equal("unique_violation", err.condition)
      assert.same({}, ids())
      assert.equal("idle", db:transaction_status())
    end)

    it("nests with savepoints: an inner failure undoes only the inner part", function()
      assert(db:transaction(function()
        assert(db:run("INSERT INTO tx VALUES (1, 'outer')"))
        local r, err = db:transaction(function()
          assert(db:run("INSERT INTO tx VALUES (2, 'inner')"))
          return db:run("INSERT INTO tx VALUES (1, 'dup')")
        end)
        assert.is_nil(r); assert.equal("unique_violation", err.condition)
        assert(db:run("INSERT INTO tx VALUES (3, 'outer')"))
        return true
      end))
      assert.same({ 1, 3 }, ids())
    end)

    it("does not commit a transaction whose failed statement was ignored", function()
      local r, err = db:transaction(function()
        assert(db:run("INSERT INTO tx VALUES (1, 'a')"))
        db:run("INSERT INTO tx VALUES (1, 'a')") -- fails; the error is dropped
        return true
      end)
      assert.is_nil(r)
      assert.equal("in_failed_sql_transaction", err.condition)
      assert.same({}, ids())
    end)

    it("keeps other tasks' statements out of an open transaction, even while fn waits", function()
      local order = {}
      local other
      local r, err = db:transaction(function()
        assert(db:run("INSERT INTO tx VALUES (1, 'tx')"))
        other = task.spawn(function()
          assert(db:run("INSERT INTO tx VALUES (2, 'other')"))
          order[#order + 1] = "other"
        end)
        task.sleep(0.05) -- the other task runs now, and must wait for us
        order[#order + 1] = "tx"
        return nil, "changed my mind"
      end)
      assert.is_nil(r); assert.equal("changed my mind", err)
      other:await(5)
      assert.equal("done", other.status)
      assert.same({ "tx", "other" }, order)
      assert.same({ 2 }, ids()) -- the other insert was not rolled back with ours
    end)

    it("rolls back when the task is cancelled inside fn, and the connection goes on", function()
      local t = task.spawn(function()
        db:transaction(function()
          assert(db:run("INSERT INTO tx VALUES (1, 'a')"))
          task.sleep(10)
        end)
      end)
      task.sleep(0.05)
      t:cancel()
      local _, err = t:await(5)
      assert.equal("cancelled", err.condition)
      assert.same({}, ids())
      assert.equal("idle", db:transaction_status())
    end)
  end)

  describe("pipelining", function()
    local db
    lazy_setup(function()
      db = connect()
      assert(db:exec("CREATE TABLE pipe (id int PRIMARY KEY, v text)"))
    end)
    lazy_teardown(function()
      assert(db:exec("DROP TABLE pipe"))
      db:close()
    end)
    before_each(function() assert(db:run("DELETE FROM pipe")) end)

    it("sends 1000 inserts at once and waits once", function()
      local stmts = {}
      for i = 1, 1000 do stmts[i] = { "INSERT INTO pipe VALUES ($1, $2)", { i, "v" .. i } } end
      local results = assert(db:pipeline(stmts))
      assert.equal(1000, #results)
      assert.equal(1, results[1000].changes)
      assert.equal(1000, db:first("SELECT count(*) AS n FROM pipe").n)
      assert.equal("v777", db:first("SELECT v FROM pipe WHERE id = 777").v)
    end)

    it("runs a pipeline all or nothing; err.index names the failing statement", function()
      local r, err = db:pipeline({
        { "INSERT INTO pipe VALUES (1, 'a')" },
        { "INSERT INTO pipe VALUES (1, 'again')" },
        { "INSERT INTO pipe VALUES (3, 'c')" },
      })
      assert.is_nil(r)
      assert.equal("unique_violation", err.condition)
      assert.equal(2, err.index)
      assert.equal(0, db:first("SELECT count(*) AS n FROM pipe").n)
    end)

    it("pipelines the statements of many tasks on one connection, each answer to its asker", function()
      local jobs = {}
      for i = 1, 200 do
        jobs[i] = task.spawn(function()
          if i % 50 == 0 then
            local _, err = db:query("SELECT 1 / 0")
            return err.condition
          end
          return db:first("SELECT $1::int * 2 AS x", { i }).x
        end)
      end
      for i, r in ipairs(task.all(jobs, 10)) do
        assert.is_true(r.ok)
        assert.equal(i % 50 == 0 and "division_by_zero" or i * 2, r.value)
      end
    end)
  end)

  describe("LISTEN/NOTIFY", function()
    it("delivers notifications between two connections, until unlisten", function()
      local listener <close> = connect()
      local notifier <close> = connect()
      local got = {}
      local arrived = require("sacm.sync").queue(10)
      assert(listener:listen("Grid Changes", function(payload, channel, pid)
        got[#got + 1] = { payload, channel, pid }
        arrived:put(true)
      end))
      assert(notifier:notify("Grid Changes", "repo-changed"))
      assert(notifier:run("NOTIFY other, 'not for us'"))
      assert(notifier:notify("Grid Changes", "second"))
      assert(arrived:get(5)); assert(arrived:get(5))
      assert.same({ "repo-changed", "Grid Changes", notifier:backend_pid() }, got[1])
      assert.equal("second", got[2][1])
      assert(listener:unlisten("Grid Changes"))
      assert(notifier:notify("Grid Changes", "third"))
      assert.is_nil(arrived:get(0.2))
      assert.equal(2, #got)
    end)
  end)

  describe("the server going away", function()
    it("fails a query cut off by a restart, then the caller reconnects", function()
      local db = connect()
      local asker = task.spawn(function() return db:query("SELECT pg_sleep(30)") end)
      task.sleep(0.1)
      local other = task.spawn(function() return db:query("SELECT 1") end) -- queued behind it
      server:restart()
      local rows, err = asker:await(10)
      assert.is_nil(rows)
      assert.is_truthy(err.condition == "admin_shutdown" or err.condition == "connection-lost", tostring(err))
      assert.is_truthy(err.sqlstate == "57P01" or err.sqlstate == "08006")
      local rows2, err2 = other:await(10)
      assert.is_nil(rows2)
      assert.equal("connection-lost", err2.condition)
      assert.is_false(db:is_open())
      local _, again = db:query("SELECT 1")
      assert.equal("connection-lost", again.condition)
      assert.equal("connection-lost", db:error().condition)
      db:close()
      local fresh <close> = connect()
      assert.equal(1, fresh:first("SELECT 1 AS x").x)
    end)

    it("notices a lost idle connection", function()
      local db <close> = connect()
      local killer <close> = connect()
      assert(killer:query("SELECT pg_terminate_backend($1)", { db:backend_pid() }))
      local deadline = time.monotonic() + 5
      -- nothing is in flight on db: the loss is found when it is next used
      local _, err
      repeat
        _, err = db:query("SELECT 1")
        if err then break end
        task.sleep(0.05)
      until time.monotonic() > deadline
      assert.is_truthy(err.condition == "admin_shutdown" or err.condition == "connection-lost", tostring(err))
    end)
  end)

  describe("cancellation and closing", function()
    it("a task cancelled mid-query leaves the connection usable", function()
      local db <close> = connect()
      local t = task.spawn(function() return db:query("SELECT pg_sleep(0.3)") end)
      task.sleep(0.05)
      t:cancel()
      local _, err = t:await(5)
      assert.equal("cancelled", err.condition)
      assert.equal(5, db:first("SELECT 5 AS x").x)
      assert.is_true(db:is_open())
    end)

    it("closing wakes the tasks waiting on the connection with closed", function()
      local db = connect()
      local t = task.spawn(function() return db:query("SELECT pg_sleep(5)") end)
      task.sleep(0.05)
      db:close()
      local rows, err = t:await(5)
      assert.is_nil(rows)
      assert.equal("closed", err.condition)
      db:close() -- idempotent
      assert.is_false(db:is_open())
      assert.has_error(function() db:query("SELECT 1") end, "db:query: attempt to use a closed postgresql connection")
    end)

    it("closing wakes a task waiting for another's transaction with closed", function()
      local db = connect()
      local started = require("sacm.sync").event()
      local holder = task.spawn(function()
        return db:transaction(function()
          started:set()
          task.sleep(5)
        end)
      end)
      assert(started:wait(5))
      local waiter = task.spawn(function() return db:query("SELECT 1") end)
      task.sleep(0.05)
      assert.is_false(waiter:done())
      db:close()
      local rows, err = waiter:await(5)
      assert.is_nil(rows)
      assert.equal("closed", err.condition)
      holder:cancel()
      holder:await(5)
    end)

    it("an idle connection does not keep the loop alive; one with a listener does", function()
      local loop = require "sacm._loop"
      local function holding()
        task.yield() -- a request's answer wakes its task before the C side has finished its turn
        local n = 0
        for _, hd in ipairs(loop.handles()) do
          if hd.type == "poll" and hd.active and hd.ref then n = n + 1 end
        end
        return n
      end
      local before = holding()
      local db <close> = connect()
      assert.equal(before, holding())
      assert(db:listen("ch", function() end))
      assert.equal(before + 1, holding())
      assert(db:unlisten("ch"))
      assert.equal(before, holding())
    end)

    it("a connection nobody holds is collected and closed", function()
      local watcher <close> = connect()
      local before = backends(watcher)
      do
        local db = connect()
        assert(db:query("SELECT 1"))
        -- counted while db is still held: once the block ends any allocation may collect it
        assert.equal(before + 1, backends(watcher))
      end
      collectgarbage(); collectgarbage()
      local deadline = time.monotonic() + 5
      while backends(watcher) > before and time.monotonic() < deadline do task.sleep(0.05) end
      assert.equal(before, backends(watcher))
    end)
  end)
end)
