--- sacm.grid.store: the repository's storage (SQLite): posture, results, their history, and the
-- documents the grid's references point to. The repository role is a thin layer over it (XMPP
-- commands, the upload service, provisioning), and the ROLIE feeds read from it, so the storage
-- has one owner and one set of semantics whatever serves it.
--
--   local store = require "sacm.grid.store"
--   local s = assert(store.open("/var/lib/sacmrun/grid.db"))
--   local receipt = assert(s:put_posture_set(set, "collector@grid.example"))
--   local page = assert(s:query{ type = "results", endpoint = "web1" })
--
-- Every write is one committed transaction (WAL, synchronous=FULL: what was acknowledged survives
-- a crash or power loss). Ids make storing idempotent: a document stored again changes nothing.
local sqlite = require "sacm.sqlite"
local xml = require "sacm.xml"
local fs = require "sacm.fs"
local crypto = require "sacm.crypto"
local proto = require "sacm.grid.protocol"
local payload = require "sacm.grid.payload"
local time = require "sacm.time"
local errors = require "sacm.error"

local M = {}

-- Schema versions, applied in order through PRAGMA user_version (sacm.sqlite's migrate). Only
-- append: each entry has shipped.
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
  -- version 2 (protocol 1): content arrives by upload as posture sets and result sets; the
  -- repository serves each stored document back by id (the notifications' references)
  [[
  ALTER TABLE posture ADD COLUMN collection TEXT;
  ALTER TABLE posture ADD COLUMN uploader TEXT;
  ALTER TABLE posture ADD COLUMN digest TEXT;
  CREATE INDEX posture_by_collection ON posture (collection);
  CREATE TABLE result_set (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    endpoint TEXT NOT NULL,
    hostname TEXT,
    evaluator TEXT,
    correlation TEXT,
    evaluated REAL NOT NULL,
    received REAL NOT NULL,
    uploader TEXT,
    digest TEXT NOT NULL,
    xml TEXT NOT NULL
  );
  CREATE INDEX result_set_by_correlation ON result_set (correlation);
  ALTER TABLE result ADD COLUMN result_set TEXT;
  -- the repository's own settings, such as the key its content URLs are signed with
  CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
  -- each endpoint's posture comes from one collector account: bound when its first posture is
  -- stored (or ahead, from the repository's configuration); posture of it from another is refused
  CREATE TABLE endpoint_binding (
    endpoint TEXT PRIMARY KEY,
    collector TEXT NOT NULL,
    bound REAL NOT NULL
  );
  -- uploads refused, and why: the status command reports them
  CREATE TABLE refusal (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    uploader TEXT,
    what TEXT NOT NULL,
    reason TEXT NOT NULL
  );
  ]],
}

---@class sacm.grid.StoreQuery what store:query selects
---@field type? "posture"|"results"|"history"
---@field endpoint? string an id or a hostname
---@field kind? string
---@field attribute? string posture with that single-valued attribute
---@field rule? string
---@field policy? string
---@field result? string
---@field correlation? string
---@field since? string XEP-0082
---@field ["until"] string? XEP-0082
---@field max? integer page size
---@field after? string the previous page's cursor
---@field before? string a cursor: the page runs newest first from just below it
---@field newest? boolean the page runs newest first from the newest row

---@class sacm.grid.Store the repository's store of posture and results (store.open), on SQLite or PostgreSQL
---@field backend "postgres"? nil on SQLite
---@field bind_first_use boolean? false: endpoints are bound only ahead (bind_endpoint)
local Store = {}
Store.__index = Store

local function storage_error(what, err)
  return errors.new("internal-server-error", ("storing %s failed: %s"):format(what, tostring(err)))
end

-- Inserts one posture (parsed p, its serialized text) unless its id is stored; returns true when new.
local function insert_posture(db, p, text, extra)
  local changes, seq = db:run([[INSERT OR IGNORE INTO posture (id, endpoint, hostname, kind, collector, correlation,
    collected, received, status, xml, collection, uploader, digest) VALUES (:id, :endpoint, :hostname, :kind,
    :collector, :correlation, :collected, :received, :status, :xml, :collection, :uploader, :digest)]], {
    id = p.id, endpoint = p.endpoint, hostname = p.hostname, kind = p.kind, collector = p.collector,
    correlation = p.correlation, collected = p.collected, received = time.now(),
    status = p.error and "error" or "ok", xml = text, collection = extra.collection, uploader = extra.uploader,
    digest = payload.digest(text) })
  if not changes then error(seq, 0) end
  if changes == 0 then return false end
  for name, value in pairs(p.data and p.data.attributes or {}) do
    assert(db:run("INSERT INTO posture_attribute (posture, name, value) VALUES (?, ?, ?)", { seq, name, tostring(value) }))
  end
  return true
end

-- Inserts one result and keeps current_result and history; returns true when new.
local function insert_result(db, r, text, set_id)
  local received = time.now()
  -- current is the newest by its date, but never later than its arrival: a clock ahead within the
  -- accepted skew cannot keep a result current past the next real one
  local order = math.min(r.evaluated, received)
  local changes, ierr = db:run([[INSERT OR IGNORE INTO result (id, endpoint, hostname, rule, policy, policy_version,
    result, severity, evaluator, correlation, evaluated, received, xml, result_set) VALUES (:id, :endpoint, :hostname,
    :rule, :policy, :policy_version, :result, :severity, :evaluator, :correlation, :evaluated, :received, :xml,
    :result_set)]], {
    id = r.id, endpoint = r.endpoint, hostname = r.hostname, rule = r.rule_id, policy = r.policy_id,
    policy_version = r.policy_version, result = r.result, severity = r.severity, evaluator = r.evaluator,
    correlation = r.correlation, evaluated = r.evaluated, received = received, xml = text, result_set = set_id })
  if not changes then error(ierr, 0) end
  if changes == 0 then return false end
  local cur = db:first("SELECT result, evaluated FROM current_result WHERE endpoint = ? AND rule = ?",
    { r.endpoint, r.rule_id })
  if cur and cur.evaluated > order then return true end -- an older result arriving late
  if not cur or cur.result ~= r.result then
    assert(db:run([[INSERT INTO history (endpoint, rule, policy, policy_version, previous, result, result_id, at)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?)]], { r.endpoint, r.rule_id, r.policy_id, r.policy_version,
      cur and cur.result or nil, r.result, r.id, r.evaluated }))
  end
  assert(db:run([[INSERT INTO current_result (endpoint, rule, result, result_id, evaluated) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (endpoint, rule) DO UPDATE SET result = excluded.result, result_id = excluded.result_id,
    evaluated = excluded.evaluated]], { r.endpoint, r.rule_id, r.result, r.id, order }))
  return true
end

-- Runs fn in a transaction; any failure (raised or returned) becomes nil, err naming what.
-- Every change to what queries return goes through here, so this is where the change counter
-- (store:version()) moves: after the commit, before the writer hears it succeeded. A failed
-- write counts too: a stale cache entry costs a render, a missed change would serve old pages.
local function write(self, what, fn)
  local ok, a, b = pcall(self.db.transaction, self.db, fn)
  self.writes = self.writes + 1
  if not ok then return nil, storage_error(what, a) end
  if a == nil then return nil, storage_error(what, b) end
  return a
end

--- store:store_posture(element) -> true (stored), false (already had it) | nil, err (not posture)
---@param el sacm.xml.Element a posture element
---@return boolean? stored false when it was already there
---@return sacm.Error? err
function Store:store_posture(el)
  local p, err = payload.parse_posture(el)
  if not p then return nil, err end
  if p.ref then return nil, errors.new("bad-request", "posture " .. p.id .. " is a reference, not content") end
  local text = xml.serialize(el)
  local stored, serr = write(self, "posture", function(db) return { insert_posture(db, p, text, {}) } end)
  if not stored then return nil, serr end
  if stored[1] then self.counts.posture = self.counts.posture + 1 end
  return stored[1]
end

--- store:store_result(element) -> true (stored), false (already had it) | nil, err (not a result)
---@param el sacm.xml.Element a result element
---@return boolean? stored false when it was already there
---@return sacm.Error? err
function Store:store_result(el)
  local r, err = payload.parse_result(el)
  if not r then return nil, err end
  local text = xml.serialize(el)
  local stored, serr = write(self, "a result", function(db) return { insert_result(db, r, text, nil) } end)
  if not stored then return nil, serr end
  if stored[1] then self.counts.results = self.counts.results + 1 end
  return stored[1]
end

--- store:unproven_posture(set) -> nil | reason: why a result set is not judged on posture this
-- store holds. Each result names the posture it was judged on; each must be stored here, of the
-- result's endpoint (so uploaded by the collector bound to it, with every check that implies).
-- A result of `error` may name posture that never arrived: judging undelivered posture an error
-- is what evaluators are for.
---@param set table a result set, parsed
---@return string? reason nil when every result's posture is proven
function Store:unproven_posture(set)
  local known = {}
  for _, r in ipairs(set.results or {}) do
    if r.result ~= "error" then
      for _, id in ipairs(r.posture_ids) do
        local endpoint = known[id]
        if endpoint == nil then
          local row = self.db:first("SELECT endpoint FROM posture WHERE id = ?", { id })
          endpoint = row and row.endpoint or false
          known[id] = endpoint
        end
        if not endpoint then
          return ("result %s (%s of %s) was judged on posture %s, which this repository never stored"):format(r.id,
            r.rule_id, r.endpoint, id)
        end
        if endpoint ~= r.endpoint then
          return ("result %s of endpoint '%s' was judged on posture %s of endpoint '%s'"):format(r.id, r.endpoint, id,
            endpoint)
        end
      end
    end
  end
  return nil
end

--- store:content_key(id) -> the key that makes a content URL for id valid (HMAC of the id with
-- the repository's own secret, which is made once and kept in the database).
---@param id string
---@return string key
function Store:content_key(id)
  return crypto.hex(crypto.hmac("sha256", self.secret, id)):sub(1, 32)
end

-- A receipt entry for stored content: where to fetch it and what it is.
local function content_entry(self, id, text)
  return { id = id, size = #text, digest = payload.digest(text), key = self:content_key(id) }
end

--- store:endpoint_owner(endpoint) -> the bare JID of the collector the endpoint is bound to | nil
---@param endpoint string
---@return string? collector its bare JID
function Store:endpoint_owner(endpoint)
  local row = self.db:first("SELECT collector FROM endpoint_binding WHERE endpoint = ?", { endpoint })
  return row and row.collector
end

--- store:bind_endpoint(endpoint, collector_bare) -> true | nil, err: binds (or re-binds, as an
-- administrator's decision) an endpoint to a collector account.
---@param endpoint string
---@param collector string the collector account's bare JID
---@return true? ok
---@return sacm.Error? err
function Store:bind_endpoint(endpoint, collector)
  local ok, err = self.db:run([[INSERT INTO endpoint_binding (endpoint, collector, bound) VALUES (?, ?, ?)
    ON CONFLICT (endpoint) DO UPDATE SET collector = excluded.collector, bound = excluded.bound]],
    { endpoint, collector, time.now() })
  if not ok then return nil, err end
  return true
end

--- store:put_posture_set(set, uploader [, collector_bare]) -> receipt | nil, err
-- set: parsed by payload.parse_posture_set. Stores each posture not yet stored, in one
-- transaction. receipt: {id, stored = n, duplicates = n, contents = {{id, size, digest, key}}}.
-- With collector_bare, the set's endpoint must be bound to that account (it is bound now if it
-- is bound to none, unless store.bind_first_use is false); posture of an endpoint bound to
-- another, or to none when bindings are made only ahead, gives nil, err (forbidden).
---@param set table parsed by payload.parse_posture_set
---@param uploader string the uploader's JID
---@param collector? string the bare JID the endpoint must be bound to
---@return {id: string, stored: integer, duplicates: integer, contents: table[]}? receipt
---@return sacm.Error? err forbidden, ...
function Store:put_posture_set(set, uploader, collector)
  local texts = {}
  for i, el in ipairs(set.elements) do texts[i] = xml.serialize(el) end
  local result, err = write(self, "posture set " .. set.id, function(db)
    if collector then
      local row = db:first("SELECT collector FROM endpoint_binding WHERE endpoint = ?", { set.endpoint })
      if row and row.collector ~= collector then
        return { refused = ("endpoint '%s' is bound to collector %s, not %s"):format(set.endpoint, row.collector, collector) }
      end
      if not row and self.bind_first_use == false then
        return { refused = ("endpoint '%s' is bound to no collector: this repository takes posture only of endpoints "
          .. "bound ahead (its endpoints configuration)"):format(set.endpoint) }
      end
      if not row then
        assert(db:run("INSERT INTO endpoint_binding (endpoint, collector, bound) VALUES (?, ?, ?)",
          { set.endpoint, collector, time.now() }))
      end
    end
    local n = 0
    for i, p in ipairs(set.postures) do
      if insert_posture(db, p, texts[i], { collection = set.id, uploader = uploader }) then n = n + 1 end
    end
    return { n }
  end)
  if not result then return nil, err end
  if result.refused then return nil, errors.new("forbidden", result.refused) end
  local receipt = { id = set.id, stored = result[1], duplicates = #set.postures - result[1], contents = {} }
  for i, p in ipairs(set.postures) do
    -- a duplicate is served as first stored: describe that copy
    local row = self.db:first("SELECT xml FROM posture WHERE id = ?", { p.id })
    receipt.contents[i] = content_entry(self, p.id, row and row.xml or texts[i])
  end
  self.counts.posture = self.counts.posture + receipt.stored
  return receipt
end

--- store:put_result_set(set, uploader) -> receipt | nil, err (as put_posture_set; the one content
-- entry is the set itself, which is what a result notification refers to).
---@param set table parsed by payload.parse_result_set
---@param el sacm.xml.Element the result set element
---@param uploader string the uploader's JID
---@return {id: string, stored: integer, duplicates: integer, contents: table[]}? receipt
---@return sacm.Error? err
function Store:put_result_set(set, el, uploader)
  local text = xml.serialize(el)
  local texts = {}
  for i, rel in ipairs(set.elements) do texts[i] = xml.serialize(rel) end
  local result, err = write(self, "result set " .. set.id, function(db)
    local changes, serr = db:run([[INSERT OR IGNORE INTO result_set (id, endpoint, hostname, evaluator, correlation,
      evaluated, received, uploader, digest, xml) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)]], { set.id, set.endpoint,
      set.hostname, set.evaluator, set.correlation, set.evaluated, time.now(), uploader, payload.digest(text), text })
    if not changes then error(serr, 0) end
    local n = 0
    for i, r in ipairs(set.results) do
      if insert_result(db, r, texts[i], set.id) then n = n + 1 end
    end
    return { n }
  end)
  if not result then return nil, err end
  local row = self.db:first("SELECT xml FROM result_set WHERE id = ?", { set.id })
  self.counts.results = self.counts.results + result[1]
  return { id = set.id, stored = result[1], duplicates = #set.results - result[1],
    contents = { content_entry(self, set.id, row and row.xml or text) } }
end

--- store:content(id) -> text, digest of a stored posture, posture set (a collection, rebuilt from
-- its postures), or result set | nil (unknown id)
---@param id string
---@return string? text
---@return string? digest
function Store:content(id)
  local row = self.db:first("SELECT xml, digest FROM posture WHERE id = ?", { id })
    or self.db:first("SELECT xml, digest FROM result_set WHERE id = ?", { id })
  if row then return row.xml, row.digest or payload.digest(row.xml) end
  local rows = self.db:query("SELECT xml, endpoint, hostname, collector, correlation FROM posture WHERE collection = ? ORDER BY seq",
    { id })
  if not rows or #rows == 0 then return nil end
  local head = xml.serialize(payload.posture_set({ id = id, endpoint = rows[1].endpoint, hostname = rows[1].hostname,
    collector = rows[1].collector, correlation = rows[1].correlation, postures = {} }))
  local parts = {}
  for i, r in ipairs(rows) do parts[i] = r.xml end
  -- <posture-set .../> opened up around the stored postures, byte for byte as they were stored
  local text = head:gsub("/>$", ">") .. table.concat(parts) .. "</posture-set>"
  return text, payload.digest(text)
end

--- store:refused(uploader, what, reason): records an upload that was refused.
---@param uploader string?
---@param what string
---@param reason string
function Store:refused(uploader, what, reason)
  self.db:run("INSERT INTO refusal (at, uploader, what, reason) VALUES (?, ?, ?, ?)",
    { time.now(), uploader, what, reason })
end

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
  if not t then error(errors.new("bad-request", what .. ": not an XEP-0082 date-time: '" .. s .. "'"), 0) end
  return t
end

--- store:query(q) -> {rows = {...}, next = cursor or nil, columns = {...}} | nil, err
-- q: type ("posture" | "results" | "history"), endpoint (id or hostname), kind, attribute (posture
-- with that single-valued attribute; its value is returned), rule, policy, result, correlation,
-- since, until (XEP-0082), max (page size), after (the cursor of the previous page; oldest
-- first). With before (a cursor) or newest = true the page runs newest first, from just below the
-- cursor or from the newest row, and next continues towards older rows. page.newest and
-- page.oldest are the cursors of the page's own first and last rows by age (ROLIE feeds page both
-- ways with them).
---@param q sacm.grid.StoreQuery
---@return {rows: table[], next: string?, columns: string[], newest: string?, oldest: string?}? page
---@return sacm.Error? err
function Store:query(q)
  local qtype = q.type or "results"
  local tbl = TABLE[qtype]
  if not tbl then return nil, errors.new("bad-request", "type: unknown query type '" .. tostring(qtype) .. "'") end
  local ok, since = pcall(epoch, q.since, "since")
  if not ok then return nil, since end
  local ok2, until_ = pcall(epoch, q["until"], "until")
  if not ok2 then return nil, until_ end
  local max = math.tointeger(tonumber(q.max or 50))
  if not max or max < 1 then return nil, errors.new("bad-request", "max: must be a positive integer") end
  max = math.min(max, proto.QUERY_MAX)
  local function cursor(name)
    if q[name] == nil or q[name] == "" then return nil end
    local c = math.tointeger(tonumber(q[name]))
    if not c then error(errors.new("bad-request", name .. ": must be a cursor from an earlier page"), 0) end
    return c
  end
  local ok3, after = pcall(cursor, "after")
  if not ok3 then return nil, after end
  local ok4, before = pcall(cursor, "before")
  if not ok4 then return nil, before end
  if after and before then return nil, errors.new("bad-request", "after, before: cannot be combined") end
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
  for _, c in ipairs {
    { "kind", { posture = true } }, { "rule", { results = true, history = true } },
    { "policy", { results = true, history = true } }, { "result", { results = true, history = true } },
    { "correlation", { posture = true, results = true } },
  } do
    if not eq(c[1], c[1], c[2]) then
      return nil, errors.new("bad-request", ("%s: this filter does not apply to %s queries"):format(c[1], qtype))
    end
  end
  if q.attribute and q.attribute ~= "" then
    if qtype ~= "posture" then return nil, errors.new("bad-request", "attribute: filters on attributes apply to posture only") end
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

--- store:get(id) -> the stored posture or result element | nil, err (item-not-found)
---@param id string
---@return sacm.xml.Element? element
---@return sacm.Error? err item-not-found
function Store:get(id)
  local row = self.db:first("SELECT xml FROM posture WHERE id = ?", { id })
    or self.db:first("SELECT xml FROM result WHERE id = ?", { id })
  if not row then return nil, errors.new("item-not-found", "no posture or result with id " .. tostring(id)) end
  return xml.parse(row.xml)
end

---@return table<string, integer> totals result -> count of current results
function Store:totals()
  local t = {}
  for _, row in ipairs(self.db:query("SELECT result, count(*) AS n FROM current_result GROUP BY result") or {}) do
    t[row.result] = row.n
  end
  return t
end

--- store:prune(before [, batch]) -> {posture, results, result_sets, history, refusals} removed |
-- nil, err. Removes what was collected, evaluated or changed before `before` (epoch seconds),
-- but never the current result of a rule on an endpoint (nor the result set it came in) nor the
-- newest posture of a kind on an endpoint. Works in transactions of `batch` rows (1000) per table so that a large prune does not
-- hold the database (or the loop) for long.
---@param before number epoch seconds
---@param batch? integer rows per transaction (1000)
---@return {posture: integer, results: integer, result_sets: integer, history: integer, refusals: integer}? removed
---@return sacm.Error? err
function Store:prune(before, batch)
  batch = batch or 1000
  local removed = { posture = 0, results = 0, result_sets = 0, history = 0, refusals = 0 }
  local steps = {
    { "history", "DELETE FROM history WHERE seq IN (SELECT seq FROM history WHERE at < :before LIMIT :n)" },
    { "results", [[DELETE FROM result WHERE seq IN (SELECT seq FROM result WHERE evaluated < :before
        AND id NOT IN (SELECT result_id FROM current_result) LIMIT :n)]] },
    { "result_sets", [[DELETE FROM result_set WHERE seq IN (SELECT seq FROM result_set WHERE evaluated < :before
        AND id NOT IN (SELECT result_set FROM result WHERE result_set IS NOT NULL) LIMIT :n)]] },
    -- the newest posture of each kind of each endpoint stays, however old: it is what is known
    { "posture", [[DELETE FROM posture WHERE seq IN (SELECT p.seq FROM posture p WHERE p.collected < :before
        AND p.seq < (SELECT max(q.seq) FROM posture q WHERE q.endpoint = p.endpoint AND q.kind = p.kind) LIMIT :n)]] },
    { "refusals", "DELETE FROM refusal WHERE seq IN (SELECT seq FROM refusal WHERE at < :before LIMIT :n)" },
  }
  for _, step in ipairs(steps) do
    while true do
      local n, err = write(self, "a prune of " .. step[1], function(db)
        local changes, e = db:run(step[2], { before = before, n = batch })
        if not changes then return nil, e end
        return changes
      end)
      if not n then return nil, err end
      removed[step[1]] = removed[step[1]] + n
      if n < batch then break end
    end
  end
  return removed
end

--- store:refusals([n]) -> the newest n (default 10) refused uploads: {at, uploader, what, reason}
---@param n? integer (10)
---@return {at: number, uploader: string?, what: string, reason: string}[]
function Store:refusals(n)
  return self.db:query("SELECT at, uploader, what, reason FROM refusal ORDER BY seq DESC LIMIT ?", { n or 10 }) or {}
end

--- store:stats() -> {posture, results, changes, endpoints, refused} as stored now.
---@return {posture: integer, results: integer, changes: integer, endpoints: integer, refused: integer}
function Store:stats()
  local n = function(sql) local r = self.db:first(sql); return r and r.n or 0 end
  return {
    posture = n("SELECT count(*) AS n FROM posture"),
    results = n("SELECT count(*) AS n FROM result"),
    changes = n("SELECT count(*) AS n FROM history"),
    endpoints = n("SELECT count(DISTINCT endpoint) AS n FROM posture"),
    refused = n("SELECT count(*) AS n FROM refusal"),
  }
end

-- The database holds every host's posture: nobody but its owner may read it. A new file is made
-- 0600 (in 0700 directories) before SQLite opens it (SQLite gives its -wal and -shm files the
-- database's mode); an existing one that others can read is reported, with the fix.
local log = require("sacm.log").new("store")
local function prepare_file(path)
  if path == ":memory:" then return true end
  local ok, warning = fs.private_file(path)
  if not ok then return nil, warning end
  if warning then log.warn("%s; it holds every endpoint's posture", warning) end
  return true
end

--- store.backup(path, dest) -> true | nil, err: an online, consistent copy of the database at
-- `path` into the new file `dest` (mode 0600), while the repository goes on writing. SQLite's
-- VACUUM INTO reads one snapshot of the WAL database (as the backup API would, but in one
-- statement and compacted); a restore is copying `dest` back while the repository is stopped.
---@param path string the database file
---@param dest string a new file
---@return true? ok
---@return sacm.Error? err
function M.backup(path, dest)
  if fs.stat(dest) then return nil, errors.new("EEXIST", ("%s exists: a backup goes to a new file"):format(dest)) end
  local ok, err = fs.write(dest, "", { mode = 384 }) -- VACUUM INTO takes an empty file; it keeps its mode
  if not ok then return nil, err end
  local db
  db, err = sqlite.open(path, { readonly = true, create = false })
  if not db then
    fs.remove(dest)
    return nil, err
  end
  ok, err = db:run("VACUUM INTO ?", { dest })
  db:close()
  if not ok then
    fs.remove(dest)
    return nil, errors.new(err.condition or "internal-error", ("backing up %s to %s: %s"):format(path, dest, tostring(err)))
  end
  return true
end

--- store.open(path) -> store | nil, err. Creates the file (mode 0600) and brings its schema up
-- to date. A postgresql:// URL, or a table {backend = "postgres", <sacm.pg connect options>},
-- opens the store on PostgreSQL instead (sacm.grid.store_pg: same queries and semantics).
---@param path string|table a file, a postgresql:// URL, or {backend = "postgres", <sacm.pg connect options>}
---@return sacm.grid.Store? store
---@return sacm.Error? err
function M.open(path)
  if type(path) == "table" or (type(path) == "string" and path:find("^postgres")) then
    local db, name = require("sacm.grid.store_pg").open(path, M.MIGRATIONS)
    if not db then return nil, name end
    local row, rerr = db:first("SELECT value FROM meta WHERE name = 'content_secret'")
    if not row then
      db:close()
      return nil, rerr or errors.new("internal-server-error", "store: no content secret in " .. name)
    end
    return setmetatable({ db = db, path = name, backend = "postgres", secret = row.value,
      counts = { posture = 0, results = 0 }, writes = 0 }, Store)
  end
  local ok, err = prepare_file(path)
  if not ok then return nil, err end
  local db
  db, err = sqlite.open(path, { wal = true, synchronous = "FULL" })
  if not db then return nil, err end
  ok, err = db:migrate(M.MIGRATIONS)
  if not ok then
    db:close()
    return nil, err
  end
  local self = setmetatable({ db = db, path = path, counts = { posture = 0, results = 0 }, writes = 0 }, Store)
  local row = db:first("SELECT value FROM meta WHERE name = 'content_secret'")
  if not row then
    local secret = crypto.hex(crypto.random(32))
    assert(db:run("INSERT INTO meta (name, value) VALUES ('content_secret', ?)", { secret }))
    row = { value = secret }
  end
  self.secret = row.value
  return self
end

--- store:version() -> a, b | nil: the store's change counter, for caches of what queries return
-- (the ROLIE feed cache, sacm.rolie.cache). Equal values mean no write committed in between.
-- SQLite: this process's own writes (a counter bumped by every write transaction; SQLite's
-- data_version does not move for the connection's own commits) and PRAGMA data_version (it
-- moves when another connection, another process, commits). PostgreSQL: nil, since several
-- repository processes share one database and a counter here cannot see the others' writes
-- without a query as costly as the one it would save; nothing is cached there.
---@return integer? writes nil on PostgreSQL
---@return integer? data_version
function Store:version()
  if self.backend == "postgres" then return nil end
  local row = self.db:first("PRAGMA data_version")
  return self.writes, row and row.data_version or 0
end

---(no parameters, no results)
function Store:close()
  if self.db then self.db:close() end
end
Store.__close = Store.close

return M
