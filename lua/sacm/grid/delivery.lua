--- sacm.grid.delivery: store and forward for a producer (collector, evaluator).
--
-- Each document goes into the durable spool first, then to the repository (upload slot over
-- XMPP, HTTPS PUT, receipt), then its notifications go out on the grid's pubsub nodes; only then
-- does it leave the spool. A failure on the way is retried with backoff (and at once when the
-- connection or the repository comes back); a refusal (the repository says the document is
-- wrong, too large or not ours) is final and handed to `refused`.
--
--   local d = delivery.new{ member = m, spool = sp, client = upload_client,
--     announce = function(entry, receipt) ... end,  -- publish the notifications: true | nil, err
--     refused = function(entry, err) ... end }      -- what to say about a refused document
--   local state, err = d:submit(id, "posture-set", text, 20)  -- "delivered" | "pending" | "refused"
local task = require "sacm.task"
local sync = require "sacm.sync"
local time = require "sacm.time"
local errors = require "sacm.error"
local upload = require "sacm.grid.upload"
local spool = require "sacm.grid.spool"
local member = require "sacm.grid.member"

local M = {}
local log = require("sacm.log").new("delivery")

M.MAX_BACKOFF = 30   -- seconds between attempts at most
M.FIRST_BACKOFF = 0.5

---@class sacm.grid.Delivery sends spooled documents to the repository until they are stored (delivery.new)
---@field spool sacm.grid.Spool
local Delivery = {}
Delivery.__index = Delivery

local function backoff(self, attempts)
  local base = math.min(self.max_backoff, M.FIRST_BACKOFF * 2 ^ math.min(attempts, 16))
  return base * (0.75 + math.random() * 0.5) -- jitter: producers that failed together do not retry together
end

-- Wakes whoever waits for id's outcome.
local function finish(self, id, state, err)
  local w = self.waiting[id]
  if not w then return end
  w.state, w.err = state, err
  w.done:set()
end

local function defer(self, e, err)
  self.spool:deferred(e.id, err, time.now() + backoff(self, e.attempts))
  local w = self.waiting[e.id]
  if w then w.err = err end
  if e.attempts == 0 or e.attempts % 10 == 9 then
    log.warn("%s %s not delivered yet (attempt %d), kept in the spool: %s", e.kind, e.id, e.attempts + 1, tostring(err))
  end
end

local function attempt(self, e)
  local receipt, err
  if e.receipt then
    receipt, err = upload.parse_receipt(e.receipt, "the spool")
    if not receipt then
      self.spool:remove(e.id)
      return finish(self, e.id, "refused", err)
    end
  else
    receipt, err = self.client:upload(e.id, e.body)
    if not receipt then
      if err.permanent then
        log.error("the repository refused %s %s: %s", e.kind, e.id, tostring(err))
        self.spool:remove(e.id)
        self.refused_count = self.refused_count + 1
        local ok, rerr = pcall(self.refused, e, err)
        if not ok then log.error("reporting the refusal of %s failed: %s", e.id, tostring(rerr)) end
        return finish(self, e.id, "refused", err)
      end
      defer(self, e, err)
      return
    end
    self.spool:uploaded(e.id, receipt.text)
  end
  local ok, aerr = self.announce(e, receipt)
  if not ok then
    defer(self, e, aerr)
    return
  end
  self.spool:remove(e.id)
  self.delivered_count = self.delivered_count + 1
  if e.attempts > 0 then log.info("%s %s delivered after %d attempt(s)", e.kind, e.id, e.attempts + 1) end
  finish(self, e.id, "delivered")
end

-- The background task: delivers what is due, then sleeps until the next entry is due or
-- something wakes it (a submission, a reconnection, the repository coming online).
local function run(self)
  while not self.closed do
    self.kick:clear()
    if self.member.conn.state == "connected" then
      for _, e in ipairs(self.spool:due(time.now())) do
        if self.closed then return end
        local ok, err = pcall(attempt, self, e)
        if not ok then
          log.error("delivering %s %s raised: %s", e.kind, e.id, tostring(err))
          self.spool:deferred(e.id, err, time.now() + self.max_backoff)
        end
      end
    end
    local nxt = self.spool:next_due()
    local wait = nxt and math.max(0.05, nxt - time.now()) or 3600
    self.kick:wait(math.min(wait, 3600))
  end
end

--- d:wake(): retry everything now.
---(no parameters, no results)
function Delivery:wake()
  self.spool:wake()
  self.kick:set()
end

