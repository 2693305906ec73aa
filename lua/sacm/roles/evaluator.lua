--- sacm.roles.evaluator: judges posture against the policies in a directory and publishes results.
--
--   local evaluator = require "sacm.roles.evaluator"
--   local e = assert(evaluator.start{ jid = ..., password = ..., cafile = ..., policies = "policies",
--                                     peers = { "orchestrator@grid.example" } })
--
-- It subscribes to the grid's posture node and keeps the newest posture of each kind per endpoint
-- (and the posture of recent correlation ids). Posture from scheduled collections (no correlation
-- id) is evaluated as it arrives (`auto`, on by default); orchestrated collections are evaluated
-- when the evaluate command asks. Each rule gives one result per endpoint, published to the
-- results node with the policy's version (content hash). Policies are hot-reloaded: a file that
-- fails to load leaves the previous version active and is reported as a status notification.
local policy = require "sacm.policy"
local member = require "sacm.grid.member"
local proto = require "sacm.grid.protocol"
local ratelimit = require "sacm.ratelimit"
local payload = require "sacm.grid.payload"
local report = require "sacm.report"
local task = require "sacm.task"
local time = require "sacm.time"
local crypto = require "sacm.crypto"
local xml = require "sacm.xml"
local errors = require "sacm.error"
local jidlib = require "sacm.xmpp.jid"
local delivery = require "sacm.grid.delivery"
local shard = require "sacm.grid.shard"

local M = {}
local log = require("sacm.log").new("evaluator")

M.KEEP_CORRELATIONS = 64 -- correlation ids whose posture is kept for the evaluate command
M.AUTO_DELAY = 0.3       -- seconds to wait for the other kinds of the same collection
M.DELIVERY_WAIT = 20     -- seconds an evaluation waits for the repository to take its results

---@class sacm.roles.Evaluator an evaluator role (evaluator.start)
---@field member table its sacm.grid.member
---@field engine sacm.policy.Engine
---@field closed boolean?
local Evaluator = {}
Evaluator.__index = Evaluator

