-- sacm.roles.repository's storage: what it keeps, the history of changes, queries with paging,
-- and that it survives reopening, on both backends: SQLite (a file) and PostgreSQL (a private
-- server, spec/support/postgres.lua; a fresh database per test). (The grid flow and a killed
-- repository are in grid_spec.lua.)
local repository = require "sacm.roles.repository"
local payload = require "sacm.grid.payload"
local task = require "sacm.task"
local tmp = require "support.tmp"

local T0 = 1795000000

local function posture(id, kind, t, attrs, correlation)
  return payload.posture({ id = id, kind = kind, endpoint = "e1", hostname = "web1", collected = t,
    collector = "c@grid/x", correlation = correlation, data = { attributes = attrs or {}, items = {} } })
end

local function result(id, rule, value, t, correlation)
  return payload.result({ id = id, endpoint = "e1", hostname = "web1", rule_id = rule, policy_id = "p",
    policy_version = "v", result = value, severity = "high", evaluated = t, correlation = correlation })
end

-- A backend: setup/teardown for the file, new() -> the database setting of a fresh store,
-- version(db) -> its recorded schema version.
local SQLITE = {
  name = "SQLite", tag = "",
  setup = function(self) self.dir = tmp.dir("repo") end,
  teardown = function(self) tmp.remove(self.dir) end,
  new = function(self)
    self.n = (self.n or 0) + 1
    return self.dir .. "/r" .. self.n .. ".db"
  end,
  version = function(db) return db:first("PRAGMA user_version").user_version end,
}

local POSTGRES = {
  name = "PostgreSQL", tag = " #e2e",
  setup = function(self)
    self.server = require("support.postgres").start()
    self.admin = assert(require("sacm.pg").connect(self.server:conninfo()))
  end,
  teardown = function(self)
    if self.admin then self.admin:close() end
    if self.server then self.server:stop() end
  end,
  new = function(self)
    self.n = (self.n or 0) + 1
    assert(self.admin:run("CREATE DATABASE r" .. self.n))
    return self.server:url("r" .. self.n)
  end,
  version = function(db) return require("sacm.grid.store_pg").version(db) end,
}

