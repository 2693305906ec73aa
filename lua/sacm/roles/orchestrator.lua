--- sacm.roles.orchestrator: finds the grid's components and runs assessments through them.
--
--   local orchestrator = require "sacm.roles.orchestrator"
--   local o = assert(orchestrator.start{ jid = "orchestrator@grid.example/main", password = ..., cafile = ... })
--   assert(o:discover{ collectors = 1, evaluators = 1, timeout = 10 })
--   local run = assert(o:assess{ timeout = 60 })
--   print(require("sacm.report").text(run))
--
-- Components are found through entity caps (every component keeps a mutual presence subscription
-- with the orchestrator, so their caps arrive without asking each one). A collection is started
-- with the collect command on each chosen collector; its posture arrives over pubsub with the
-- collection's correlation id, and each collector says when it is done. The evaluation is started
-- with the evaluate command; results arrive over pubsub with the same correlation id.
local member = require "sacm.grid.member"
local proto = require "sacm.grid.protocol"
local payload = require "sacm.grid.payload"
local commands = require "sacm.xmpp.commands"
local jidlib = require "sacm.xmpp.jid"
local sync = require "sacm.sync"
local task = require "sacm.task"
local time = require "sacm.time"
local crypto = require "sacm.crypto"
local errors = require "sacm.error"
local upload = require "sacm.grid.upload"

local M = {}
local log = require("sacm.log").new("orchestrator")

M.COMMAND_TIMEOUT = 30
M.CAPS_RETRY = 3 -- seconds before a failed caps lookup of a component is tried again

---@class sacm.roles.Orchestrator an orchestrator role (orchestrator.start)
---@field member table its sacm.grid.member
---@field conn sacm.xmpp.Connection
local Orchestrator = {}
Orchestrator.__index = Orchestrator

-- What the server answers for a full JID that is not connected at that moment (a component
-- reconnecting, to another node of a cluster say): nothing ran, the request may be sent again.
local NOT_THERE = { ["service-unavailable"] = true, ["recipient-unavailable"] = true }

-- Runs a command; if the component was not connected, waits until it is back (its caps seen
-- again) and sends it once more, within the deadline (monotonic seconds).
local function execute_once_there(self, jid, node, values, deadline)
  local s, err = commands.execute(self.conn, jid, node, values, math.max(1, math.min(M.COMMAND_TIMEOUT,
    deadline - time.monotonic())))
  if s or not NOT_THERE[err.condition] then return s, err end
  log.info("%s is not connected (%s); sending %s again once it is back", jid, err.condition, node)
  task.sleep(0.5) -- its unavailable presence may still be on the way
  if not self.cache:wait_for(jid, math.max(0.1, deadline - time.monotonic())) then return nil, err end
  return commands.execute(self.conn, jid, node, values, math.max(1, math.min(M.COMMAND_TIMEOUT,
    deadline - time.monotonic())))
end

-- A correlation being watched: posture, results and status for it, and an event to wake waiters.
local function watch(self, correlation)
  local w = { posture = {}, results = {}, status = {}, sets = {}, changed = sync.event() }
  self.watches[correlation] = w
  return w
end

-- The results of a set announced by reference: fetched from the repository (size and digest
-- checked) before they count.
local function fetch_results(self, set)
  local el, err = self.fetcher:fetch_element(set.ref)
  local full
  if el then
    full, err = payload.parse_result_set(el)
    if full and full.id ~= set.id then full, err = nil, errors.new("bad-response", "another result set than announced") end
  end
  if not full or not full.results then
    log.error("results of %s (set %s) could not be fetched: %s", set.endpoint, set.id, tostring(err))
    return nil
  end
  return full.results
end