--- d:submit(id, kind, body [, wait]) -> "delivered" | "pending", err | "refused", err
-- Spools the document and waits up to `wait` seconds (default 30) for it to be delivered.
-- "pending" means it is safe in the spool and will be resent; err says why it is late.
---@param id string
---@param kind string
---@param body string
---@param wait? number seconds (30)
---@return "delivered"|"pending"|"refused" state
---@return sacm.Error? err why it is late or was refused
function Delivery:submit(id, kind, body, wait)
  local added, err = self.spool:add({ id = id, kind = kind, body = body })
  if added == nil then return "refused", errors.new("internal-error", "cannot spool " .. id .. ": " .. tostring(err)) end
  local w = self.waiting[id] or { done = sync.event() }
  self.waiting[id] = w
  self.kick:set()
  w.done:wait(wait or 30)
  self.waiting[id] = nil
  if w.state then return w.state, w.err end
  if w.err then return "pending", w.err end
  local held = self.spool:get(id)
  local why = held and held.last_error or (self.member.conn.state ~= "connected" and "the XMPP connection is down")
    or "the spool is still delivering older documents"
  return "pending", errors.new("remote-server-timeout", ("not delivered within %gs: %s"):format(wait or 30, why))
end

--- d:stats() -> {spooled, delivered, refused}
---@return {spooled: integer, delivered: integer, refused: integer}
function Delivery:stats()
  return { spooled = self.spool:count(), delivered = self.delivered_count, refused = self.refused_count }
end

--- delivery.new(opts) -> delivery. opts: member, spool, client (sacm.grid.upload client),
-- announce(entry, receipt) -> true | nil, err, refused(entry, err), max_backoff (seconds).
---@param opts {member: sacm.grid.Member, spool: sacm.grid.Spool, client: table, announce: (fun(entry: sacm.grid.SpoolEntry, receipt: table): true?, sacm.Error?), refused: fun(entry: sacm.grid.SpoolEntry, err: sacm.Error), max_backoff?: number}
---@return sacm.grid.Delivery
function M.new(opts)
  local self = setmetatable({ member = opts.member, spool = opts.spool, client = opts.client,
    announce = opts.announce, refused = opts.refused or function() end, max_backoff = opts.max_backoff or M.MAX_BACKOFF,
    waiting = {}, kick = sync.event(), delivered_count = 0, refused_count = 0 }, Delivery)
  self.status_handler = opts.member.conn:on("status", function(event)
    if event == "reconnected" then self:wake() end
  end)
  self.task = task.spawn({ name = "delivery" }, run, self)
  local n = self.spool:count()
  if n > 0 then log.info("%d document(s) left in the spool from before: delivering them", n) end
  return self
end

--- delivery.producer(role, mopts, opts, handlers) -> member, delivery, fetcher | nil, err
-- What collectors and evaluators share: checks that a repository is configured, opens the spool
-- (opts.spool, default in memory), joins the grid (mopts: the member.join options), and starts
-- delivering through an upload client to the repository's online JID; the delivery is woken each
-- time the repository comes online. handlers: announce, refused (as for new).
---@param role string
---@param mopts table the member.join options
---@param opts table the role's options (repository, spool)
---@param handlers {announce: function, refused: function}
---@return sacm.grid.Member? member
---@return sacm.grid.Delivery|sacm.Error delivery, or err
---@return table? client the upload client
function M.producer(role, mopts, opts, handlers)
  if not opts.repository then
    return nil, errors.new("bad-config", ("%s.start needs repository: the JID of the grid's repository, which "
      .. "stores what the %s produces"):format(role, role))
  end
  local sp, err = spool.open(opts.spool or ":memory:")
  if not sp then
    return nil, errors.new(err.condition or "bad-config", ("the %s's spool %s: %s"):format(role,
      tostring(opts.spool), tostring(err)))
  end
  local m
  m, err = member.join(mopts)
  if not m then
    sp:close()
    return nil, err
  end
  local client = upload.client(m.conn, { service = function() return m:repository_jid() end,
    cafile = opts.http_cafile or opts.cafile, cert = opts.client_cert, key = opts.client_key })
  local d = M.new({ member = m, spool = sp, client = client, max_backoff = opts.delivery_backoff,
    announce = handlers.announce, refused = handlers.refused })
  m:on_repository(function() d:wake() end)
  return m, d, client
end

--- d:close(): stops delivering (what is left stays in the spool for the next start) and closes
-- the spool.
---(no parameters, no results)
function Delivery:close()
  if self.closed then return end
  self.closed = true
  self.status_handler.remove()
  self.kick:set()
  if self.task then self.task:cancel("delivery closed") end
  for id in pairs(self.waiting) do finish(self, id, "pending", errors.new("cancelled", "the producer closed")) end
  self.spool:close()
end

return M
