--- sacm.roles.collector: collects posture attributes on this host and publishes them to the grid.
--
--   local collector = require "sacm.roles.collector"
--   local c = assert(collector.start{ jid = "collector@grid.example/web1", password = ...,
--     cafile = ..., peers = { "orchestrator@grid.example" }, interval = 3600,
--     options = { files = { paths = { "/etc", "/usr/local/bin" } } } })
--
-- It advertises one disco feature per posture kind it can collect here, answers the collect,
-- status and cancel commands (docs/protocol.md), and collects on a schedule when `interval` is
-- set. A collection becomes one posture set (one posture per kind: the data, or an error saying
-- why that kind could not be collected; a hung module is cut off by its time budget), which goes
-- into the durable spool, is uploaded to the repository, and is then announced on the posture
-- node with one small notification per kind (the posture itself when small, else a reference).
local collect = require "sacm.collect"
local member = require "sacm.grid.member"
local proto = require "sacm.grid.protocol"
local ratelimit = require "sacm.ratelimit"
local payload = require "sacm.grid.payload"
local task = require "sacm.task"
local timer = require "sacm.timer"
local time = require "sacm.time"
local crypto = require "sacm.crypto"
local xml = require "sacm.xml"
local errors = require "sacm.error"
local delivery = require "sacm.grid.delivery"

local M = {}
local log = require("sacm.log").new("collector")

M.TIMEOUT = 30 -- default time budget of one kind, seconds
M.DELIVERY_WAIT = 20 -- seconds a collection waits for the repository before reporting its posture as late

---@class sacm.roles.Collector a collector role (collector.start)
---@field member table its sacm.grid.member
---@field endpoint string the endpoint it speaks for
---@field closed boolean?
local Collector = {}
Collector.__index = Collector

-- The endpoint this collector speaks for: a configured name, else the machine id, else the hostname.
local function identify(opts)
  local os_data = collect.run("os", { timeout = 10 })
  local attrs = os_data and os_data.attributes or {}
  local endpoint = opts.endpoint or attrs.machine_id or attrs.hostname
  if not endpoint or endpoint == "" then return nil, errors.new("internal-error", "cannot identify this endpoint") end
  return endpoint, attrs.hostname
end

