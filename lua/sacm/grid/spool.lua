--- sacm.grid.spool: a producer's durable outbox. What a collector or evaluator produced stays
-- here, on its own disk, until the repository has acknowledged it and its notifications are out;
-- a producer that restarts resends what it still holds.
--
--   local sp = assert(spool.open("/var/lib/sacmrun/collector-spool.db"))
--   sp:add{ id = set_id, kind = "posture-set", body = text }
--   for _, e in ipairs(sp:due(time.now())) do ... sp:uploaded(e.id, receipt_text) ... sp:remove(e.id) end
--
-- One SQLite file (WAL, synchronous=FULL, mode 0600); each call is one committed statement.
local sqlite = require "sacm.sqlite"
local fs = require "sacm.fs"
local time = require "sacm.time"

local M = {}
local log = require("sacm.log").new("spool")

M.MIGRATIONS = {
  [[
  CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_error TEXT,
    receipt TEXT,          -- the repository's receipt, once it has stored the body
    announced INTEGER NOT NULL DEFAULT 0 -- the notifications meant "not delivered" so far
  );
  ]],
}

---@class sacm.grid.SpoolEntry
---@field id string
---@field kind string
---@field body string
---@field created number epoch seconds
---@field attempts integer
---@field next_attempt number epoch seconds
---@field last_error string?
---@field receipt string? the repository's receipt, once it stored the body
---@field announced integer

---@class sacm.grid.Spool documents waiting for the repository, kept in SQLite (spool.open)
---@field path string
local Spool = {}
Spool.__index = Spool

--- spool.open(path) -> spool | nil, err. path ":memory:" gives a spool that does not survive
-- the process (logged as a warning: use it for tests and throw-away runs only).
---@param path string a file, or ":memory:"
---@return sacm.grid.Spool? spool
---@return sacm.Error? err
function M.open(path)
  if path == ":memory:" then
    log.warn("the spool is in memory: what the repository has not acknowledged is lost if this process ends")
  else
    local ok, err = fs.private_file(path) -- 0600 in 0700 directories: the spool holds posture
    if not ok then return nil, err end
    if err then log.warn("%s; it holds posture not yet delivered", err) end
  end
  local db, err = sqlite.open(path, { wal = path ~= ":memory:", synchronous = "FULL" })
  if not db then return nil, err end
  local ok
  ok, err = db:migrate(M.MIGRATIONS)
  if not ok then
    db:close()
    return nil, err
  end
  return setmetatable({ db = db, path = path }, Spool)
end

--- sp:add{id, kind, body} -> true (new) | false (already held) | nil, err
---@param e {id: string, kind: string, body: string}
---@return boolean? new false when already held
---@return sacm.Error? err
function Spool:add(e)
  local changes, err = self.db:run([[INSERT OR IGNORE INTO outbox (id, kind, body, created, next_attempt)
    VALUES (?, ?, ?, ?, ?)]], { e.id, e.kind, e.body, time.now(), 0 })
  if not changes then return nil, err end
  return changes > 0
end

local COLUMNS = "id, kind, body, created, attempts, next_attempt, last_error, receipt, announced"

--- sp:get(id) -> entry | nil
---@param id string
---@return sacm.grid.SpoolEntry? entry
function Spool:get(id)
  return self.db:first("SELECT " .. COLUMNS .. " FROM outbox WHERE id = ?", { id })
end

--- sp:due(now) -> entries whose next attempt has come, oldest first
---@param now number epoch seconds
---@return sacm.grid.SpoolEntry[] entries oldest first
function Spool:due(now)
  return self.db:query("SELECT " .. COLUMNS .. " FROM outbox WHERE next_attempt <= ? ORDER BY seq", { now }) or {}
end

--- sp:next_due() -> the earliest next attempt (epoch seconds), or nil when empty
---@return number? t epoch seconds; nil when empty
function Spool:next_due()
  local row = self.db:first("SELECT min(next_attempt) AS t FROM outbox")
  return row and row.t
end

--- sp:deferred(id, err, next_attempt): one more failed attempt.
---@param id string
---@param err any why it failed, as text
---@param next_attempt number epoch seconds
function Spool:deferred(id, err, next_attempt)
  self.db:run("UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt = ? WHERE id = ?",
    { tostring(err), next_attempt, id })
end

--- sp:uploaded(id, receipt_text): the repository stored it; only the notifications are left.
---@param id string
---@param receipt string the receipt's text
function Spool:uploaded(id, receipt)
  self.db:run("UPDATE outbox SET receipt = ?, next_attempt = 0 WHERE id = ?", { receipt, id })
end

--- sp:announced(id): "not delivered" notifications went out for it.
---@param id string
function Spool:announced(id)
  self.db:run("UPDATE outbox SET announced = 1 WHERE id = ?", { id })
end

--- sp:wake(): every entry is due now (the repository or the server is back).
---(no parameters, no results)
function Spool:wake()
  self.db:run("UPDATE outbox SET next_attempt = 0")
end

---@param id string
function Spool:remove(id)
  self.db:run("DELETE FROM outbox WHERE id = ?", { id })
end

---@return integer count
function Spool:count()
  local row = self.db:first("SELECT count(*) AS n FROM outbox")
  return row and row.n or 0
end

---(no parameters, no results)
function Spool:close()
  if self.db then self.db:close() end
end
Spool.__close = Spool.close

return M
