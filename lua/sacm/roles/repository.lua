--- sacm.roles.repository: keeps the grid's posture and results in SQLite and serves them back.
--
--   local repository = require "sacm.roles.repository"
--   local r = assert(repository.start{ jid = ..., password = ..., cafile = ..., database = "grid.db",
--                                      peers = { "orchestrator@grid.example" } })
--
-- It subscribes to the posture and results nodes and stores every item in one committed
-- transaction when it arrives (WAL, synchronous=FULL: what it stored survives a crash). On start it
-- also reads the items the nodes still hold, so what was published while it was down is not lost
-- (ids make this idempotent). For every (endpoint, rule) it keeps the current result and a history
-- of changes. It answers the query, get and status commands of docs/protocol.md.
local sqlite = require "sacm.sqlite"
local xml = require "sacm.xml"
local member = require "sacm.grid.member"
local proto = require "sacm.grid.protocol"
local payload = require "sacm.grid.payload"
local time = require "sacm.time"
local errors = require "sacm.error"

local M = {}
local log = require("sacm.log").new("repository")

-- Schema versions, applied in order through PRAGMA user_version (sacm.sqlite's migrate).
M.MIGRATIONS = {
  [[
  CREATE TABLE posture (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    endpoint TEXT NOT NULL,
    hostname TEXT,
    kind TEXT NOT NULL,
    collector TEXT,
    correlation TEXT,
    collected REAL NOT NULL,
    received REAL NOT NULL,
    status TEXT NOT NULL,
    xml TEXT NOT NULL
  );
  CREATE INDEX posture_by_endpoint ON posture (endpoint, kind, collected);
  CREATE INDEX posture_by_kind ON posture (kind, collected);
  CREATE INDEX posture_by_correlation ON posture (correlation);
  CREATE INDEX posture_by_time ON posture (collected);
  -- single-valued attributes, for queries by attribute name and value
  CREATE TABLE posture_attribute (
    posture INTEGER NOT NULL REFERENCES posture (seq) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value TEXT
  );
  CREATE INDEX posture_attribute_by_name ON posture_attribute (name, value);
  CREATE INDEX posture_attribute_by_posture ON posture_attribute (posture);
  CREATE TABLE result (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    endpoint TEXT NOT NULL,
    hostname TEXT,
    rule TEXT NOT NULL,
    policy TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    result TEXT NOT NULL,
    severity TEXT,
    evaluator TEXT,
    correlation TEXT,
    evaluated REAL NOT NULL,
    received REAL NOT NULL,
    xml TEXT NOT NULL
  );
  CREATE INDEX result_by_endpoint ON result (endpoint, rule, evaluated);
  CREATE INDEX result_by_rule ON result (rule, result);
  CREATE INDEX result_by_policy ON result (policy, policy_version);
  CREATE INDEX result_by_correlation ON result (correlation);
  CREATE INDEX result_by_time ON result (evaluated);
  -- the newest result of each rule on each endpoint, and every change of it
  CREATE TABLE current_result (
    endpoint TEXT NOT NULL,
    rule TEXT NOT NULL,
    result TEXT NOT NULL,
    result_id TEXT NOT NULL,
    evaluated REAL NOT NULL,
    PRIMARY KEY (endpoint, rule)
  );
  CREATE TABLE history (
    seq INTEGER PRIMARY KEY,
    endpoint TEXT NOT NULL,
    rule TEXT NOT NULL,
    policy TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    previous TEXT,
    result TEXT NOT NULL,
    result_id TEXT NOT NULL,
    at REAL NOT NULL
  );
  CREATE INDEX history_by_endpoint ON history (endpoint, rule, at);
  CREATE INDEX history_by_time ON history (at);
  ]],
}

local Repository = {}
Repository.__index = Repository

--- r:store_posture(element) -> true (stored), false (already had it) | nil, err (not posture)
function Repository:store_posture(el)
  local p, err = payload.parse_posture(el)
  if not p then return nil, err end
  local text = xml.serialize(el)
  local stored = false
  local ok, terr, terr2 = pcall(self.db.transaction, self.db, function(db)
    local changes, seq = db:run([[INSERT OR IGNORE INTO posture (id, endpoint, hostname, kind, collector, correlation,
      collected, received, status, xml) VALUES (:id, :endpoint, :hostname, :kind, :collector, :correlation,
      :collected, :received, :status, :xml)]], {
      id = p.id, endpoint = p.endpoint, hostname = p.hostname, kind = p.kind, collector = p.collector,
      correlation = p.correlation, collected = p.collected, received = time.now(),
      status = p.error and "error" or "ok", xml = text })
    if not changes then return nil, seq end
    if changes == 0 then return true end
    stored = true
    for name, value in pairs(p.data and p.data.attributes or {}) do
      local ok, aerr = db:run("INSERT INTO posture_attribute (posture, name, value) VALUES (?, ?, ?)",
        { seq, name, tostring(value) })
      if not ok then return nil, aerr end
    end
    return true
  end)
  if not ok or not terr then return nil, errors.new("internal-server-error", "storing posture failed: " .. tostring(ok and terr2 or terr)) end
  if stored then self.counts.posture = self.counts.posture + 1 end
  return stored
end

--- r:store_result(element) -> true (stored), false (already had it) | nil, err (not a result)
function Repository:store_result(el)
  local r, err = payload.parse_result(el)
  if not r then return nil, err end
  local text = xml.serialize(el)
  local stored = false
  local ok, terr, terr2 = pcall(self.db.transaction, self.db, function(db)
    local changes, ierr = db:run([[INSERT OR IGNORE INTO result (id, endpoint, hostname, rule, policy, policy_version,
      result, severity, evaluator, correlation, evaluated, received, xml) VALUES (:id, :endpoint, :hostname, :rule,
      :policy, :policy_version, :result, :severity, :evaluator, :correlation, :evaluated, :received, :xml)]], {
      id = r.id, endpoint = r.endpoint, hostname = r.hostname, rule = r.rule_id, policy = r.policy_id,
      policy_version = r.policy_version, result = r.result, severity = r.severity, evaluator = r.evaluator,
      correlation = r.correlation, evaluated = r.evaluated, received = time.now(), xml = text })
    if not changes then return nil, ierr end
    if changes == 0 then return true end
    stored = true
    local cur = db:first("SELECT result, evaluated FROM current_result WHERE endpoint = ? AND rule = ?",
      { r.endpoint, r.rule_id })
    if cur and cur.evaluated > r.evaluated then return true end -- an older result arriving late
    if not cur or cur.result ~= r.result then
      assert(db:run([[INSERT INTO history (endpoint, rule, policy, policy_version, previous, result, result_id, at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?)]], { r.endpoint, r.rule_id, r.policy_id, r.policy_version,
        cur and cur.result or nil, r.result, r.id, r.evaluated }))
    end
    assert(db:run([[INSERT INTO current_result (endpoint, rule, result, result_id, evaluated) VALUES (?, ?, ?, ?, ?)
      ON CONFLICT (endpoint, rule) DO UPDATE SET result = excluded.result, result_id = excluded.result_id,
      evaluated = excluded.evaluated]], { r.endpoint, r.rule_id, r.result, r.id, r.evaluated }))
    return true
  end)
  if not ok or not terr then return nil, errors.new("internal-server-error", "storing a result failed: " .. tostring(ok and terr2 or terr)) end
  if stored then self.counts.results = self.counts.results + 1 end
  return stored
end

local function store_item(self, kind, item)
  local ok, err
  if kind == "posture" then ok, err = self:store_posture(item.payload) else ok, err = self:store_result(item.payload) end
  if ok == nil then log.warn("ignored %s item %s: %s", kind, tostring(item.id), tostring(err)) end
  return ok
end

-- Items published while we were away are still on the nodes (bounded by max_items).
local function catch_up(self, kind)
  local items, err = self.member.pubsub:items(proto.NODE[kind])
  if not items then
    log.warn("could not read the %s node to catch up: %s", kind, tostring(err))
    return 0
  end
  local n = 0
  for _, item in ipairs(items) do
    if store_item(self, kind, item) then n = n + 1 end
  end
  if n > 0 then log.info("caught up %d %s item(s) published while the repository was away", n, kind) end
  return n
end

------------------------------------------------------------------------------------ queries

local COLUMNS = {
  posture = { "id", "endpoint", "hostname", "kind", "collected", "collector", "correlation", "status" },
  results = { "id", "endpoint", "hostname", "rule", "policy", "policy_version", "result", "severity",
    "evaluated", "evaluator", "correlation" },
  history = { "endpoint", "rule", "policy", "policy_version", "previous", "result", "result_id", "at" },
}
local TIME_COLUMN = { posture = "collected", results = "evaluated", history = "at" }
local TABLE = { posture = "posture", results = "result", history = "history" }

local function epoch(s, what)
  if s == nil or s == "" then return nil end
  local t = time.parse(s)
  if not t then error(errors.new("bad-request", what .. " is not an XEP-0082 date-time: " .. s), 0) end
  return t
end

--- r:query(q) -> {rows = {...}, next = cursor or nil, columns = {...}} | nil, err
-- q: type ("posture" | "results" | "history"), endpoint (id or hostname), kind, attribute (posture
-- with that single-valued attribute; its value is returned), rule, policy, result, correlation,
-- since, until (XEP-0082), max (page size), after (the cursor of the previous page; oldest
-- first). With before (a cursor) or newest = true the page runs newest first, from just below the
-- cursor or from the newest row, and next continues towards older rows. page.newest and
-- page.oldest are the cursors of the page's own first and last rows by age (ROLIE feeds page both
-- ways with them).
function Repository:query(q)
  local qtype = q.type or "results"
  local tbl = TABLE[qtype]
  if not tbl then return nil, errors.new("bad-request", "unknown query type '" .. tostring(qtype) .. "'") end
  local ok, since = pcall(epoch, q.since, "since")
  if not ok then return nil, since end
  local ok2, until_ = pcall(epoch, q["until"], "until")
  if not ok2 then return nil, until_ end
  local max = math.tointeger(tonumber(q.max or 50))
  if not max or max < 1 then return nil, errors.new("bad-request", "max must be a positive integer") end
  max = math.min(max, proto.QUERY_MAX)
  local function cursor(name)
    if q[name] == nil or q[name] == "" then return nil end
    local c = math.tointeger(tonumber(q[name]))
    if not c then error(errors.new("bad-request", name .. " must be a cursor from an earlier page"), 0) end
    return c
  end
  local ok3, after = pcall(cursor, "after")
  if not ok3 then return nil, after end
  local ok4, before = pcall(cursor, "before")
  if not ok4 then return nil, before end
  if after and before then return nil, errors.new("bad-request", "after and before cannot be combined") end
  local descending = before ~= nil or (q.newest and not after)
  local cols = {}
  for i, c in ipairs(COLUMNS[qtype]) do cols[i] = "t." .. c end
  local select_cols = table.concat(cols, ", ")
  local from, where, params = tbl .. " t", {}, { limit = max + 1 }
  if before then
    where[1], params.before = "t.seq < :before", before
  else
    where[1], params.after = "t.seq > :after", after or 0
  end
  if q.endpoint and q.endpoint ~= "" then
    if qtype == "history" then
      where[#where + 1] = "t.endpoint = :endpoint"
    else
      where[#where + 1] = "(t.endpoint = :endpoint OR t.hostname = :endpoint)"
    end
    params.endpoint = q.endpoint
  end
  local function eq(field, column, applies)
    local v = q[field]
    if v == nil or v == "" then return true end
    if not applies[qtype] then return false end
    where[#where + 1] = ("t.%s = :%s"):format(column, field)
    params[field] = v
    return true
  end
  local checks = {
    eq("kind", "kind", { posture = true }),
    eq("rule", "rule", { results = true, history = true }),
    eq("policy", "policy", { results = true, history = true }),
    eq("result", "result", { results = true, history = true }),
    eq("correlation", "correlation", { posture = true, results = true }),
  }
  for _, fine in ipairs(checks) do
    if not fine then return nil, errors.new("bad-request", "a filter does not apply to " .. qtype .. " queries") end
  end
  if q.attribute and q.attribute ~= "" then
    if qtype ~= "posture" then return nil, errors.new("bad-request", "attribute filters apply to posture only") end
    from = from .. " JOIN posture_attribute a ON a.posture = t.seq AND a.name = :attribute"
    select_cols = select_cols .. ", a.value AS value"
    params.attribute = q.attribute
  end
  if since then where[#where + 1] = ("t.%s >= :since"):format(TIME_COLUMN[qtype]); params.since = since end
  if until_ then where[#where + 1] = ("t.%s <= :until"):format(TIME_COLUMN[qtype]); params["until"] = until_ end
  local sql = ("SELECT t.seq AS seq, %s FROM %s WHERE %s ORDER BY t.seq%s LIMIT :limit"):format(
    select_cols, from, table.concat(where, " AND "), descending and " DESC" or "")
  local rows, err = self.db:query(sql, params)
  if not rows then return nil, err end
  local page = { rows = rows, columns = { table.unpack(COLUMNS[qtype]) } }
  if q.attribute and q.attribute ~= "" then page.columns[#page.columns + 1] = "value" end
  if #rows > max then
    rows[#rows] = nil
    page.next = tostring(rows[#rows].seq)
  end
  if #rows > 0 then
    local first, last = rows[1].seq, rows[#rows].seq
    page.newest, page.oldest = tostring(math.max(first, last)), tostring(math.min(first, last))
  end
  for _, row in ipairs(rows) do
    for _, c in ipairs { "collected", "evaluated", "at" } do
      if row[c] then row[c] = time.format(row[c], 3) end
    end
    row.seq = nil
  end
  return page
end

--- r:get(id) -> the stored posture or result element | nil, err (item-not-found)
function Repository:get(id)
  local row = self.db:first("SELECT xml FROM posture WHERE id = ?", { id })
    or self.db:first("SELECT xml FROM result WHERE id = ?", { id })
  if not row then return nil, errors.new("item-not-found", "no posture or result with id " .. tostring(id)) end
  return xml.parse(row.xml)
end

function Repository:totals()
  local t = {}
  for _, row in ipairs(self.db:query("SELECT result, count(*) AS n FROM current_result GROUP BY result") or {}) do
    t[row.result] = row.n
  end
  return t
end

local function add_commands(self, allowed)
  local cmds = self.member.commands
  cmds:add(proto.CMD.query, {
    name = "Query posture and results",
    allowed = allowed,
    form = proto.QUERY_FORM,
    run = function(_, values)
      local page, err = self:query(values)
      if not page then return nil, err end
      local reported = {}
      for i, c in ipairs(page.columns) do reported[i] = { var = c, label = c } end
      local items = {}
      for i, row in ipairs(page.rows) do
        local item = {}
        for _, c in ipairs(page.columns) do item[c] = row[c] ~= nil and tostring(row[c]) or nil end
        items[i] = item
      end
      return { type = "result", title = ("%d %s"):format(#items, values.type or "results"),
        fields = { { var = "count", value = tostring(#items) }, { var = "next", value = page.next or "" } },
        reported = reported, items = items }
    end,
  })
  cmds:add(proto.CMD.get, {
    name = "Retrieve posture or a result",
    allowed = allowed,
    form = proto.GET_FORM,
    run = function(_, values) return self:get(values.id) end,
  })
  cmds:add(proto.CMD.status, {
    name = "Repository status",
    allowed = allowed,
    run = function()
      local n = function(sql) local r = self.db:first(sql); return tostring(r and r.n or 0) end
      local totals = self:totals()
      local fields = {
        { var = "role", value = "repository" },
        { var = "posture", value = n("SELECT count(*) AS n FROM posture") },
        { var = "results", value = n("SELECT count(*) AS n FROM result") },
        { var = "changes", value = n("SELECT count(*) AS n FROM history") },
        { var = "endpoints", value = n("SELECT count(DISTINCT endpoint) AS n FROM posture") },
        { var = "uptime", value = tostring(math.floor(time.now() - self.member.started)) },
      }
      for _, r in ipairs(proto.RESULTS) do fields[#fields + 1] = { var = "current_" .. r, value = tostring(totals[r] or 0) } end
      return { title = "Repository status", fields = fields }
    end,
  })
end

--- repository.open(path) -> repository (storage only, no grid connection) | nil, err
function M.open(path)
  local db, err = sqlite.open(path, { wal = true, synchronous = "FULL" })
  if not db then return nil, err end
  local ok
  ok, err = db:migrate(M.MIGRATIONS)
  if not ok then
    db:close()
    return nil, err
  end
  return setmetatable({ db = db, counts = { posture = 0, results = 0 } }, Repository)
end

--- repository.start(opts) -> repository | nil, err
-- opts: the sacm.grid.member options, database (path of the SQLite file), allowed (who may run
-- commands; default the peers), rolie (the options of sacm.rolie.serve but repository: serve
-- the store as ROLIE feeds over HTTPS next to XMPP; the provider is r.rolie).
function M.start(opts)
  local self, err = M.open(assert(opts.database, "repository.start needs a database path"))
  if not self then return nil, err end
  local mopts = {}
  for k, v in pairs(opts) do mopts[k] = v end
  mopts.role = "repository"
  self.member, err = member.join(mopts)
  if not self.member then
    self.db:close()
    return nil, err
  end
  add_commands(self, member.allowed(opts.allowed or opts.peers or {}, self.member.conn.jid))
  for _, kind in ipairs { "posture", "results" } do
    local ok, serr = self.member:subscribe(kind, function(item) store_item(self, kind, item) end)
    if not ok then
      self:close()
      return nil, serr
    end
  end
  -- after subscribing, so nothing falls between the catch-up read and the first notification
  catch_up(self, "posture")
  catch_up(self, "results")
  if opts.rolie then
    local ropts = { repository = self }
    for k, v in pairs(opts.rolie) do ropts[k] = v end
    self.rolie, err = require("sacm.rolie").serve(ropts)
    if not self.rolie then
      self:close()
      return nil, err
    end
  end
  log.info("storing posture and results in %s", opts.database)
  return self
end

function Repository:close()
  if self.rolie then self.rolie:close() end
  if self.member then self.member:close() end
  if self.db then self.db:close() end
end
Repository.__close = Repository.close

return M
