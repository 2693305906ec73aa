--- sacm.policy: policies (Lua files of rules) loaded into a sandbox, evaluated against posture,
-- reloaded when their files change.
--
--   local engine = policy.engine({ dir = "policies" })
--   local report = engine:load_all()                 -- inside a task
--   engine:watch(function(event) ... end)            -- hot reload
--   for _, r in ipairs(engine:evaluate(posture, { hostname = "web1" })) do ... end
--
-- The policy set is an immutable snapshot: a reload builds a new one and swaps it in one
-- assignment, and evaluate() reads the snapshot once and never yields, so an evaluation sees one
-- consistent set, all old or all new. See docs/api/policy.md and docs/policies.md.
local fs = require "sacm.fs"
local crypto = require "sacm.crypto"
local errors = require "sacm.error"
local sandbox = require "sacm.policy.sandbox"
local task = require "sacm.task"
local helpers = require "sacm.policy.helpers"
local proto = require "sacm.grid.protocol"
local hrtime = require("sacm._loop").hrtime
local log = require("sacm.log").new("policy")

local M = {}

local type, ipairs, pairs, next, rawget, rawlen = type, ipairs, pairs, next, rawget, rawlen
local concat, sort = table.concat, table.sort

-- XCCDF's result values and the severities: the grid protocol's, so a result always travels
M.RESULTS, M.SEVERITIES = proto.RESULTS, proto.SEVERITIES
local RESULT_SET, SEVERITY_SET = proto.RESULT_SET, proto.SEVERITY_SET

-- Bounds on what a check hands back, so one rule cannot flood a result stream.
M.MAX_EVIDENCE_ITEMS = 50
M.MAX_EVIDENCE_BYTES = 1024
M.MAX_FILE_BYTES = 1024 * 1024