local function deliver(self, kind, item)
  local parse = kind == "posture" and payload.parse_posture or kind == "results" and payload.parse_result_set
    or payload.parse_status
  local v, err = parse(item.payload)
  if not v then
    log.warn("ignored %s item %s: %s", kind, tostring(item.id), tostring(err))
    return
  end
  if kind == "status" then
    local handlers = self.status_handlers
    for i = 1, #handlers do handlers[i](v) end
  end
  -- the pubsub service's word on who published a result set must be the evaluator it names
  local producer = kind == "results" and v.evaluator or kind == "posture" and v.collector
  if producer and item.publisher and jidlib.bare(item.publisher) ~= jidlib.bare(producer) then
    log.warn("ignored %s item %s: published by %s but names %s", kind, tostring(item.id), item.publisher, producer)
    return
  end
  local w = v.correlation and self.watches[v.correlation]
  if not w then return end
  if kind == "results" then
    -- a set is announced again once stored (after a "pending" announcement): count it once, but
    -- take its results if the first announcement had only the totals
    local seen = w.sets[v.id]
    if seen == "results" then return end
    local results = v.results or (v.ref and fetch_results(self, v))
    if results then
      w.sets[v.id] = "results"
      if seen == "totals" then w.unfetched = w.unfetched - v.totals.total end
      for _, r in ipairs(results) do w.results[#w.results + 1] = r end
    elseif not seen then
      w.sets[v.id] = "totals"
      w.unfetched = (w.unfetched or 0) + v.totals.total
    end
  else
    local list = w[kind]
    list[#list + 1] = v
  end
  w.changed:set()
end

-- Waits until pred(w) holds or the deadline (monotonic seconds) passes; returns pred's value.
local function wait_until(w, deadline, pred)
  while true do
    local v = pred(w)
    if v then return v end
    local left = deadline - time.monotonic()
    if left <= 0 then return nil end
    w.changed:clear()
    w.changed:wait(left)
  end
end

--- o:components(role) -> sorted list of {jid, info, kinds, policies, endpoint, hostname} with that
-- role's feature (endpoint and hostname: a collector's, from its info form).
---@param role "collector"|"evaluator"|"repository"|string
---@return {jid: string, info: table, kinds: string[]?, policies: string[]?, endpoint: string?, hostname: string?}[]
function Orchestrator:components(role)
  local out = {}
  for _, jid in ipairs(self.cache:find(proto.FEATURE[role])) do
    local info = self.cache:info_for(jid)
    local fields = proto.info_fields(info)
    out[#out + 1] = { jid = jid, info = info, kinds = proto.kinds_of(info), policies = proto.policies_of(info),
      endpoint = fields.endpoint, hostname = fields.hostname }
  end
  return out
end

--- o:discover{collectors = n, evaluators = n, repositories = n, timeout = s} -> found | nil, err
-- Waits until at least the given numbers of each role are known (default: one collector and one
-- evaluator). found: role -> list of components.
---@param opts? {collectors?: integer, evaluators?: integer, repositories?: integer, timeout?: number}
---@return table<string, table[]>? found role -> components
---@return sacm.Error? err timeout
---@return table<string, table[]>? found what was found by then
function Orchestrator:discover(opts)
  opts = opts or {}
  local want = { collector = opts.collectors or 1, evaluator = opts.evaluators or 1,
    repository = opts.repositories or 0 }
  -- the numbers asked for, and no component whose caps are still being verified: a grid of two
  -- collectors is not assessed as one because the second one's lookup was a moment late
  local ok = self.cache:wait(function()
    for role, n in pairs(want) do
      if #self:components(role) < n then return false end
    end
    return not self.cache:looking_up()
  end, opts.timeout or 10)
  local found = {}
  for _, role in ipairs(proto.ROLES) do found[role] = self:components(role) end
  if not ok then
    local have = {}
    for role, n in pairs(want) do have[#have + 1] = ("%s %d/%d"):format(role, #found[role], n) end
    table.sort(have)
    return nil, errors.new("timeout", "grid components not found in time: " .. table.concat(have, ", ")), found
  end
  return found
end

--- o:collect{collectors = {jids} (default: all), kinds = {...}, timeout = s, correlation = id}
-- -> run {correlation, collectors = {jid -> {state, published, failed, error}}, posture = {...}}
---@param opts? {collectors?: string[], kinds?: string[], timeout?: number, correlation?: string, kind_timeout?: number}
---@return {correlation: string, collectors: table<string, table>, posture: table[]} run
function Orchestrator:collect(opts)
  opts = opts or {}
  local correlation = opts.correlation or crypto.uuid()
  local deadline = time.monotonic() + (opts.timeout or 60)
  -- ask each collector only for the kinds it advertises
  local advertised = {}
  for _, c in ipairs(self:components("collector")) do advertised[c.jid] = c.kinds end
  local targets = opts.collectors
  if not targets then
    targets = {}
    for jid in pairs(advertised) do targets[#targets + 1] = jid end
    table.sort(targets)
  end
  local run = { correlation = correlation, collectors = {}, started = time.now() }
  local asks = {}
  for _, jid in ipairs(targets) do
    local kinds = opts.kinds
    if kinds and advertised[jid] then
      local has, both = {}, {}
      for _, k in ipairs(advertised[jid]) do has[k] = true end
      for _, k in ipairs(kinds) do
        if has[k] then both[#both + 1] = k end
      end
      kinds = both
    end
    if kinds and #kinds == 0 then
      run.collectors[jid] = { state = "skipped" } -- collects none of the kinds asked for
    else
      asks[#asks + 1] = { jid = jid, kinds = kinds or {} }
    end
  end
  if #asks == 0 then return nil, errors.new("item-not-found", "no collector collects what was asked for") end
  local w = self.watches[correlation] or watch(self, correlation)
  local jobs = {}
  for _, ask in ipairs(asks) do
    local jid = ask.jid
    run.collectors[jid] = { state = "requested" }
    jobs[#jobs + 1] = task.spawn({ name = "collect on " .. jid }, function()
      local s, err = execute_once_there(self, jid, proto.CMD.collect,
        { correlation = correlation, kinds = ask.kinds, timeout = opts.kind_timeout and tostring(opts.kind_timeout) },
        deadline)
      local started = false
      for _, st in ipairs(s and {} or w.status) do
        started = started or (st.component == jid and st.type == "collection-started")
      end
      if started then
        -- the reply was lost (the server node it went through went away), the collection was not
        run.collectors[jid].state = "collecting"
        log.warn("collect on %s: no answer (%s), but its collection started: waiting for it", jid, tostring(err))
      elseif not s then
        run.collectors[jid] = { state = "failed", error = err }
        log.warn("collect on %s failed: %s", jid, tostring(err))
      else
        run.collectors[jid].state = "collecting"
        run.collectors[jid].endpoint = s.values and s.values.endpoint
      end
      w.changed:set()
    end)
  end
  task.all(jobs)
  -- every collector ends its collection with a status notification for the correlation
  wait_until(w, deadline, function()
    for _, st in ipairs(w.status) do
      local c = run.collectors[st.component]
      if c and (st.type == "collection-done" or st.type == "collection-failed") and c.state == "collecting" then
        c.state = st.type == "collection-done" and "done" or "failed"
        c.published, c.failed = st.fields.published, st.fields.failed
      end
    end
    for _, c in pairs(run.collectors) do
      if c.state == "collecting" or c.state == "requested" then return false end
    end
    return true
  end)
  for jid, c in pairs(run.collectors) do
    if c.state == "collecting" or c.state == "requested" then
      c.state = "timeout"
      log.warn("collector %s did not finish collection %s in time", jid, correlation)
    end
  end
  run.posture = w.posture
  run.finished = time.now()
  return run
end

--- o:evaluate{correlation = id, evaluators = {jids} (default all), endpoints = {...}, policies = {...},
-- kinds = {...} (only rules all of whose posture kinds are among these), timeout = s} -> run {correlation, evaluators = {jid -> {state, totals}}, results = {...}}
---@param opts {correlation: string, evaluators?: string[], endpoints?: string[], policies?: string[], kinds?: string[], timeout?: number}
---@return {correlation: string, evaluators: table<string, table>, results: sacm.policy.Result[], expected: integer?} run
function Orchestrator:evaluate(opts)
  local correlation = assert(opts and opts.correlation, "evaluate needs the correlation id of the posture")
  local deadline = time.monotonic() + (opts.timeout or 60)
  local targets = opts.evaluators
  if not targets then
    -- an evaluator that just loaded a policy advertises new caps, and is unknown until they are
    -- verified: give it a moment rather than say there is none
    self.cache:wait(function() return #self:components("evaluator") > 0 end, math.min(5, opts.timeout or 60))
    targets = {}
    for _, c in ipairs(self:components("evaluator")) do targets[#targets + 1] = c.jid end
  end
  if #targets == 0 then return nil, errors.new("item-not-found", "no evaluator to ask") end
  local w = self.watches[correlation] or watch(self, correlation)
  local run = { correlation = correlation, evaluators = {}, started = time.now() }
  local expected = 0
  local base = #w.results -- results of earlier evaluations of this correlation are not this run's
  local jobs = {}
  for _, jid in ipairs(targets) do
    jobs[#jobs + 1] = task.spawn({ name = "evaluate on " .. jid }, function()
      local s, err = execute_once_there(self, jid, proto.CMD.evaluate,
        { correlation = correlation, endpoints = opts.endpoints or {}, policies = opts.policies or {},
          kinds = opts.kinds or {} }, deadline)
      if not s then
        run.evaluators[jid] = { state = "failed", error = err }
        log.warn("evaluate on %s failed: %s", jid, tostring(err))
        return
      end
      local totals = {}
      for k, v in pairs(s.values or {}) do totals[k] = tonumber(v) or v end
      run.evaluators[jid] = { state = "done", totals = totals }
      expected = expected + (totals.total or 0)
    end)
  end
  task.all(jobs)
  wait_until(w, deadline, function() return #w.results + (w.unfetched or 0) - base >= expected end)
  run.expected, run.results = expected, { table.unpack(w.results, base + 1) }
  if #run.results < expected then
    log.warn("%d of %d results of %s arrived before the deadline", #run.results, expected, correlation)
  end
  run.finished = time.now()
  return run
end

--- o:assess{kinds, collectors, evaluators, policies, timeout, all_rules} -> assessment | nil, err
-- Collects, then evaluates what was collected; the assessment holds both runs and the results.
-- With kinds, only the rules of those kinds are judged, unless all_rules (then the others are
-- judged on the newest posture the evaluator has, whose age the results say).
-- One collection and the evaluation of what it brought.
local function collect_and_evaluate(self, opts, started, timeout)
  local collection, err = self:collect({ collectors = opts.collectors, kinds = opts.kinds,
    timeout = math.max(5, timeout - (time.monotonic() - started)), kind_timeout = opts.kind_timeout })
  if not collection then return nil, nil, err end
  local endpoints, seen = {}, {}
  for _, p in ipairs(collection.posture) do
    if not seen[p.endpoint] then
      seen[p.endpoint] = true
      endpoints[#endpoints + 1] = p.endpoint
    end
  end
  if #endpoints == 0 then return collection, nil, errors.new("item-not-found", "the collection brought no posture") end
  local evaluation
  evaluation, err = self:evaluate({ correlation = collection.correlation, evaluators = opts.evaluators,
    endpoints = endpoints, policies = opts.policies, timeout = math.max(5, timeout - (time.monotonic() - started)),
    -- the rules of the kinds collected, not others judged on older posture (all_rules: every rule)
    kinds = not opts.all_rules and opts.kinds or nil })
  return collection, evaluation, err
end

-- An evaluator that heard none of the collection's posture: the notifications were lost on their
-- way (it was moving between the nodes of a cluster while they went out, say).
local function posture_lost(evaluation)
  for _, e in pairs(evaluation.evaluators) do
    if e.state == "failed" and e.error and e.error.condition == "item-not-found"
      and tostring(e.error.text):find("no posture of correlation", 1, true) then
      return true
    end
  end
  return false
end

---@param opts? {kinds?: string[], collectors?: string[], evaluators?: string[], policies?: string[], timeout?: number}
---@return table? assessment correlation, collection, evaluation, posture, results, started, finished, incomplete
---@return sacm.Error? err
---@return table? collection the collection run, when the evaluation failed
function Orchestrator:assess(opts)
  opts = opts or {}
  local started = time.monotonic()
  local timeout = opts.timeout or 120
  local collection, evaluation, err = collect_and_evaluate(self, opts, started, timeout)
  if evaluation and posture_lost(evaluation) and time.monotonic() - started < timeout / 2 then
    -- once: collect again, so the assessment does not end incomplete for want of a notification
    log.warn("an evaluator did not hear the posture of collection %s; collecting again", collection.correlation)
    self.watches[collection.correlation] = nil
    collection, evaluation, err = collect_and_evaluate(self, opts, started, timeout)
  end
  if not collection then return nil, err end
  if not evaluation then return nil, err, collection end
  self.watches[collection.correlation] = nil
  -- an assessment that covered less than was asked for must not read as a clean one
  local incomplete = {}
  for jid, c in pairs(collection.collectors) do
    if c.state ~= "done" and c.state ~= "skipped" then
      incomplete[#incomplete + 1] = ("collector %s: %s%s"):format(jid, c.state, c.error and (" (" .. tostring(c.error) .. ")") or "")
    end
  end
  for jid, e in pairs(evaluation.evaluators) do
    if e.state ~= "done" then incomplete[#incomplete + 1] = ("evaluator %s: %s (%s)"):format(jid, e.state, tostring(e.error)) end
  end
  if #evaluation.results < evaluation.expected then
    incomplete[#incomplete + 1] = ("%d of %d results arrived before the deadline"):format(#evaluation.results,
      evaluation.expected)
  end
  table.sort(incomplete)
  return { correlation = collection.correlation, collection = collection, evaluation = evaluation,
    results = evaluation.results, posture = collection.posture, started = collection.started,
    finished = evaluation.finished, incomplete = incomplete }
end

--- o:on_status(fn): fn(status) for every status notification of the grid (heartbeats, policy
-- changes, collections...).
---@param fn fun(status: table)
function Orchestrator:on_status(fn)
  self.status_handlers[#self.status_handlers + 1] = fn
end

--- o:command(jid, node, values) -> session | nil, err: runs any grid command (status, query, ...).
---@param jid string
---@param node string a grid command's name or node
---@param values? table
---@param timeout? number seconds
---@return sacm.xmpp.commands.ClientSession? session
---@return sacm.Error? err
function Orchestrator:command(jid, node, values, timeout)
  return commands.execute(self.conn, jid, proto.CMD[node] or node, values, timeout or M.COMMAND_TIMEOUT)
end

--- orchestrator.start(opts) -> orchestrator | nil, err
-- opts: the sacm.grid.member options; accept (JIDs/domains whose presence subscriptions are
-- approved: the components; default our domain).
---@param opts table the sacm.grid.member options, and accept
---@return sacm.roles.Orchestrator? orchestrator
---@return sacm.Error? err
function M.start(opts)
  local mopts = {}
  for k, v in pairs(opts) do mopts[k] = v end
  mopts.role = "orchestrator"
  -- grid members are few and known: a failed caps lookup is retried soon, well inside the time
  -- a discover() waits, rather than after the cache's default 30 s
  mopts.caps_cache = { retry_after = M.CAPS_RETRY }
  local m, err = member.join(mopts)
  if not m then return nil, err end
  local self = setmetatable({ member = m, conn = m.conn, watches = {}, status_handlers = {} }, Orchestrator)
  self.fetcher = upload.client(m.conn, { cafile = opts.http_cafile or opts.cafile, cert = opts.client_cert,
    key = opts.client_key })
  self.cache = m.caps_cache
  for _, kind in ipairs { "posture", "results", "status" } do
    local ok, serr = m:subscribe(kind, function(item) deliver(self, kind, item) end)
    if not ok then
      m:close()
      return nil, serr
    end
  end
  log.info("orchestrating as %s", jidlib.bare(m.conn.jid))
  return self
end

---(no parameters, no results)
function Orchestrator:close()
  self.member:close()
end
Orchestrator.__close = Orchestrator.close

return M