for _, backend in ipairs({ SQLITE, POSTGRES }) do
describe("repository storage on " .. backend.name .. backend.tag, function()
  local database, repo
  lazy_setup(function() backend:setup() end)
  lazy_teardown(function() backend:teardown() end)
  before_each(function()
    database = backend:new()
    repo = assert(repository.open(database))
  end)
  after_each(function()
    repo.db:close()
  end)

  it("stores posture and results once, whatever arrives twice", function()
    assert.is_true(repo:store_posture(posture("p1", "sshd", T0, { permitrootlogin = "no" })))
    assert.is_false(repo:store_posture(posture("p1", "sshd", T0, { permitrootlogin = "no" })))
    assert.is_true(repo:store_result(result("r1", "ssh-root", "pass", T0)))
    assert.is_false(repo:store_result(result("r1", "ssh-root", "pass", T0)))
    local none, err = repo:store_posture(result("r2", "x", "pass", T0))
    assert.is_nil(none)
    assert.equal("bad-request", err.condition)
    local el = assert(repo:get("p1"))
    assert.equal("no", payload.parse_posture(el).data.attributes.permitrootlogin)
    assert.equal("item-not-found", select(2, repo:get("nope")).condition)
  end)

  it("keeps the current result and a history of changes, ignoring late older results", function()
    repo:store_result(result("r1", "ssh-root", "pass", T0))
    repo:store_result(result("r2", "ssh-root", "pass", T0 + 10))
    repo:store_result(result("r3", "ssh-root", "fail", T0 + 20))
    repo:store_result(result("r0", "ssh-root", "error", T0 - 5)) -- arrives late, is older
    local h = assert(repo:query({ type = "history" }))
    local seq = {}
    for i, row in ipairs(h.rows) do seq[i] = (row.previous or "-") .. ">" .. row.result end
    assert.same({ "->pass", "pass>fail" }, seq)
    assert.same({ fail = 1 }, repo:totals())
  end)

  it("queries by endpoint, kind, attribute, rule, result, correlation and time, with paging", function()
    for i = 1, 7 do
      repo:store_posture(posture("p" .. i, i % 2 == 0 and "sysctl" or "sshd", T0 + i,
        { ["net.ipv4.ip_forward"] = tostring(i % 2) }, i <= 3 and "c1" or nil))
      repo:store_result(result("r" .. i, "rule" .. (i % 3), i % 2 == 0 and "fail" or "pass", T0 + i, "c1"))
    end
    assert.equal(3, #assert(repo:query({ type = "posture", kind = "sysctl" })).rows)
    assert.equal(3, #assert(repo:query({ type = "posture", correlation = "c1" })).rows)
    local by_attr = assert(repo:query({ type = "posture", attribute = "net.ipv4.ip_forward" }))
    assert.equal(7, #by_attr.rows)
    assert.equal("1", by_attr.rows[1].value)
    assert.equal(3, #assert(repo:query({ type = "results", result = "fail" })).rows)
    assert.equal(2, #assert(repo:query({ type = "results", rule = "rule0" })).rows)
    assert.equal(7, #assert(repo:query({ type = "results", endpoint = "web1" })).rows)
    local t = require("sacm.time")
    local window = assert(repo:query({ type = "results", since = t.format(T0 + 2), ["until"] = t.format(T0 + 4) }))
    assert.equal(3, #window.rows)
    -- pages of 3 cover everything once, in order
    local ids, after = {}, nil
    repeat
      local page = assert(repo:query({ type = "results", max = 3, after = after }))
      for _, row in ipairs(page.rows) do ids[#ids + 1] = row.id end
      after = page.next
    until not after
    assert.same({ "r1", "r2", "r3", "r4", "r5", "r6", "r7" }, ids)
    -- filters that do not apply, and bad input, are errors, not empty pages
    assert.equal("bad-request", select(2, repo:query({ type = "posture", rule = "x" })).condition)
    assert.equal("bad-request", select(2, repo:query({ type = "results", since = "yesterday" })).condition)
    assert.equal("bad-request", select(2, repo:query({ type = "results", max = "0" })).condition)
    assert.equal("bad-request", select(2, repo:query({ type = "bogus" })).condition)
  end)

  it("prunes history older than the retention, keeping current results and the newest posture", function()
    -- rule x: pass (old), fail (old), pass (new, current); rule y: fail (old, still current)
    repo:store_result(result("x1", "x", "pass", T0))
    repo:store_result(result("x2", "x", "fail", T0 + 10))
    repo:store_result(result("x3", "x", "pass", T0 + 1000))
    repo:store_result(result("y1", "y", "fail", T0 + 20))
    for i = 1, 4 do repo:store_posture(posture("s" .. i, "sshd", T0 + i * 100, {})) end
    local removed = assert(repo:prune(T0 + 500, 1)) -- batches of one: the loop must go on
    assert.equal(2, removed.results)   -- x1, x2 (y1 is current)
    assert.equal(3, removed.posture)   -- s1..s3 (s4 is the newest sshd posture, and newer anyway)
    assert.equal(3, removed.history)   -- x: ->pass, pass>fail; y: ->fail (x's fail>pass is new)
    local left = {}
    for _, row in ipairs(assert(repo:query({ type = "results" })).rows) do left[#left + 1] = row.id end
    assert.same({ "x3", "y1" }, left)
    assert.same({ pass = 1, fail = 1 }, repo:totals())
    assert.equal(1, #assert(repo:query({ type = "posture" })).rows)
  end)

  it("backs up online into a new file, mode 0600, that opens as the same repository", function()
    if backend ~= SQLITE then return end -- sacm-backup copies the embedded database (PostgreSQL: pg_dump)
    repo:store_result(result("b1", "x", "pass", T0))
    local store = require "sacm.grid.store"
    local fs = require "sacm.fs"
    local copy_path = SQLITE.dir .. "/backup-" .. SQLITE.n .. ".db"
    assert(store.backup(database, copy_path)) -- while repo holds the database open
    assert.equal(384, assert(fs.stat(copy_path)).mode & 511)
    local copy = assert(store.open(copy_path))
    assert.equal("b1", assert(copy:query({ type = "results" })).rows[1].id)
    copy:close()
    local none, err = store.backup(database, copy_path)
    assert.is_nil(none)
    assert.matches("exists: a backup goes to a new file", tostring(err))
  end)

  it("reopens the same database without migrating again", function()
    repo:store_result(result("r1", "x", "pass", T0))
    local secret = repo.secret
    repo.db:close()
    repo = assert(repository.open(database))
    assert.equal(1, #assert(repo:query({ type = "results" })).rows)
    assert.equal(#repository.MIGRATIONS, backend.version(repo.db))
    assert.equal(secret, repo.secret)
  end)

  it("takes the same documents from two writers at once exactly once", function()
    if backend == SQLITE then return end -- one writing process per SQLite file (docs/api/sqlite.md)
    local other = assert(repository.open(database))
    local jobs = {}
    for w, store in ipairs({ repo, other }) do
      jobs[w] = task.spawn(function()
        local fresh = 0
        for i = 1, 20 do
          local stored, err = store:store_result(result("r" .. i, "rule" .. (i % 2), i % 3 == 0 and "fail" or "pass", T0 + i))
          assert(stored ~= nil, tostring(err))
          if stored then fresh = fresh + 1 end
          local p, perr = store:store_posture(posture("p" .. i, "sshd", T0 + i, { n = tostring(i) }))
          assert(p ~= nil, tostring(perr))
        end
        return fresh
      end)
    end
    local r = task.all(jobs, 30)
    assert.is_true(r[1].ok, tostring(r[1].err)); assert.is_true(r[2].ok, tostring(r[2].err))
    assert.equal(20, r[1].value + r[2].value) -- each result was new to exactly one of them
    local stats = repo:stats()
    assert.equal(20, stats.results)
    assert.equal(20, stats.posture)
    assert.equal(20, #assert(repo:query({ type = "posture", attribute = "n", max = 100 })).rows)
    -- the history as one writer would have made it
    local want, last = {}, {}
    for i = 1, 20 do
      local rule, value = "rule" .. (i % 2), i % 3 == 0 and "fail" or "pass"
      if last[rule] ~= value then want[#want + 1] = ("%s %s>%s"):format(rule, last[rule] or "-", value) end
      last[rule] = value
    end
    local got = {}
    for _, row in ipairs(assert(repo:query({ type = "history", max = 100 })).rows) do
      got[#got + 1] = ("%s %s>%s"):format(row.rule, row.previous or "-", row.result)
    end
    table.sort(want); table.sort(got)
    assert.same(want, got)
    other.db:close()
  end)
end)
end

describe("which accounts the repository lets hold which role", function()
  it("gives an account the role it is named after, by default", function()
    local may = assert(repository.role_policy(nil))
    for _, case in ipairs {
      { "collector@grid.test", "collector", true }, { "collector2@grid.test", "collector", true },
      { "collector-web1@grid.test", "collector", true }, { "evaluator.eu@grid.test", "evaluator", true },
      { "orchestrator_1@grid.test", "orchestrator", true },
      { "collector-web1@grid.test", "evaluator", false }, { "collectorx@grid.test", "collector", false },
      { "mallory@grid.test", "collector", false }, { "evaluatorcollector@grid.test", "collector", false },
      { "collector+evaluator@grid.test", "evaluator", false }, { "grid.test", "collector", false },
    } do
      assert.equal(case[3], may(case[1], case[2]), case[1] .. " as " .. case[2])
    end
  end)

  it("takes JIDs, domains and patterns from the roles configuration instead", function()
    local may = assert(repository.role_policy({ collector = { "web-*@grid.test", "fleet.grid.test" },
      evaluator = { "judge@grid.test" } }))
    assert.is_true(may("web-1@grid.test", "collector"))
    assert.is_true(may("anyone@fleet.grid.test", "collector"))
    assert.is_false(may("web-1@other.test", "collector"))
    assert.is_false(may("collector@grid.test", "collector")) -- the name no longer counts
    assert.is_true(may("judge@grid.test", "evaluator"))
    assert.is_false(may("judge@grid.test", "orchestrator")) -- a role not configured: nobody holds it
    assert.is_false(may("web-1.x@grid.test", "evaluator"))
    local ok, err = repository.role_policy({ auditor = { "a@grid.test" } })
    assert.is_nil(ok)
    assert.equal("roles: 'auditor' is not a grid role; say collector, evaluator or orchestrator", err.text)
  end)

  it("binds endpoints on first use, or takes posture only of endpoints bound ahead", function()
    local fs = require "sacm.fs"
    local dir = tmp.dir("binding")
    -- (and the database is its owner's alone: 0600, in the 0700 directories made for it)
    local s = assert(repository.open(dir .. "/lib/sacm/b.db"))
    assert.equal(tonumber("600", 8), assert(fs.stat(dir .. "/lib/sacm/b.db")).mode)
    assert.equal(tonumber("700", 8), assert(fs.stat(dir .. "/lib")).mode)
    assert.equal(tonumber("700", 8), assert(fs.stat(dir .. "/lib/sacm")).mode)
    local function set(endpoint, id)
      local p = payload.posture({ id = id .. "-p", kind = "os", endpoint = endpoint, collected = T0,
        collector = "collector-a@grid.test/x", data = { attributes = {}, items = {} } })
      return assert(payload.parse_posture_set(payload.posture_set({ id = id, endpoint = endpoint,
        collector = "collector-a@grid.test/x", postures = { p } })))
    end
    assert(s:put_posture_set(set("e1", "s1"), "collector-a@grid.test/x", "collector-a@grid.test"))
    assert.equal("collector-a@grid.test", s:endpoint_owner("e1"))
    s.bind_first_use = false -- as endpoint_binding = "configured" sets it
    local ok, err = s:put_posture_set(set("e2", "s2"), "collector-a@grid.test/x", "collector-a@grid.test")
    assert.is_nil(ok)
    assert.equal("forbidden", err.condition)
    assert.equal("endpoint 'e2' is bound to no collector: this repository takes posture only of endpoints bound ahead "
      .. "(its endpoints configuration)", err.text)
    assert.is_nil(s:endpoint_owner("e2"))
    assert(s:bind_endpoint("e2", "collector-a@grid.test"))
    assert(s:put_posture_set(set("e2", "s3"), "collector-a@grid.test/x", "collector-a@grid.test"))
    s:close()
    tmp.remove(dir)
  end)

  it("refuses an endpoint_binding it does not know before it opens anything", function()
    local r, err = repository.start({ database = "/nonexistent/never.db", endpoint_binding = "tofu" })
    assert.is_nil(r)
    assert.equal("bad-config", err.condition)
    assert.matches("endpoint_binding is 'tofu': say \"first%-use\"", err.text)
  end)
end)