-- Budgets of one evaluation, in sandbox instructions (a rule has its own, sandbox's 1e6): what
-- one policy file's rules may spend together, and what all rules may. A rule past them is an
-- error result saying so; the rules before it keep their results.
M.POLICY_INSTRUCTIONS = 50 * 1000 * 1000
M.EVALUATION_INSTRUCTIONS = 200 * 1000 * 1000
-- An evaluation inside a task lets the loop run (I/O, pings, other tasks) at least this often
-- (seconds), between rules: one rule holds it at most for its own budget.
M.SLICE = 0.01

local ID_PATTERN = "^[%w][%w%._%-]*$"
local KIND_PATTERN = "^[a-z][a-z0-9_]*$"

-- References tie a rule to the benchmarks it implements, so results can be mapped onto theirs
-- (and exported as XCCDF idents). `system` names the catalogue; for "ssg" the id must be an
-- XCCDF rule id, since that is what OpenSCAP reports and what a mapping is joined on.
M.MAX_REFERENCES = 16
local REF_SYSTEM_PATTERN = "^[a-z][a-z0-9%-%.]*$"
local SSG_ID_PATTERN = "^xccdf_org%.ssgproject%.content_rule_[%w_%-]+$"

---------------------------------------------------------------------------- helpers

local function truncate(s)
  if #s <= M.MAX_EVIDENCE_BYTES then return s end
  -- cut where a character starts (never inside one: the text goes into XML)
  local cut = M.MAX_EVIDENCE_BYTES
  while cut > 0 and (s:byte(cut + 1) or 0) & 0xC0 == 0x80 do cut = cut - 1 end
  return s:sub(1, cut) .. ("... (%d bytes in all)"):format(#s)
end

local function quote(v)
  if type(v) == "string" then return ("%q"):format(#v > 60 and v:sub(1, 60) .. "..." or v) end
  if type(v) == "number" or type(v) == "boolean" or v == nil then return tostring(v) end
  return "a " .. type(v)
end

-- evidence as returned by a check -> list of strings | nil, problem. Reads raw only: the value
-- comes from sandboxed code and its metamethods must not run outside the budget.
local function normalize_evidence(evidence)
  local t = type(evidence)
  if evidence == nil then return {} end
  if t == "string" then return { truncate(evidence) } end
  if t == "number" or t == "boolean" then return { tostring(evidence) } end
  if t ~= "table" then return nil, "evidence must be a string or a list of strings, not " .. quote(evidence) end
  local n = rawlen(evidence)
  local out = {}
  for i = 1, math.min(n, M.MAX_EVIDENCE_ITEMS) do
    local v = rawget(evidence, i)
    local vt = type(v)
    if vt == "string" then out[i] = truncate(v)
    elseif vt == "number" or vt == "boolean" then out[i] = tostring(v)
    else return nil, ("evidence item %d must be a string, not %s"):format(i, quote(v)) end
  end
  if n > M.MAX_EVIDENCE_ITEMS then
    out[#out + 1] = ("... and %d more"):format(n - M.MAX_EVIDENCE_ITEMS)
  end
  return out
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  sort(keys)
  return keys
end

---------------------------------------------------------------------------- loading

-- The globals a policy file sees besides the safe standard functions.
local function policy_globals()
  return {
    find_item = helpers.find_item, filter_items = helpers.filter_items,
    is_empty = helpers.is_empty, contains = helpers.contains, split = helpers.split,
    trim = helpers.trim, version_compare = helpers.version_compare,
    version_lt = helpers.version_lt, glob = helpers.glob, references = helpers.references,
  }
end
M._globals = policy_globals

local function field(t, name, want, where, optional)
  local v = rawget(t, name)
  if v == nil then
    if optional then return nil end
    error(("%s: %s is missing"):format(where, name), 0)
  end
  if type(v) ~= want then
    error(("%s: %s must be a %s, not %s"):format(where, name, want, quote(v)), 0)
  end
  if want == "string" and v == "" and not optional then error(("%s: %s is empty"):format(where, name), 0) end
  return v
end

local function check_id(id, where, what)
  if #id > 128 or not id:find(ID_PATTERN) then
    error(("%s: %s %s must be letters, digits, '.', '_' or '-' (at most 128)"):format(where, what, quote(id)), 0)
  end
end

-- rule.references (optional) -> a list of {system, id, title, href} copies. Raises on a bad one.
local function references(r, where)
  local refs = field(r, "references", "table", where, true)
  if refs == nil then return {} end
  local n = rawlen(refs)
  if n == 0 then error(where .. ": references is empty (leave it out instead)", 0) end
  if n > M.MAX_REFERENCES then
    error(("%s: more than %d references"):format(where, M.MAX_REFERENCES), 0)
  end
  local out = {}
  for j = 1, n do
    local ref = rawget(refs, j)
    local rw = ("%s, references[%d]"):format(where, j)
    if type(ref) ~= "table" then error(("%s must be a table, not %s"):format(rw, quote(ref)), 0) end
    local system = field(ref, "system", "string", rw)
    if #system > 64 or not system:find(REF_SYSTEM_PATTERN) then
      error(("%s: system %s must be lower-case letters, digits, '.' or '-'"):format(rw, quote(system)), 0)
    end
    local id = field(ref, "id", "string", rw)
    if #id > 256 then error(("%s: id is longer than 256 bytes"):format(rw), 0) end
    if system == "ssg" and not id:find(SSG_ID_PATTERN) then
      error(("%s: %s is not an SSG rule id (xccdf_org.ssgproject.content_rule_...)"):format(rw, quote(id)), 0)
    end
    out[j] = { system = system, id = id, title = field(ref, "title", "string", rw, true),
      href = field(ref, "href", "string", rw, true) }
  end
  return out
end

-- The table a policy file returned -> a policy record. Raises a message (level 0) on a problem.
-- Only raw reads: the table was built by sandboxed code.
local function validate(def, file, version)
  if type(def) ~= "table" then
    error(("%s: must return a policy table, returned %s"):format(file, quote(def)), 0)
  end
  local id = field(def, "id", "string", file)
  check_id(id, file, "policy id")
  local where = ("%s: policy %s"):format(file, id)
  local policy = {
    id = id,
    title = field(def, "title", "string", where),
    description = field(def, "description", "string", where, true),
    version = version,
    file = file,
    rules = {},
  }
  local rules = field(def, "rules", "table", where)
  local n = rawlen(rules)
  if n == 0 then error(where .. ": rules is empty", 0) end
  local seen = {}
  for i = 1, n do
    local r = rawget(rules, i)
    local rwhere = ("%s, rule %d"):format(where, i)
    if type(r) ~= "table" then error(("%s must be a table, not %s"):format(rwhere, quote(r)), 0) end
    local rid = field(r, "id", "string", rwhere)
    check_id(rid, rwhere, "rule id")
    rwhere = ("%s, rule %s"):format(where, rid)
    if seen[rid] then error(("%s: rule id %s is used twice"):format(where, rid), 0) end
    seen[rid] = true
    local severity = field(r, "severity", "string", rwhere)
    if not SEVERITY_SET[severity] then
      error(("%s: severity %s is not one of %s"):format(rwhere, quote(severity), concat(M.SEVERITIES, ", ")), 0)
    end
    local requires = {}
    local req = field(r, "requires", "table", rwhere, true)
    if req then
      for j = 1, rawlen(req) do
        local kind = rawget(req, j)
        if type(kind) ~= "string" or not kind:find(KIND_PATTERN) then
          error(("%s: requires[%d] must be a posture kind name, not %s"):format(rwhere, j, quote(kind)), 0)
        end
        requires[#requires + 1] = kind
      end
    end
    policy.rules[i] = {
      references = references(r, rwhere),
      id = rid,
      title = field(r, "title", "string", rwhere),
      severity = severity,
      rationale = field(r, "rationale", "string", rwhere),
      requires = requires,
      requires_key = concat(requires, ","), -- which posture view the rule sees, see evaluate
      check = field(r, "check", "function", rwhere),
    }
  end
  return policy
end

-- text of a policy file -> policy | nil, message. Compiles in text mode into a fresh environment
-- and runs the top level within the engine's budgets.
local function compile(engine, file, text, version)
  local env = sandbox.new_env(policy_globals())
  local chunk, err = load(text, "@" .. file, "t", env)
  if not chunk then return nil, err end
  local ok, def, problem = engine.runner:run(chunk)
  if not ok then
    -- def is the kind of failure; a raised error's text already names the file and line
    if def == "error" then return nil, problem end
    return nil, ("%s: the file's top level %s"):format(file, problem)
  end
  local valid, policy = pcall(validate, def, file, version)
  if not valid then return nil, errors.message(policy) end
  return policy
end

---------------------------------------------------------------------------- the set

-- by_file: {[file name] = policy} -> an immutable snapshot with the policies in id order.
local function make_set(by_file)
  local list = {}
  for _, p in pairs(by_file) do list[#list + 1] = p end
  sort(list, function(a, b) return a.id < b.id end)
  return { by_file = by_file, policies = list }
end

-- The policy ids and rule ids of a candidate set other than `except` that `policy` would clash
-- with, as a message, or nil.
local function clash(by_file, policy, except)
  local policy_ids, rule_ids = {}, {}
  for file, p in pairs(by_file) do
    if file ~= except then
      policy_ids[p.id] = file
      for _, r in ipairs(p.rules) do rule_ids[r.id] = file end
    end
  end
  if policy_ids[policy.id] then
    return ("policy id %s is already used by %s"):format(policy.id, policy_ids[policy.id])
  end
  for _, r in ipairs(policy.rules) do
    if rule_ids[r.id] then return ("rule id %s is already used by %s"):format(r.id, rule_ids[r.id]) end
  end
  return nil
end

---------------------------------------------------------------------------- the engine

---@class sacm.policy.EngineOptions
---@field dir string the directory of *.lua policy files
---@field instructions? integer per check (1e6)
---@field policy_instructions? integer per policy file and evaluation (5e7)
---@field evaluation_instructions? integer per evaluation (2e8)
---@field memory? integer|false bytes the Lua state may grow by (16 MiB)
---@field debounce? number seconds of quiet after a file change (0.05)
---@class sacm.policy.Result one rule's outcome
---@field policy_id string
---@field policy_version string?
---@field rule_id string
---@field title string?
---@field severity string?
---@field result "pass"|"fail"|"error"|"notapplicable"|"notchecked"|string
---@field evidence string[]?
---@field requires string[]?
---@field duration number seconds
---@class sacm.policy.Engine a policy set loaded from a directory (policy.engine)
---@field dir string
local Engine = {}
Engine.__index = Engine

--- engine({dir, instructions, memory, debounce}) -> engine. Nothing is loaded until load_all().
---@param opts sacm.policy.EngineOptions
---@return sacm.policy.Engine
function M.engine(opts)
  if type(opts) ~= "table" or type(opts.dir) ~= "string" or opts.dir == "" then
    error("policy.engine: opts.dir (the policy directory) is required", 2)
  end
  local self = setmetatable({
    dir = opts.dir:gsub("(.)/+$", "%1"),
    instructions = opts.instructions or sandbox.DEFAULT_INSTRUCTIONS,
    policy_instructions = opts.policy_instructions or M.POLICY_INSTRUCTIONS,
    evaluation_instructions = opts.evaluation_instructions or M.EVALUATION_INSTRUCTIONS,
    memory = opts.memory == nil and sandbox.DEFAULT_MEMORY or opts.memory,
    debounce = opts.debounce or 0.05,
    set = make_set({}),
    dirty = {},
    clashed = {},
  }, Engine)
  self.runner = sandbox.runner({ instructions = self.instructions, memory = self.memory })
  return self
end

local function is_policy_file(name)
  -- hidden files include the temporary files of atomic writes (.name.XXXX.tmp)
  return name:sub(1, 1) ~= "." and name:sub(-4) == ".lua"
end

-- Reads and compiles one file: {policy=} | {removed=true} | {error=} | nil when unchanged.
function Engine:_stage(name, current)
  local path = self.dir .. "/" .. name
  local text, err = fs.read(path, { max_bytes = M.MAX_FILE_BYTES })
  if not text then
    if err.condition == "ENOENT" then return { removed = true } end
    return { error = errors.message(err) }
  end
  local version = crypto.hex(crypto.sha256(text))
  if current and current.version == version then return nil end
  local policy, cerr = compile(self, name, text, version)
  if not policy then return { error = cerr } end
  return { policy = policy }
end

-- Applies a batch of changed file names: compile everything first, then build the new set and
-- swap it in at once. Returns the events.
function Engine:_apply(names)
  -- Files rejected only because they clashed with another file are tried again with every
  -- change: the other file may have given the ids up (a rule moved from one file to another).
  local wanted = {}
  for _, name in ipairs(names) do wanted[name] = true end
  local clashed_before = self.clashed
  for name in pairs(clashed_before) do wanted[name] = true end
  self.clashed = {}
  names = sorted_keys(wanted)
  local staged = {}
  for _, name in ipairs(names) do
    if is_policy_file(name) then
      staged[name] = self:_stage(name, self.set.by_file[name])
    end
  end
  -- From here on nothing yields: the set cannot change under us.
  local old = self.set.by_file
  local candidate = {}
  for file, p in pairs(old) do candidate[file] = p end
  local events, pending = {}, {}
  for _, name in ipairs(sorted_keys(staged)) do
    local s = staged[name]
    if s.removed then
      if candidate[name] then
        local p = candidate[name]
        candidate[name] = nil
        events[#events + 1] = { type = "removed", file = name, policy_id = p.id, version = p.version }
      end
    elseif s.error then
      events[#events + 1] = { type = "rejected", file = name, error = s.error }
    else
      candidate[name] = nil -- its old version must not clash with the new one
      pending[#pending + 1] = name
    end
  end
  -- A rule moving from one file to another clashes or not depending on the order: retry until no
  -- file gets in any more.
  local progress = true
  while progress and #pending > 0 do
    progress = false
    for i = #pending, 1, -1 do
      local name = pending[i]
      local p = staged[name].policy
      if not clash(candidate, p, name) then
        candidate[name] = p
        events[#events + 1] = { type = "loaded", file = name, policy_id = p.id, version = p.version,
          previous_version = old[name] and old[name].version, rules = #p.rules }
        table.remove(pending, i)
        progress = true
      end
    end
  end
  for _, name in ipairs(pending) do
    local why = clash(candidate, staged[name].policy, name)
    local message = name .. ": " .. why
    -- a retry that fails the same way is not news
    if clashed_before[name] ~= message then
      events[#events + 1] = { type = "rejected", file = name, error = message }
    end
    self.clashed[name] = message
    if old[name] and not clash(candidate, old[name], name) then candidate[name] = old[name] end
  end
  self.set = make_set(candidate)
  for _, e in ipairs(events) do
    if e.type == "rejected" then
      log.warn("policy file %s rejected, %s: %s", e.file,
        old[e.file] and "previous version stays active" or "not loaded", e.error)
    elseif e.type == "loaded" then
      log.info("policy %s loaded from %s (version %s, %d rules)", e.policy_id, e.file, e.version:sub(1, 12), e.rules)
    else
      log.info("policy %s removed (%s deleted)", e.policy_id, e.file)
    end
  end
  return events
end

-- Marks names as changed and applies them, one batch at a time: a reload that starts while
-- another is reading files leaves its names for the running one, so two never race.
function Engine:_changed(names)
  for _, name in ipairs(names) do self.dirty[name] = true end
  if self.reloading then return {} end
  self.reloading = true
  local all = {}
  local ok, err = pcall(function()
    while next(self.dirty) do
      local batch = sorted_keys(self.dirty)
      self.dirty = {}
      for _, e in ipairs(self:_apply(batch)) do
        all[#all + 1] = e
        if self.on_event then
          local eok, eerr = pcall(self.on_event, e)
          if not eok then log.error("policy event handler failed: %s", errors.message(eerr)) end
        end
      end
    end
  end)
  self.reloading = false
  if not ok then error(err, 0) end
  return all
end

--- engine:load_all() -> report | nil, err. (Re)loads every *.lua file in the directory and
-- drops policies whose file is gone. report = {loaded = {events}, removed = {events},
-- rejected = {events}}. Must run inside a task.
---@return {loaded: table[], removed: table[], rejected: table[]}? report
---@return sacm.Error? err
function Engine:load_all()
  local entries, err = fs.list(self.dir)
  if not entries then return nil, err end
  local names = {}
  for _, e in ipairs(entries) do
    if (e.type == "file" or e.type == "link") and is_policy_file(e.name) then names[#names + 1] = e.name end
  end
  for file in pairs(self.set.by_file) do names[#names + 1] = file end
  local report = { loaded = {}, removed = {}, rejected = {} }
  for _, e in ipairs(self:_changed(names)) do
    local list = report[e.type]
    list[#list + 1] = e
  end
  return report
end

--- engine:watch([on_event]) -> true | nil, err. Reloads files as they change (added, edited,
-- deleted), debounced; on_event(event) is called for each change (see docs/api/policy.md).
---@param on_event? fun(event: table)
---@return true? ok
---@return sacm.Error? err
function Engine:watch(on_event)
  if self.watcher then error("engine:watch: already watching", 2) end
  self.on_event = on_event
  local watcher, err = fs.watch(self.dir, function(names) self:_changed(names) end,
    { debounce = self.debounce })
  if not watcher then return nil, err end
  self.watcher = watcher
  return true
end

--- engine:close(): stops watching. The loaded policies stay usable.
---(no parameters, no results)
function Engine:close()
  if self.watcher then
    self.watcher:close()
    self.watcher = nil
  end
end
Engine.__close = errors.closer(Engine.close)

function Engine:__tostring()
  return ("policy engine for %s (%d policies%s)"):format(self.dir, #self.set.policies,
    self.watcher and ", watching" or "")
end

--- engine:policies() -> {{id, title, description, version, file, rules = count}, ...} by id.
---@return {id: string, title: string?, description: string?, version: string?, file: string, rules: integer}[]
function Engine:policies()
  local out = {}
  for i, p in ipairs(self.set.policies) do
    out[i] = { id = p.id, title = p.title, description = p.description, version = p.version,
      file = p.file, rules = #p.rules }
  end
  return out
end

local function copy_references(refs)
  local out = {}
  for i, ref in ipairs(refs) do
    out[i] = { system = ref.system, id = ref.id, title = ref.title, href = ref.href }
  end
  return out
end

--- engine:check(text, file) -> {id, title, description, version, file, rules = {{id, title,
-- severity, rationale, requires}}} | nil, err (bad-request). Compiles a policy file's text in the
-- sandbox within the engine's budgets, as loading it would, and checks that its policy and rule ids
-- are free in the loaded set (a file of the same name may reuse its own), without evaluating any
-- posture and without loading it. Errors: bad-request (does not compile or validate), conflict
-- (an id is taken).
---@param text string the policy file's text
---@param file string its file name
---@return table? summary id, title, description, version, file, rules
---@return sacm.Error? err bad-request | conflict
function Engine:check(text, file)
  if type(text) ~= "string" or type(file) ~= "string" then error("engine:check(text, file)", 2) end
  if #text > M.MAX_FILE_BYTES then
    return nil, errors.new("bad-request", ("%s: larger than %d bytes"):format(file, M.MAX_FILE_BYTES))
  end
  local p, err = compile(self, file, text, crypto.hex(crypto.sha256(text)))
  if not p then return nil, errors.new("bad-request", err) end
  local why = clash(self.set.by_file, p, file)
  if why then return nil, errors.new("conflict", file .. ": " .. why) end
  local rules = {}
  for i, r in ipairs(p.rules) do
    rules[i] = { id = r.id, title = r.title, severity = r.severity, rationale = r.rationale,
      requires = { table.unpack(r.requires) }, references = copy_references(r.references) }
  end
  return { id = p.id, title = p.title, description = p.description, version = p.version, file = file,
    rules = rules }
end

--- engine:rules() -> {{policy_id, policy_version, rule_id, title, severity, rationale,
-- requires}, ...} in evaluation order.
---@return table[] rules policy_id, policy_version, rule_id, title, severity, rationale, requires
function Engine:rules()
  local out = {}
  for _, p in ipairs(self.set.policies) do
    for _, r in ipairs(p.rules) do
      local requires = {}
      for i, k in ipairs(r.requires) do requires[i] = k end
      out[#out + 1] = { policy_id = p.id, policy_version = p.version, rule_id = r.id, title = r.title,
        severity = r.severity, rationale = r.rationale, requires = requires,
        references = copy_references(r.references) }
    end
  end
  return out
end

-- A kind's data as an error text, or nil. The evaluator hands an error value (or a table with an
-- `error` field) where collection failed.
local function error_text(data)
  if errors.is(data) then return errors.message(data) end
  if type(data) ~= "table" then return "posture is a " .. type(data) .. ", not a table" end
  local e = rawget(data, "error")
  if e ~= nil then return errors.message(e) end
  return nil
end

--- prepare(posture) -> a read-only posture for evaluate. Each kind's data becomes a read-only
-- view; a kind whose collection failed becomes {error = text}. evaluate() prepares what it is
-- given itself; preparing once pays off when one posture is evaluated more than once (after a
-- reload, or policy by policy). The view reads the scalars of the original items: do not change
-- posture after preparing it.
---@param posture table<string, table> {[kind] = data}
---@return table prepared read-only
function M.prepare(posture)
  if sandbox.is_frozen(posture) then return posture end
  if type(posture) ~= "table" then error("policy.prepare: posture must be a table", 2) end
  local kinds = {}
  for kind, data in pairs(posture) do
    if type(kind) == "string" then
      local e = error_text(data)
      kinds[kind] = e and { error = e } or data
    end
  end
  return sandbox.freeze(kinds)
end

-- The result of a rule whose posture is not all there, or nil to run the check.
local function precheck(rule, posture)
  local missing, not_applicable
  for _, kind in ipairs(rule.requires) do
    local data = posture[kind]
    if data == nil then
      missing = missing or {}
      missing[#missing + 1] = kind
    elseif data.error ~= nil then
      return "error", { ("posture %s could not be collected: %s"):format(kind, tostring(data.error)) }
    elseif data.applicable == false then
      not_applicable = not_applicable or {}
      local reason = data.reason
      not_applicable[#not_applicable + 1] = type(reason) == "string" and (kind .. ": " .. reason)
        or (kind .. " is not applicable on this endpoint")
    end
  end
  if missing then
    return "notchecked", { ("posture %s was not collected"):format(concat(missing, ", ")) }
  end
  if not_applicable then return "notapplicable", not_applicable end
  return nil
end

local function spent(self, p, by_policy)
  if by_policy then
    return ("policy %s spent its budget of %d instructions for one evaluation"):format(p.id, self.policy_instructions)
  end
  return ("the evaluation spent its budget of %d instructions"):format(self.evaluation_instructions)
end

-- Lets the loop run when called in a task and the slice is used up; -> the time it resumed.
local function serve_loop(since)
  local now = hrtime()
  if now - since < M.SLICE * 1e9 then return since end
  if not task.can_wait() then return since end
  task.yield() -- resumes after the loop has polled for I/O once
  return hrtime()
end

--- engine:evaluate(posture [, endpoint_info [, opts]]) -> results. posture = {[kind] = data}, or
-- what policy.prepare made of it; opts.policies, a list of policy ids, evaluates only those.
-- Reads the policy set once, so it sees one snapshot of it; inside a task it yields between
-- rules every M.SLICE seconds. Rules share the engine's budgets per policy file and per
-- evaluation (policy_instructions, evaluation_instructions).
---@param posture table<string, table> {[kind] = data}, or what prepare made of it
---@param endpoint_info? table
---@param opts? {policies?: string[], kinds?: string[]}
---@return sacm.policy.Result[] results
function Engine:evaluate(posture, endpoint_info, opts)
  if type(posture) ~= "table" then error("engine:evaluate: posture must be a table", 2) end
  posture = M.prepare(posture)
  local only
  if opts and opts.policies then
    only = {}
    for _, id in ipairs(opts.policies) do only[id] = true end
  end
  -- opts.kinds: judge only the rules all of whose posture kinds are among these (an assessment
  -- of some kinds must not judge other rules on whatever older posture is at hand)
  local kinds
  if opts and opts.kinds then
    kinds = {}
    for _, k in ipairs(opts.kinds) do kinds[k] = true end
  end
  local function wanted(rule)
    if not kinds then return true end
    for _, k in ipairs(rule.requires) do
      if not kinds[k] then return false end
    end
    return true
  end
  local set = self.set
  local runner = self.runner
  local views = {}   -- "kind,kind" -> the posture a rule requiring those kinds sees
  local ctx = sandbox.freeze({ endpoint = endpoint_info or {} })
  local results = {}
  local evaluation_left, slice = self.evaluation_instructions, hrtime()
  for _, p in ipairs(set.policies) do
    if not only or only[p.id] then
      local policy_left = self.policy_instructions
      for _, rule in ipairs(p.rules) do
        if not wanted(rule) then goto next_rule end
        slice = serve_loop(slice)
        local t0 = hrtime()
        local result, evidence = precheck(rule, posture)
        if not result and (policy_left < 1 or evaluation_left < 1) then
          result, evidence = "error", { "not run: " .. spent(self, p, policy_left <= evaluation_left) }
        end
        if not result then
          -- a rule sees the kinds it requires and nothing else
          local key = rule.requires_key
          local view = views[key]
          if not view then
            local visible = {}
            for _, kind in ipairs(rule.requires) do visible[kind] = posture[kind] end
            view = sandbox.freeze(visible)
            views[key] = view
          end
          local limit = math.min(self.instructions, policy_left, evaluation_left)
          local by_policy = policy_left <= evaluation_left
          local ok, r1, r2 = runner:run(rule.check, view, ctx, limit)
          policy_left, evaluation_left = policy_left - runner.used, evaluation_left - runner.used
          if not ok and r1 == "instructions" and limit < self.instructions then
            result, evidence = "error", { "check stopped: " .. spent(self, p, by_policy) }
          elseif not ok then
            result, evidence = "error", { "check " .. (r1 == "error" and "failed: " or "") .. r2 }
          elseif type(r1) ~= "string" or not RESULT_SET[r1] then
            result, evidence = "error", { ("check returned %s as its result; expected one of %s")
              :format(quote(r1), concat(M.RESULTS, ", ")) }
          else
            local list, problem = normalize_evidence(r2)
            if list then
              result, evidence = r1, list
            else
              result, evidence = "error", { "check returned bad evidence: " .. problem }
            end
          end
        end
        results[#results + 1] = {
          policy_id = p.id, policy_version = p.version, rule_id = rule.id, title = rule.title,
          severity = rule.severity, result = result, evidence = evidence, requires = rule.requires,
          duration = (hrtime() - t0) / 1e9,
        }
        ::next_rule::
      end
    end
  end
  return results
end

return M