-- Kinds that apply here, and the others with the reason (they are not advertised, but a full
-- collection reports them as not applicable, so the rules that need them say notapplicable).
local function applicable_kinds(wanted, options)
  local kinds, inapplicable = {}, {}
  for _, kind in ipairs(wanted or collect.kinds()) do
    local mod = collect.module(kind)
    if mod then
      local ok, yes, reason = pcall(mod.applicable, options[kind] or {})
      if ok and yes then
        kinds[#kinds + 1] = kind
      else
        inapplicable[kind] = ok and (reason or "not applicable on this endpoint") or tostring(yes)
      end
    end
  end
  return kinds, inapplicable
end

-- A posture's element without its data: its attributes, for a reference or an error notice.
local function head_of(p)
  local el = xml.element("posture", {})
  for k, v in pairs(p.attr) do el.attr[k] = v end
  el.ns = p.ns
  return el
end

-- Notifications of one posture set: each posture itself when it is small, else a reference to
-- where the repository serves it (docs/protocol.md, 4.1).
local function notices(set_el, receipt)
  local out = {}
  for p in set_el:children("posture", proto.NS_POSTURE) do
    local text = xml.serialize(p)
    local entry = receipt and receipt.by_id[p.attr.id]
    if #text <= proto.INLINE_MAX or not entry then
      out[#out + 1] = { id = p.attr.id, el = p }
    else
      local ref = head_of(p)
      ref.attr.href, ref.attr.size, ref.attr.digest = entry.href, tostring(entry.size), payload.DIGEST_PREFIX .. entry.digest
      out[#out + 1] = { id = p.attr.id, el = ref }
    end
  end
  return out
end

-- The same postures as errors: what the grid is told when the set could not be delivered.
local function error_notices(set_el, condition, text)
  local out = {}
  for p in set_el:children("posture", proto.NS_POSTURE) do
    local e = head_of(p)
    e.attr.status = "error"
    e:tag("error", { condition = condition }):text(payload.clip(text)):up()
    out[#out + 1] = { id = p.attr.id, el = e }
  end
  return out
end

local function publish_all(self, list)
  local published, first_err = 0, nil
  for _, n in ipairs(list) do
    local ok, err = self.member:publish("posture", n.id, n.el)
    if ok then published = published + 1 else first_err = first_err or err end
  end
  return published, first_err
end

local function announce(self, entry, receipt)
  local set_el = assert(xml.parse(entry.body))
  local published, err = publish_all(self, notices(set_el, receipt))
  if err then return nil, err end
  self.published = self.published + published
  if self.delivery.waiting[entry.id] then self.announced[entry.id] = published end -- for the waiting collect()
  return true
end

local function refused(self, entry, err)
  local set_el = assert(xml.parse(entry.body))
  publish_all(self, error_notices(set_el, "upload-refused", tostring(err.text or err)))
end

--- c:all_kinds() -> what a collection of "every kind" covers: the kinds advertised, and those not
-- applicable on this endpoint (reported as such, so rules that need them say notapplicable).
---@return string[] kinds
function Collector:all_kinds()
  local kinds = { table.unpack(self.kinds) }
  for kind in pairs(self.inapplicable) do kinds[#kinds + 1] = kind end
  table.sort(kinds)
  return kinds
end

--- c:collect(kinds, correlation, timeout) -> summary {collection, published, failed, spooled, kinds}.
-- Collects the kinds concurrently, then delivers them as one posture set.
---@param kinds? string[] default: every kind
---@param correlation? string the assessment's id
---@param budget? number seconds per kind
---@return {collection: string, published: integer, failed: table, spooled: boolean?, kinds: string[]} summary
function Collector:collect(kinds, correlation, budget)
  local collection = crypto.uuid()
  if not kinds or #kinds == 0 then kinds = self:all_kinds() end
  local summary = { collection = collection, correlation = correlation, published = 0, failed = 0, spooled = 0,
    kinds = kinds }
  local entry = { correlation = correlation, started = time.now(), jobs = {} }
  self.running[collection] = entry
  self.member:status("collection-started", { collection = collection, kinds = table.concat(kinds, " ") }, nil,
    correlation)
  local jobs, postures = entry.jobs, {}
  for i, kind in ipairs(kinds) do
    jobs[#jobs + 1] = task.spawn({ name = "collect " .. kind }, function()
      local opts = {}
      for k, v in pairs(self.options[kind] or {}) do opts[k] = v end
      opts.timeout = budget or opts.timeout or self.timeout
      local started = time.monotonic()
      local data, err
      if self.kind_set[kind] then
        -- a cancelled collection still reports each kind it did not finish
        local ok, a, b = pcall(collect.run, kind, opts)
        if ok then
          data, err = a, b
        elseif type(a) == "table" and a.condition then
          err = a
        else
          err = errors.new("internal-error", tostring(a))
        end
      elseif self.inapplicable[kind] then
        err = errors.new("not-applicable", self.inapplicable[kind])
      else
        err = errors.new("not-applicable", ("this collector does not collect '%s'"):format(kind))
      end
      local p = { id = crypto.uuid(), kind = kind, endpoint = self.endpoint, hostname = self.hostname,
        collected = time.now(), collector = self.member.conn.jid, correlation = correlation,
        module_version = collect.module(kind) and collect.module(kind).version }
      if data then
        p.data = data
      else
        p.error = { condition = err.condition, text = err.text }
        if err.condition ~= "not-applicable" then
          summary.failed = summary.failed + 1
          log.warn("%s: %s", kind, tostring(err))
        end
      end
      local ok, el = pcall(payload.posture, p)
      if not ok then -- a value the wire cannot carry: the kind reports that instead
        p.data, p.error = nil, { condition = "internal-error", text = "posture cannot be encoded: " .. tostring(el) }
        summary.failed = summary.failed + 1
        el = payload.posture(p)
      end
      postures[i] = el
      log.debug("collected %s posture %s (%.0f ms)", kind, p.id, (time.monotonic() - started) * 1000)
    end)
  end
  local results = task.all(jobs)
  local err
  for _, r in ipairs(results) do
    if not r.ok then err = r.err end
  end
  self.running[collection] = nil
  self.last_collection = time.now()
  local list = {}
  for i = 1, #kinds do list[#list + 1] = postures[i] end
  if #list > 0 then
    local set_el = payload.posture_set({ id = collection, endpoint = self.endpoint, hostname = self.hostname,
      collector = self.member.conn.jid, correlation = correlation, postures = list })
    local state, derr = self.delivery:submit(collection, "posture-set", xml.serialize(set_el), self.delivery_wait)
    if state == "delivered" then
      summary.published = self.announced[collection] or 0
      self.announced[collection] = nil
      log.info("delivered posture of %d kind(s)%s", #list, correlation and (" for " .. correlation) or "")
    elseif state == "refused" then
      summary.failed = #list
      err = err or derr
    else
      -- safe in the spool and resent later; meanwhile the grid hears why this posture is late
      summary.spooled = #list
      local text = ("posture not delivered yet: %s; kept in the collector's spool and resent when the repository is "
        .. "back"):format(tostring(derr and (derr.text or derr) or "no answer"))
      publish_all(self, error_notices(set_el, "not-delivered", text))
      self.delivery.spool:announced(collection)
      err = err or derr
    end
  end
  local stype = (err or summary.failed == #kinds) and "collection-failed" or "collection-done"
  self.member:status(stype, { collection = collection, kinds = table.concat(kinds, " "), published = summary.published,
    failed = summary.failed, spooled = summary.spooled }, err and tostring(err) or nil, correlation)
  return summary
end

local function add_commands(self, allowed, limits)
  local cmds = self.member.commands
  cmds:add(proto.CMD.collect, {
    name = "Collect posture",
    allowed = allowed,
    rate = ratelimit.for_command("collect", limits), -- per peer: docs/protocol.md 8
    end_on_refusal = true, -- docs/protocol.md 3: a refused submission ends the session
    form = function() return proto.collect_form(self.kinds) end,
    run = function(session, values)
      local correlation = values.correlation
      if not correlation or correlation == "" then correlation = crypto.uuid() end
      local timeout = values.timeout -- an integer in 1..MAX_KIND_TIMEOUT, checked by the form
      local kinds, seen = {}, {}
      for _, k in ipairs(values.kinds or {}) do -- the form checked each is offered; a repeat is one
        if not seen[k] then seen[k] = true; kinds[#kinds + 1] = k end
      end
      if #kinds == 0 then kinds = self:all_kinds() end
      -- collect in the background: the posture arrives over pubsub, the command answers at once
      task.spawn({ name = "collection " .. correlation }, function()
        self:collect(kinds, correlation, timeout)
      end)
      session:note(("collecting %d kind(s)"):format(#kinds))
      return { title = "Collection started", fields = {
        { var = "correlation", value = correlation },
        { var = "endpoint", value = self.endpoint },
        { var = "kinds", type = "text-multi", values = kinds },
      } }
    end,
  })
  cmds:add(proto.CMD.status, {
    name = "Collector status",
    allowed = allowed,
    end_on_refusal = true, -- docs/protocol.md 3: a refused submission ends the session
    run = function()
      local running = 0
      for _ in pairs(self.running) do running = running + 1 end
      return { title = "Collector status", fields = {
        { var = "role", value = "collector" },
        { var = "endpoint", value = self.endpoint },
        { var = "hostname", value = self.hostname },
        { var = "kinds", type = "text-multi", values = self.kinds },
        { var = "running", value = tostring(running) },
        { var = "published", value = tostring(self.published) },
        { var = "uptime", value = tostring(math.floor(time.now() - self.member.started)) },
        { var = "last_collection", value = self.last_collection and time.format(self.last_collection) or "" },
      } }
    end,
  })
  cmds:add(proto.CMD.cancel, {
    name = "Cancel a collection",
    allowed = allowed,
    end_on_refusal = true, -- docs/protocol.md 3: a refused submission ends the session
    form = proto.CANCEL_FORM,
    run = function(session, values)
      local n = 0
      for _, r in pairs(self.running) do
        if r.correlation == values.correlation then
          for _, job in ipairs(r.jobs) do job:cancel("cancelled by " .. session.from) end
          n = n + 1
        end
      end
      if n == 0 then return nil, errors.new("item-not-found", "no running collection with that correlation id") end
      return ("cancelled %d collection(s)"):format(n)
    end,
  })
end

--- collector.start(opts) -> collector | nil, err
-- opts: the sacm.grid.member options (jid, password/client cert, cafile, pubsub, peers, ...), and
-- kinds (default: every applicable one), options (per-kind collection options), timeout (per kind,
-- default 30 s), interval (seconds between scheduled collections; none by default), endpoint
-- (name of this endpoint; default the machine id), allowed (who may run commands: JIDs/domains;
-- default the peers).
---@param opts table the sacm.grid.member options, and kinds, options, timeout, interval, endpoint, allowed
---@return sacm.roles.Collector? collector
---@return sacm.Error? err
function M.start(opts)
  local self = setmetatable({ options = opts.options or {}, timeout = opts.timeout or M.TIMEOUT,
    running = {}, published = 0, announced = {} }, Collector)
  self.endpoint, self.hostname = identify(opts)
  if not self.endpoint then return nil, self.hostname end
  self.kinds, self.inapplicable = applicable_kinds(opts.kinds, self.options)
  self.kind_set = {}
  for _, k in ipairs(self.kinds) do self.kind_set[k] = true end
  local mopts = {}
  for k, v in pairs(opts) do mopts[k] = v end
  mopts.role = "collector"
  mopts.info = { endpoint = self.endpoint, hostname = self.hostname, kinds = self.kinds }
  mopts.features = { kinds = { prefix = proto.feature_collect, names = self.kinds } }
  self.delivery_wait = opts.delivery_wait or M.DELIVERY_WAIT
  self.member, self.delivery = delivery.producer("collector", mopts, opts, {
    announce = function(e, receipt) return announce(self, e, receipt) end,
    refused = function(e, rerr) refused(self, e, rerr) end })
  if not self.member then return nil, self.delivery end
  add_commands(self, member.allowed(opts.allowed or opts.peers or {}, self.member.conn.jid), opts.rate_limits)
  if opts.interval then
    self.schedule = timer.every(opts.interval, function() self:collect(nil, nil) end)
  end
  log.info("collecting %s for endpoint %s", table.concat(self.kinds, ", "), self.endpoint)
  return self
end

---(no parameters, no results)
function Collector:close()
  if self.closed then return end
  self.closed = true
  if self.schedule then self.schedule:cancel() end
  for _, r in pairs(self.running) do
    for _, job in ipairs(r.jobs) do job:cancel("collector closed") end
  end
  self.delivery:close()
  self.member:close()
end
Collector.__close = Collector.close

return M
