--- sacm.roles.repository: the grid's repository. It owns the grid's pubsub nodes and admits each
-- component to the nodes its role needs, receives posture and results over HTTPS (it is the
-- grid's XEP-0363 upload service), keeps them in its store, and serves them back: by URL to
-- evaluators and orchestrators, by the query and get commands, and as ROLIE feeds.
--
--   local repository = require "sacm.roles.repository"
--   local r = assert(repository.start{ jid = ..., password = ..., cafile = ..., database = "grid.db",
--     peers = { "orchestrator@grid.example" },
--     upload = { listen = { host = "0.0.0.0", port = 8443, cert = ..., key = ... } } })
--
-- Storage is sacm.grid.store (one committed transaction per document: what was acknowledged
-- survives a crash); this role is the layer that connects it to the grid (docs/protocol.md).
local store = require "sacm.grid.store"
local member = require "sacm.grid.member"
local commands = require "sacm.xmpp.commands"
local jidlib = require "sacm.xmpp.jid"
local proto = require "sacm.grid.protocol"
local ratelimit = require "sacm.ratelimit"
local upload_service = require "sacm.grid.upload_service"
local time = require "sacm.time"
local errors = require "sacm.error"

local M = {}
local log = require("sacm.log").new("repository")

M.MIGRATIONS = store.MIGRATIONS

---@class sacm.roles.Repository a repository role (repository.start)
---@field store sacm.grid.Store
---@field member table its sacm.grid.member
---@field rolie sacm.rolie.Provider? when started with rolie options
local Repository = {}
Repository.__index = Repository

-- What each role's account may do, merged over the roles an account holds.
local RANK = { member = 1, publisher = 2 }
local function affiliations_for(roles)
  local want = {}
  for role in pairs(roles) do
    for node, aff in pairs(proto.AFFILIATIONS[role] or {}) do
      if not want[node] or RANK[aff] > RANK[want[node]] then want[node] = aff end
    end
  end
  return want
end

-- Which roles an account may hold is the administrator's word, never the component's: a role is
-- granted only when the account's caps advertise it AND the account may hold it. `roles` =
-- {collector = {JIDs, domains or "collector-*@grid.example" patterns}, ...}; without it, the
-- role an account is named after (docs/trust.md): "collector", "collector2", "collector-web1".
local NAMED = "^(%a+)[%d%-_.]*"
local function glob_matcher(entry)
  if not entry:find("*", 1, true) then return nil end
  local pattern = "^" .. entry:gsub("[%^%$%(%)%%%.%[%]%+%-%?]", "%%%0"):gsub("%*", "[^@/]*") .. "$"
  return function(bare) return bare:match(pattern) ~= nil end
end

--- repository.role_policy(roles) -> function(bare, role) -> whether the account may hold the role | nil, err
---@param roles? table<string, string[]> role -> JIDs, domains, "collector-*@d" patterns
---@return (fun(bare: string, role: string): boolean)? allowed
---@return sacm.Error? err
function M.role_policy(roles)
  if roles == nil then
    return function(bare, role)
      local localpart = bare:match("^([^@]+)@")
      if not localpart then return false end
      local named = localpart:match(NAMED)
      return named == role and (#localpart == #role or localpart:sub(#role + 1, #role + 1):match("[%d%-_.]") ~= nil)
    end
  end
  local by_role = {}
  for role, list in pairs(roles) do
    if not proto.AFFILIATIONS[role] then
      return nil, errors.new("bad-config", ("roles: '%s' is not a grid role; say collector, evaluator or orchestrator")
        :format(tostring(role)))
    end
    local exact, globs = {}, {}
    for _, entry in ipairs(type(list) == "table" and list or { list }) do
      local g = glob_matcher(entry)
      if g then globs[#globs + 1] = g else exact[#exact + 1] = entry end
    end
    local plain = member.allowed(exact)
    by_role[role] = function(bare)
      if plain(bare) then return true end
      for _, g in ipairs(globs) do if g(bare) then return true end end
      return false
    end
  end
  return function(bare, role) return by_role[role] ~= nil and by_role[role](bare) end
end

-- Admits a component by the roles its verified caps advertise and its account may hold: sets its
-- affiliation on each grid node its roles need (the pubsub service keeps it). Accounts outside
-- `admit` (default: our own domain) are not admitted.
local function admit(self, jid, info)
  local bare = jidlib.bare(jid)
  if not bare or bare == jidlib.bare(self.member.conn.jid) or not self.admits(bare) then return end
  local roles = self.members[bare] or {}
  local changed = false
  for role in pairs(proto.AFFILIATIONS) do
    local declared = proto.info_fields(info).role == role -- an evaluator not subscribed yet says so here
    if (info.features[proto.FEATURE[role]] or declared) and not roles[role] then
      if self.may_hold(bare, role) then
        roles[role], changed = true, true
      elseif not self.denied[bare .. " " .. role] then
        self.denied[bare .. " " .. role] = true
        local why = ("%s advertises the %s role, which the account may not hold (%s): not admitted"):format(bare, role,
          self.roles_configured and "not in the repository's roles configuration"
            or "its name does not begin with '" .. role .. "'; name it so or list it in the repository's roles")
        log.warn("%s", why)
        self.store:refused(jid, "role " .. role, why)
      end
    end
  end
  if not changed then return end
  self.members[bare] = roles
  for key, aff in pairs(affiliations_for(roles)) do
    local node = proto.NODE[key]
    local ok, err = self.member.pubsub:set_affiliations(node, { [bare] = aff })
    if ok then
      log.info("admitted %s to %s as %s", bare, node, aff)
    else
      log.error("could not admit %s to %s: %s", bare, node, tostring(err))
    end
  end
end

local function add_commands(self, allowed, limits)
  local cmds = self.member.commands
  cmds:add(proto.CMD.query, {
    name = "Query posture and results",
    allowed = allowed,
    rate = ratelimit.for_command("query", limits), -- per peer: docs/protocol.md 8
    end_on_refusal = true, -- docs/protocol.md 3: a refused submission ends the session
    form = proto.QUERY_FORM,
    run = function(_, values)
      local page, err = self.store:query(values)
      if not page then
        if err.condition == "bad-request" then return nil, commands.bad_payload(err.text) end
        return nil, err
      end
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
    rate = ratelimit.for_command("get", limits), -- per peer: docs/protocol.md 8
    end_on_refusal = true, -- docs/protocol.md 3: a refused submission ends the session
    form = proto.GET_FORM,
    run = function(_, values) return self.store:get(values.id) end,
  })
  cmds:add(proto.CMD.status, {
    name = "Repository status",
    allowed = allowed,
    end_on_refusal = true, -- docs/protocol.md 3: a refused submission ends the session
    run = function()
      local s = self.store:stats()
      local totals = self.store:totals()
      local up = self.uploads:stats()
      local members = {}
      for bare, roles in pairs(self.members) do
        local names = {}
        for r in pairs(roles) do names[#names + 1] = r end
        table.sort(names)
        members[#members + 1] = bare .. " " .. table.concat(names, ",")
      end
      table.sort(members)
      local fields = {
        { var = "role", value = "repository" },
        { var = "posture", value = tostring(s.posture) },
        { var = "results", value = tostring(s.results) },
        { var = "changes", value = tostring(s.changes) },
        { var = "endpoints", value = tostring(s.endpoints) },
        { var = "uploads", value = tostring(up.uploads) },
        { var = "refused", value = tostring(s.refused) },
        { var = "refusals", type = "text-multi", values = (function()
          local out = {}
          for i, r in ipairs(self.store:refusals(10)) do
            out[i] = ("%s %s %s: %s"):format(time.format(r.at), tostring(r.uploader), r.what, r.reason)
          end
          return out
        end)() },
        { var = "members", type = "text-multi", values = members },
        { var = "upload_url", value = self.uploads.base_url },
        { var = "uptime", value = tostring(math.floor(time.now() - self.member.started)) },
      }
      for _, r in ipairs(proto.RESULTS) do fields[#fields + 1] = { var = "current_" .. r, value = tostring(totals[r] or 0) } end
      return { title = "Repository status", fields = fields }
    end,
  })
end

--- repository.open(path) -> the store alone (sacm.grid.store), no grid connection | nil, err
---@param path string|table as sacm.grid.store.open's
---@return sacm.grid.Store? store
---@return sacm.Error? err
function M.open(path)
  return store.open(path)
end

--- repository.start(opts) -> repository | nil, err
-- opts: the sacm.grid.member options, database (path of the SQLite file), upload (the upload
-- service: listen = sacm.http listen options, base_url, max_size), admit (JIDs or domains whose
-- components are admitted to the grid's nodes; default our domain), endpoints ({[endpoint id] =
-- collector JID}: bindings made ahead; otherwise an endpoint is bound to the collector whose
-- posture of it is stored first), endpoint_binding ("first-use", the default, or "configured":
-- posture only of endpoints bound ahead), roles ({collector = {JIDs, domains, "collector-*@d"
-- patterns}, evaluator = ..., orchestrator = ...}: which accounts may hold which role; default:
-- the role an account is named after, M.role_policy), retention (seconds: history older than this is pruned, hourly;
-- the current results and the newest posture of each kind stay), allowed (who may run
-- commands; default the peers), rolie (the options of sacm.rolie.serve but repository: serve
-- the store as ROLIE feeds over HTTPS; the provider is r.rolie).
---@param opts table the sacm.grid.member options, and database, upload, admit, endpoints, endpoint_binding, roles, retention, allowed, rolie
---@return sacm.roles.Repository? repository
---@return sacm.Error? err
function M.start(opts)
  if opts.endpoint_binding ~= nil and opts.endpoint_binding ~= "first-use" and opts.endpoint_binding ~= "configured" then
    return nil, errors.new("bad-config", ("endpoint_binding is '%s': say \"first-use\" (the default: an endpoint is "
      .. "bound to the collector whose posture of it is stored first) or \"configured\" (only the endpoints "
      .. "configuration binds)"):format(tostring(opts.endpoint_binding)))
  end
  local may_hold, perr = M.role_policy(opts.roles)
  if not may_hold then return nil, perr end
  local s, err = store.open(assert(opts.database, "repository.start needs a database path"))
  if not s then return nil, err end
  local self = setmetatable({ store = s, db = s.db, members = {}, denied = {},
    may_hold = may_hold, roles_configured = opts.roles ~= nil }, Repository)
  local mopts = {}
  for k, v in pairs(opts) do mopts[k] = v end
  mopts.role = "repository"
  mopts.owner = true
  mopts.repository = nil
  mopts.roles, mopts.endpoints, mopts.endpoint_binding = nil, nil, nil
  -- the components' caps say which role each plays: what they are admitted to follows from it
  mopts.caps_cache = { retry_after = 3 }
  -- the upload service's disco feature and form are in the first caps already
  local max_size = opts.upload and opts.upload.max_size or proto.UPLOAD_MAX
  mopts.features = { upload = { prefix = function(ns) return ns end, names = { proto.NS_UPLOAD } } }
  mopts.extensions = { upload_service.disco_form(max_size) }
  self.member, err = member.join(mopts)
  if not self.member then
    s:close()
    return nil, err
  end
  -- endpoints bound ahead to their collector accounts: posture of them from any other is refused;
  -- with endpoint_binding = "configured", posture of an endpoint not bound ahead is refused too
  s.bind_first_use = opts.endpoint_binding ~= "configured"
  for endpoint, jid in pairs(opts.endpoints or {}) do
    local ok, berr = s:bind_endpoint(endpoint, jidlib.bare(jid) or jid)
    if not ok then log.error("could not bind endpoint %s to %s: %s", endpoint, jid, tostring(berr)) end
  end
  local domain = jidlib.domain(self.member.conn.jid)
  self.admits = member.allowed(opts.admit or { domain })
  self.uploads, err = upload_service.start({ member = self.member, store = s,
    listen = opts.upload and opts.upload.listen, base_url = opts.upload and opts.upload.base_url,
    max_size = opts.upload and opts.upload.max_size,
    roles_of = function(bare) return self.members[bare] or {} end })
  if not self.uploads then
    self:close()
    return nil, err
  end
  add_commands(self, member.allowed(opts.allowed or opts.peers or {}, self.member.conn.jid), opts.rate_limits)
  local cache = self.member.caps_cache
  self.admission = cache:on_update(function(jid, info) if info then admit(self, jid, info) end end)
  for _, jid in ipairs(cache:jids()) do admit(self, jid, cache:info_for(jid)) end
  if opts.retention then
    -- history older than `retention` seconds goes, checked every hour (and once now)
    local function prune()
      local removed, perr = s:prune(time.now() - opts.retention)
      if not removed then
        log.error("pruning %s failed: %s", opts.database, tostring(perr))
      elseif removed.posture + removed.results + removed.history > 0 then
        log.info("pruned %d posture, %d results, %d result sets, %d history rows older than %g days", removed.posture,
          removed.results, removed.result_sets, removed.history, opts.retention / 86400)
      end
    end
    self.pruner = require("sacm.timer").every(opts.retention_interval or 3600, prune, { first = 0 })
  end
  if opts.rolie then
    local ropts = { repository = s }
    for k, v in pairs(opts.rolie) do ropts[k] = v end
    self.rolie, err = require("sacm.rolie").serve(ropts)
    if not self.rolie then
      self:close()
      return nil, err
    end
  end
  log.info("storing posture and results in %s; uploads at %s", s.path, self.uploads.base_url)
  return self
end

--- r:query(q), r:get(id), r:totals(), r:store_posture(el), r:store_result(el): the store's.
---@param q table as sacm.grid.Store:query's
---@return table? page
---@return sacm.Error? err
function Repository:query(q) return self.store:query(q) end
---@param id string
---@return sacm.xml.Element? element
---@return sacm.Error? err
function Repository:get(id) return self.store:get(id) end
---@return table<string, integer> totals
function Repository:totals() return self.store:totals() end
---@param el sacm.xml.Element
---@return boolean? stored
---@return sacm.Error? err
function Repository:store_posture(el) return self.store:store_posture(el) end
---@param el sacm.xml.Element
---@return boolean? stored
---@return sacm.Error? err
function Repository:store_result(el) return self.store:store_result(el) end

---(no parameters, no results)
function Repository:close()
  if self.closed then return end
  self.closed = true
  if self.admission then self.admission.remove() end
  if self.pruner then self.pruner:cancel() end
  if self.rolie then self.rolie:close() end
  if self.uploads then self.uploads:close() end
  if self.member then self.member:close() end
  if self.store then self.store:close() end
end
Repository.__close = Repository.close

return M