local function remember(self, p)
  local latest = self.latest[p.endpoint]
  if not latest then
    latest = {}
    self.latest[p.endpoint] = latest
    self.hostnames[p.endpoint] = p.hostname
  end
  -- newest by collection time, but never later than when it arrived: a clock up to MAX_CLOCK_SKEW
  -- ahead cannot keep its posture "newest" past the next real one
  p.order = math.min(p.collected, time.now())
  local have = latest[p.kind]
  if not have or have.order <= p.order then latest[p.kind] = p end
  if p.correlation then
    local c = self.by_correlation[p.correlation]
    if not c then
      c = {}
      self.by_correlation[p.correlation] = c
      self.correlation_order[#self.correlation_order + 1] = p.correlation
      if #self.correlation_order > M.KEEP_CORRELATIONS then
        self.by_correlation[table.remove(self.correlation_order, 1)] = nil
      end
    end
    c[p.endpoint] = c[p.endpoint] or {}
    c[p.endpoint][p.kind] = p
  end
end

-- Posture announced by reference is fetched from the repository when it is first judged (the
-- size and digest of the notification are checked), and kept with the posture it belongs to.
local function fetch_missing(self, merged)
  local jobs = {}
  for kind, p in pairs(merged) do
    if p.ref and not p.data and not p.error then
      jobs[#jobs + 1] = task.spawn({ name = "fetch " .. kind }, function()
        local el, err = self.fetcher:fetch_element(p.ref)
        local full, perr
        if el then
          full, perr = payload.parse_posture(el)
          if full and (full.id ~= p.id or full.kind ~= p.kind or full.endpoint ~= p.endpoint) then
            full, perr = nil, errors.new("bad-response", "the document fetched is another posture than announced")
          end
        end
        if full and full.data then
          p.data = full.data
        else
          p.fetch_error = tostring(err or perr or "the fetched posture holds no data")
          log.error("posture %s (%s of %s) could not be fetched: %s", p.id, p.kind, p.endpoint, p.fetch_error)
        end
      end)
    end
  end
  task.all(jobs)
end

-- The posture the engine sees: kind -> data; a kind the collector found not applicable here ->
-- {applicable = false, reason}; a failed collection -> {error = text}.
local function view(posture_by_kind)
  local v, ids = {}, {}
  for kind, p in pairs(posture_by_kind) do
    if p.error and p.error.condition == "not-applicable" then
      v[kind] = { applicable = false, reason = p.error.text }
    elseif p.error then
      v[kind] = { error = ("%s: %s"):format(p.error.condition, p.error.text) }
    elseif not p.data then
      v[kind] = { error = "not-fetched: " .. tostring(p.fetch_error or "the posture announced could not be fetched") }
    else
      v[kind] = p.data
    end
    ids[#ids + 1] = p.id
  end
  table.sort(ids)
  return v, ids
end

-- Delivers one result set to the repository (announcing it as pending when the repository is
-- away) -> state ("delivered", "pending", "refused" or "failed"), err.
local function deliver_set(self, endpoint, correlation, evaluated, elements, totals, id)
  local set_id = id or crypto.uuid()
  local set_el = payload.result_set({ id = set_id, endpoint = endpoint, hostname = self.hostnames[endpoint],
    evaluator = self.member.conn.jid, evaluated = evaluated, correlation = correlation, totals = totals,
    results = elements })
  -- a set that cannot be written is logged and reported (status delivery='failed'), never dropped silently
  local encoded, body = pcall(xml.serialize, set_el)
  local state, derr = "failed", "the result set could not be encoded: " .. tostring(body)
  if encoded then state, derr = self.delivery:submit(set_id, "result-set", body, self.delivery_wait) end
  if state == "pending" then
    log.warn("results of %s%s not delivered yet, kept in the spool: %s", endpoint,
      correlation and (" [" .. correlation .. "]") or "", tostring(derr))
    -- whoever waits for them hears them now, marked as not stored yet; they are announced again
    -- once the repository has them
    local notice = set_el
    if #xml.serialize(set_el) > proto.INLINE_MAX then
      notice = payload.result_set({ id = set_id, endpoint = endpoint, hostname = self.hostnames[endpoint],
        evaluator = self.member.conn.jid, evaluated = evaluated, correlation = correlation, totals = totals })
    end
    notice.attr.delivery = "pending"
    local ok, perr = self.member:publish("results", set_id, notice)
    if not ok then log.warn("results of %s not announced: %s", endpoint, tostring(perr)) end
  elseif state ~= "delivered" then
    log.error("results of %s%s not delivered (%s): %s", endpoint, correlation and (" [" .. correlation .. "]") or "",
      tostring(state), tostring(derr))
  end
  return state, derr
end

--- e:evaluate(endpoint, [correlation], [policy_ids]) -> totals {pass = n, ...}, results | nil, err
-- Evaluates the newest posture of the endpoint (the correlation's posture first, when given) and
-- publishes every result.
---@param endpoint string
---@param correlation? string the correlation's posture first
---@param policy_ids? string[]
---@param kinds? string[] only rules all of whose posture kinds are among these
---@return table<string, integer>? totals result -> count
---@return sacm.policy.Result[]|sacm.Error results, or err (item-not-found: no posture)
function Evaluator:evaluate(endpoint, correlation, policy_ids, kinds)
  local merged = {}
  for kind, p in pairs(self.latest[endpoint] or {}) do merged[kind] = p end
  local c = correlation and self.by_correlation[correlation]
  if c and c[endpoint] then
    for kind, p in pairs(c[endpoint]) do merged[kind] = p end
  end
  if next(merged) == nil then
    return nil, errors.new("item-not-found", ("no posture of endpoint '%s'"):format(endpoint))
  end
  fetch_missing(self, merged)
  local posture, ids = view(merged)
  -- fetched content is kept only for the newest posture of each kind: an older correlation's
  -- is fetched again if it is judged again, so memory does not grow with KEEP_CORRELATIONS
  local newest = self.latest[endpoint] or {}
  for kind, p in pairs(merged) do
    if p.ref and newest[kind] ~= p then p.data = nil end
  end
  local results = self.engine:evaluate(posture, { endpoint = endpoint, hostname = self.hostnames[endpoint] },
    { policies = policy_ids, kinds = kinds })
  local totals = report.totals(results)
  local evaluated = time.now()
  local elements = {}
  -- sharing the fleet, scheduled posture gets ids from what was judged: an endpoint judged by two
  -- evaluators during a handover is one result set in the repository (sacm.grid.shard)
  local set_id = self.shard and not correlation and shard.judgment_id(endpoint, ids, self.engine:policies(),
    table.concat(policy_ids or {}, ",") .. ";" .. table.concat(kinds or {}, ","))
  for _, r in ipairs(results) do
    r.id = set_id and shard.result_id(set_id, r.policy_id .. " " .. r.rule_id) or crypto.uuid()
    r.endpoint, r.hostname, r.correlation = endpoint, self.hostnames[endpoint], correlation
    -- provenance per rule: the posture it saw, and when the oldest of it was collected
    local used, oldest = {}, nil
    for _, kind in ipairs(r.requires or {}) do
      local p = merged[kind]
      if p then
        used[#used + 1] = p.id
        if not oldest or p.collected < oldest then oldest = p.collected end
      end
    end
    table.sort(used)
    r.evaluator, r.evaluated = self.member.conn.jid, evaluated
    r.posture_ids = #used > 0 and used or ids
    r.posture_collected = oldest
    local ok, el = pcall(payload.result, r)
    if not ok then -- text the wire cannot carry (issue of the policy): say so instead of losing it
      log.error("result %s of %s cannot be encoded: %s", r.rule_id, endpoint, tostring(el))
      r.result, r.evidence, r.title = "error", { "the rule's result could not be encoded: " .. tostring(el) }, r.rule_id
      el = payload.result(r)
    end
    elements[#elements + 1] = el
  end
  -- a set holds at most payload.MAX_SET results (what a repository takes): more rules, more sets;
  -- with a judgment id (sharded, scheduled posture) every set's id derives from it, so the same
  -- judgment made twice is stored once
  local state, derr = "delivered", nil
  local n = 0
  for first = 1, math.max(#elements, 1), payload.MAX_SET do
    n = n + 1
    local last = math.min(#elements, first + payload.MAX_SET - 1)
    local id = set_id and (n == 1 and set_id or shard.result_id(set_id, "set " .. n)) or nil
    local s1, e1 = deliver_set(self, endpoint, correlation, evaluated, { table.unpack(elements, first, last) },
      report.totals({ table.unpack(results, first, last) }), id)
    if s1 ~= "delivered" then state, derr = s1, e1 end
  end
  self.evaluations = self.evaluations + 1
  log.info("%s%s: %d results (pass %d, fail %d, error %d)", endpoint,
    correlation and (" [" .. correlation .. "]") or "", totals.total, totals.pass, totals.fail, totals.error)
  self.member:status("evaluation-done", { endpoint = endpoint, total = totals.total, pass = totals.pass,
    fail = totals.fail, error = totals.error, delivery = state }, state ~= "delivered" and tostring(derr) or nil,
    correlation)
  return totals, results
end

-- The notification of a result set: the set itself when small, else its totals and a reference.
local function announce(self, entry, receipt)
  local set_el = assert(xml.parse(entry.body))
  local notice = set_el
  if #entry.body > proto.INLINE_MAX then
    local c = receipt.by_id[entry.id]
    if not c then return nil, errors.new("bad-response", "the repository's receipt does not list result set " .. entry.id) end
    local set = assert(payload.parse_result_set(set_el))
    set.ref, set.results = { href = c.href, size = c.size, digest = c.digest }, nil
    notice = payload.result_set(set)
  end
  local ok, err = self.member:publish("results", entry.id, notice)
  if not ok then return nil, err end
  return true
end

-- Scheduled posture: evaluate once the burst of kinds from one collection has arrived.
local function auto_evaluate(self, endpoint)
  if self.pending[endpoint] then return end
  self.pending[endpoint] = task.spawn({ name = "auto evaluation " .. endpoint }, function()
    task.sleep(M.AUTO_DELAY)
    self.pending[endpoint] = nil
    self:evaluate(endpoint)
  end)
end

-- Whether posture p may be believed: the pubsub service's word on who published it must be the
-- collector p names, and an endpoint's posture comes from one collector (the first seen here;
-- the repository holds the binding that counts). Refusals are counted and logged.
local function believable(self, item, p)
  local publisher = item.publisher and jidlib.bare(item.publisher)
  local collector = p.collector and jidlib.bare(p.collector)
  if not publisher then
    if not self.warned_no_publisher then
      self.warned_no_publisher = true
      log.warn("the pubsub service does not say who published posture: its provenance cannot be checked here "
        .. "(docs/deploy.md: expose_publisher for Prosody)")
    end
  elseif publisher ~= collector then
    return false, ("published by %s but names collector %s"):format(publisher, tostring(p.collector))
  end
  local owner = self.endpoint_owner[p.endpoint]
  if owner and collector and owner ~= collector then
    return false, ("endpoint %s's posture comes from %s, not %s"):format(p.endpoint, owner, collector)
  end
  if collector then self.endpoint_owner[p.endpoint] = owner or collector end
  return true
end

local function on_posture(self, item)
  local p, err = payload.parse_posture(item.payload)
  if not p then
    log.warn("ignored posture item %s: %s", tostring(item.id), tostring(err))
    return
  end
  local ok, why = believable(self, item, p)
  if not ok then
    self.refused_provenance = (self.refused_provenance or 0) + 1
    log.warn("ignored posture %s of %s: %s", p.id, p.endpoint, why)
    return
  end
  if p.collected > time.now() + proto.MAX_CLOCK_SKEW then
    -- a date far ahead would stay "the newest" and shadow every real posture after it
    self.refused_future = (self.refused_future or 0) + 1
    log.warn("ignored posture %s of %s: collected %s, more than %d s ahead of this clock", p.id, p.endpoint,
      time.format(p.collected), proto.MAX_CLOCK_SKEW)
    return
  end
  remember(self, p)
  local mine = not self.shard or self.shard:take(p.endpoint)
  if self.auto and not p.correlation and mine then auto_evaluate(self, p.endpoint) end
end

local function policy_ids(self)
  local ids = {}
  for _, pol in ipairs(self.engine:policies()) do ids[#ids + 1] = pol.id end
  table.sort(ids)
  return ids
end

local function advertise_policies(self)
  local ids = policy_ids(self)
  self.member:set_features("policies", proto.feature_policy, ids)
  self.member:update_info({ policies = ids })
end

local function on_policy_event(self, ev)
  if ev.type == "rejected" then
    -- sacm.policy has logged it (once); the grid hears it as a status notification
    self.member:status("policy-rejected", { file = ev.file }, tostring(ev.error))
  elseif ev.type == "loaded" or ev.type == "removed" then
    log.info("policy %s %s%s", tostring(ev.policy_id), ev.type, ev.version and (" (" .. ev.version:sub(1, 12) .. ")") or "")
    self.member:status(ev.type == "loaded" and "policy-loaded" or "policy-removed",
      { policy = ev.policy_id, version = ev.version })
    advertise_policies(self)
  end
end

local function lines(v)
  if type(v) == "table" then return v end
  local out = {}
  for line in tostring(v or ""):gmatch("[^\r\n]+") do
    line = line:match("^%s*(.-)%s*$")
    if line ~= "" then out[#out + 1] = line end
  end
  return out
end

local function add_commands(self, allowed, limits)
  local cmds = self.member.commands
  cmds:add(proto.CMD.evaluate, {
    name = "Evaluate posture",
    allowed = allowed,
    rate = ratelimit.for_command("evaluate", limits), -- per peer: docs/protocol.md 8
    end_on_refusal = true, -- docs/protocol.md 3: a refused submission ends the session
    form = function() return proto.evaluate_form(policy_ids(self)) end,
    run = function(session, values)
      local correlation = values.correlation ~= "" and values.correlation or nil
      if correlation and not self.by_correlation[correlation] then
        return nil, errors.new("item-not-found", ("no posture of correlation %s here (unknown, or older than the "
          .. "last %d collections this evaluator keeps)"):format(correlation, M.KEEP_CORRELATIONS))
      end
      local endpoints = lines(values.endpoints)
      if #endpoints == 0 then
        local from = correlation and self.by_correlation[correlation] or self.latest
        for e in pairs(from) do endpoints[#endpoints + 1] = e end
        table.sort(endpoints)
      end
      if #endpoints == 0 then return nil, errors.new("item-not-found", "no posture to evaluate") end
      local policies = values.policies and #values.policies > 0 and values.policies or nil
      local kinds = values.kinds and #values.kinds > 0 and values.kinds or nil
      local totals = report.totals({})
      local failed, evaluated, elsewhere = {}, {}, {}
      for _, e in ipairs(endpoints) do
        if self.shard and not self.shard:owns(e) then
          elsewhere[#elsewhere + 1] = e -- another evaluator of the shard group judges it
        else
          local t, err = self:evaluate(e, correlation, policies, kinds)
          if t then
            evaluated[#evaluated + 1] = e
            for k, n in pairs(t) do totals[k] = totals[k] + n end
          else
            failed[#failed + 1] = e
            session:note(("%s: %s"):format(e, tostring(err.text or err)), "warn")
          end
        end
      end
      local fields = { { var = "correlation", value = correlation or "" },
        { var = "endpoints", type = "text-multi", values = evaluated },
        { var = "total", value = tostring(totals.total) } }
      for _, r in ipairs(proto.RESULTS) do fields[#fields + 1] = { var = r, value = tostring(totals[r]) } end
      fields[#fields + 1] = { var = "failed", type = "text-multi", values = failed }
      if self.shard then fields[#fields + 1] = { var = "elsewhere", type = "text-multi", values = elsewhere } end
      return { title = "Evaluation done", fields = fields }
    end,
  })
  cmds:add(proto.CMD.status, {
    name = "Evaluator status",
    allowed = allowed,
    end_on_refusal = true, -- docs/protocol.md 3: a refused submission ends the session
    run = function()
      local pols, endpoints = {}, {}
      for _, pol in ipairs(self.engine:policies()) do pols[#pols + 1] = pol.id .. " " .. pol.version end
      for e in pairs(self.latest) do endpoints[#endpoints + 1] = e end
      table.sort(endpoints)
      return { title = "Evaluator status", fields = {
        { var = "role", value = "evaluator" },
        { var = "policies", type = "text-multi", values = pols },
        { var = "rules", value = tostring(#self.engine:rules()) },
        { var = "endpoints", type = "text-multi", values = endpoints },
        { var = "evaluations", value = tostring(self.evaluations) },
        { var = "uptime", value = tostring(math.floor(time.now() - self.member.started)) },
      } }
    end,
  })
end

--- evaluator.start(opts) -> evaluator | nil, err
-- opts: the sacm.grid.member options, policies (directory, default the policies shipped with sacmrun: SHAREDIR/policies), instructions and
-- memory (budgets per rule evaluation), auto (evaluate scheduled posture as it arrives; default
-- true), allowed (who may run commands; default the peers), shard (true or a group name: share the
-- fleet with the other evaluators of the group, sacm.grid.shard).
---@param opts table the sacm.grid.member options, and policies, instructions, memory, auto, allowed, shard
---@return sacm.roles.Evaluator? evaluator
---@return sacm.Error? err
function M.start(opts)
  local self = setmetatable({ latest = {}, hostnames = {}, by_correlation = {}, correlation_order = {},
    pending = {}, evaluations = 0, auto = opts.auto ~= false, endpoint_owner = {} }, Evaluator)
  -- default: the policies shipped with sacmrun (the source tree's, or the installed ones)
  local dir = opts.policies or (require("sacm._build").share_dir .. "/policies")
  self.engine = policy.engine({ dir = dir, instructions = opts.instructions, memory = opts.memory,
    policy_instructions = opts.policy_instructions, evaluation_instructions = opts.evaluation_instructions })
  local loaded, lerr = self.engine:load_all()
  if not loaded then return nil, lerr end
  local mopts = {}
  for k, v in pairs(opts) do mopts[k] = v end
  mopts.role = "evaluator"
  local ids = policy_ids(self)
  mopts.info = { policies = ids }
  mopts.features = { policies = { prefix = proto.feature_policy, names = ids } }
  -- orchestrators find an evaluator by its role feature: advertised once it hears posture
  mopts.defer_role_feature = true
  if opts.shard then -- sharing the fleet with the evaluators of a group (sacm.grid.shard)
    mopts.features.shard = { prefix = shard.feature, names = { opts.shard == true and "default" or opts.shard } }
    mopts.caps_cache = mopts.caps_cache or { retry_after = shard.CAPS_RETRY }
  end
  local err
  self.delivery_wait = opts.delivery_wait or M.DELIVERY_WAIT
  self.member, self.delivery, self.fetcher = delivery.producer("evaluator", mopts, opts, {
    announce = function(e, receipt) return announce(self, e, receipt) end,
    refused = function(e, rerr)
      self.member:status("evaluation-done", { delivery = "refused" }, "results " .. e.id .. " refused: " .. tostring(rerr))
    end })
  if not self.member then return nil, self.delivery end
  if opts.shard then
    self.shard = shard.join(self.member, { group = opts.shard == true and "default" or opts.shard,
      on_takeover = function(endpoints) for _, e in ipairs(endpoints) do auto_evaluate(self, e) end end })
  end
  advertise_policies(self)
  add_commands(self, member.allowed(opts.allowed or opts.peers or {}, self.member.conn.jid), opts.rate_limits)
  local ok
  ok, err = self.member:subscribe("posture", function(item) on_posture(self, item) end)
  if not ok then
    self.member:close()
    return nil, err
  end
  self.member:advertise_role()
  -- each event is published from its own task: a reload never waits on the network
  local watching, werr = self.engine:watch(function(ev)
    task.spawn({ name = "policy event" }, on_policy_event, self, ev)
  end)
  if not watching then log.warn("policies will not be reloaded: %s", tostring(werr)) end
  log.info("evaluating with %d rules from %s", #self.engine:rules(), dir)
  return self
end

---(no parameters, no results)
function Evaluator:close()
  if self.closed then return end
  self.closed = true
  self.engine:close()
  if self.shard then self.shard:close() end
  for _, t in pairs(self.pending) do t:cancel("evaluator closed") end
  self.delivery:close()
  self.member:close()
end
Evaluator.__close = Evaluator.close

return M
