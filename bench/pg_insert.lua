-- Pipelined inserts through sacm.pg into a private PostgreSQL 15 (spec/support/postgres.lua), TCP
-- on loopback, fsync off: rows/s for one pipeline of N inserts, N inserts from N tasks at once
-- (pipelined by the connection), and N inserts one at a time. Not part of `make bench` (no
-- reference to compare against yet); run it by hand:
--   SACMRUN_PATH='spec/?.lua' ./sacmrun bench/pg_insert.lua [N] [rounds]
local pg = require "sacm.pg"
local task = require "sacm.task"
local time = require "sacm.time"
local postgres = require "support.postgres"

local N = tonumber(arg and arg[1]) or 2000
local ROUNDS = tonumber(arg and arg[2]) or 5

local server = postgres.start()
local ok, err = pcall(function()
  local db <close> = assert(pg.connect(server:conninfo()))
  assert(db:exec("CREATE TABLE bench (id int PRIMARY KEY, endpoint text, data bytea)"))
  local payload = pg.bytea(string.rep("x", 200))
  local median = dofile("bench/lib/stats.lua").median
  local function measure(name, fn)
    local rates = {}
    for r = 1, ROUNDS do
      assert(db:run("TRUNCATE bench"))
      local t0 = time.monotonic()
      fn(r)
      rates[r] = N / (time.monotonic() - t0)
      assert(db:first("SELECT count(*) AS n FROM bench").n == N)
    end
    print(("%-28s median %7.0f rows/s  (min %.0f, max %.0f, %d rounds of %d)"):format(name, median(rates),
      math.min(table.unpack(rates)), math.max(table.unpack(rates)), ROUNDS, N))
  end
  measure("one pipeline, one sync", function()
    local stmts = {}
    for i = 1, N do stmts[i] = { "INSERT INTO bench VALUES ($1, $2, $3)", { i, "ep" .. i, payload } } end
    assert(db:pipeline(stmts))
  end)
  measure("N tasks at once", function()
    local jobs = {}
    for i = 1, N do
      jobs[i] = task.spawn(function() return assert(db:run("INSERT INTO bench VALUES ($1, $2, $3)", { i, "ep" .. i, payload })) end)
    end
    for _, r in ipairs(task.all(jobs)) do assert(r.ok, r.err) end
  end)
  measure("one at a time", function()
    for i = 1, N do assert(db:run("INSERT INTO bench VALUES ($1, $2, $3)", { i, "ep" .. i, payload })) end
  end)
end)
server:stop()
if not ok then error(err, 0) end
