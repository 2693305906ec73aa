--- sacm.roles.collector: collects posture attributes on this host and publishes them to the grid.
--
--   local collector = require "sacm.roles.collector"
--   local c = assert(collector.start{ jid = "collector@grid.example/web1", password = ...,
--     cafile = ..., peers = { "orchestrator@grid.example" }, interval = 3600,
--     options = { files = { paths = { "/etc", "/usr/local/bin" } } } })
--
-- It advertises one disco feature per posture kind it can collect here, answers the collect,
-- status and cancel commands (docs/protocol.md), collects on a schedule when `interval` is set,
-- and publishes one posture item per kind to the grid's posture node: the data, or an error
-- saying why that kind could not be collected (a hung module is cut off by its time budget).
local collect = require "sacm.collect"
local member = require "sacm.grid.member"
local proto = require "sacm.grid.protocol"
local payload = require "sacm.grid.payload"
local task = require "sacm.task"
local timer = require "sacm.timer"
local time = require "sacm.time"
local crypto = require "sacm.crypto"
local errors = require "sacm.error"

local M = {}
local log = require("sacm.log").new("collector")

M.TIMEOUT = 30 -- default time budget of one kind, seconds

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

--- c:collect(kinds, correlation, timeout) -> summary {collection, published, failed, kinds}.
-- Collects the kinds concurrently and publishes each as it finishes.
function Collector:collect(kinds, correlation, budget)
  local collection = crypto.uuid()
  if not kinds or #kinds == 0 then
    kinds = { table.unpack(self.kinds) }
    for kind in pairs(self.inapplicable) do kinds[#kinds + 1] = kind end
    table.sort(kinds)
  end
  local summary = { collection = collection, correlation = correlation, published = 0, failed = 0, kinds = kinds }
  local entry = { correlation = correlation, started = time.now(), jobs = {} }
  self.running[collection] = entry
  self.member:status("collection-started", { collection = collection, kinds = table.concat(kinds, " ") }, nil,
    correlation)
  local jobs = entry.jobs
  for _, kind in ipairs(kinds) do
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
      local ok, perr = self.member:publish("posture", p.id, payload.posture(p))
      if ok then
        summary.published = summary.published + 1
        self.published = self.published + 1
        log.info("published %s posture %s (%.0f ms)%s", kind, p.id, (time.monotonic() - started) * 1000,
          correlation and (" for " .. correlation) or "")
      else
        log.error("could not publish %s posture: %s", kind, tostring(perr))
        summary.failed = summary.failed + 1
      end
    end)
  end
  local results = task.all(jobs)
  local err
  for _, r in ipairs(results) do
    if not r.ok then err = r.err end
  end
  self.running[collection] = nil
  self.last_collection = time.now()
  local stype = (err or summary.failed == #kinds) and "collection-failed" or "collection-done"
  self.member:status(stype, { collection = collection, published = summary.published, failed = summary.failed },
    err and tostring(err) or nil, correlation)
  return summary
end

local function add_commands(self, allowed)
  local cmds = self.member.commands
  cmds:add(proto.CMD.collect, {
    name = "Collect posture",
    allowed = allowed,
    form = function() return proto.collect_form(self.kinds) end,
    run = function(session, values)
      local correlation = values.correlation
      if not correlation or correlation == "" then correlation = crypto.uuid() end
      local timeout = tonumber(values.timeout)
      local kinds = values.kinds or {}
      -- collect in the background: the posture arrives over pubsub, the command answers at once
      task.spawn({ name = "collection " .. correlation }, function()
        self:collect(kinds, correlation, timeout)
      end)
      session:note(("collecting %d kind(s)"):format(#kinds > 0 and #kinds or #self.kinds))
      return { title = "Collection started", fields = {
        { var = "correlation", value = correlation },
        { var = "endpoint", value = self.endpoint },
        { var = "kinds", type = "text-multi", values = #kinds > 0 and kinds or self.kinds },
      } }
    end,
  })
  cmds:add(proto.CMD.status, {
    name = "Collector status",
    allowed = allowed,
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
function M.start(opts)
  local self = setmetatable({ options = opts.options or {}, timeout = opts.timeout or M.TIMEOUT,
    running = {}, published = 0 }, Collector)
  local err
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
  self.member, err = member.join(mopts)
  if not self.member then return nil, err end
  add_commands(self, member.allowed(opts.allowed or opts.peers or {}, self.member.conn.jid))
  if opts.interval then
    self.schedule = timer.every(opts.interval, function() self:collect(nil, nil) end)
  end
  log.info("collecting %s for endpoint %s", table.concat(self.kinds, ", "), self.endpoint)
  return self
end

function Collector:close()
  if self.schedule then self.schedule:cancel() end
  for _, r in pairs(self.running) do
    for _, job in ipairs(r.jobs) do job:cancel("collector closed") end
  end
  self.member:close()
end
Collector.__close = Collector.close

return M
