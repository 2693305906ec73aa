--- sacm.grid.member: what every grid role does to take part in the grid.
--
-- Connects, describes the role in service discovery (identity, features, an XEP-0128 info form),
-- advertises entity caps, keeps mutual presence subscriptions with its peers and with the grid's
-- repository (so orchestrators see components come and go, and their caps, without asking each
-- one, and the repository admits each component to the nodes its role needs), and publishes
-- status notifications (online, heartbeat, ...). The repository owns the grid's pubsub nodes: it
-- creates them (join with owner = true) and affiliates the others.
--
--   local member = require "sacm.grid.member"
--   local m = assert(member.join{ role = "collector", jid = ..., password = ..., cafile = ...,
--                                 pubsub = "pubsub.grid.example", peers = { "orchestrator@grid.example" } })
--   m:publish("posture", id, element)
local xmpp = require "sacm.xmpp"
local st = require "sacm.xmpp.stanza"
local jidlib = require "sacm.xmpp.jid"
local disco = require "sacm.xmpp.disco"
local caps = require "sacm.xmpp.caps"
local pubsub = require "sacm.xmpp.pubsub"
local commands = require "sacm.xmpp.commands"
local timer = require "sacm.timer"
local time = require "sacm.time"
local errors = require "sacm.error"
local task = require "sacm.task"
local proto = require "sacm.grid.protocol"
local payload = require "sacm.grid.payload"

local M = {}
M.log = require("sacm.log").new("grid")

M.HEARTBEAT = 60 -- seconds between heartbeat status notifications
M.ADMISSION_TIMEOUT = 30 -- seconds a member waits for the repository to admit it to a node

-- Conditions a pubsub service answers with while the repository has not (yet) created a node or
-- affiliated us: worth waiting for, within the admission timeout.
local NOT_YET = { ["forbidden"] = true, ["not-authorized"] = true, ["item-not-found"] = true,
  ["not-allowed"] = true, ["closed-node"] = true, ["not-subscribed"] = true, ["presence-subscription-required"] = true }

---@class sacm.grid.Member a grid role's presence on the grid (member.join)
---@field role string
---@field conn sacm.xmpp.Connection
local Member = {}
Member.__index = Member

-- Connection options taken from the join options as they are.
local CONNECT_KEYS = { "jid", "password", "client_cert", "client_key", "host", "port", "servers", "resource", "cafile",
  "capath", "insecure", "timeout", "connect_timeout", "reconnect", "max_backoff", "disable_sm", "direct_tls",
  "ping_interval", "ping_timeout" }

--- member.parse_servers(list) -> {{host, port}, ...} | nil, err (bad-config): the XMPP servers of
-- a cluster, as xmpp.parse_servers reads them.
---@param list (string|{host: string, port: integer})[]
---@return {host: string, port: integer}[]? servers
---@return sacm.Error? err bad-config
function M.parse_servers(list)
  local servers, text = xmpp.parse_servers(list)
  if not servers then return nil, errors.new("bad-config", text) end
  return servers
end

-- A JID is allowed when it matches a full JID, bare JID or domain of the list.
local function matches(list, from)
  local bare, domain = jidlib.bare(from), jidlib.domain(from)
  for _, j in ipairs(list) do
    if j == from or j == bare or j == domain then return true end
  end
  return false
end

--- member.allowed(list) -> function(from) for commands.provider's `allowed`: the JIDs of list
-- (full, bare or domains), and always our own account.
---@param list string[] full JIDs, bare JIDs or domains
---@param own? string our own JID: always allowed
---@return fun(from: string): boolean allowed
function M.allowed(list, own)
  return function(from)
    if own and jidlib.bare(from) == jidlib.bare(own) then return true end
    return matches(list, from)
  end
end

-- Presence subscriptions: approve requests from peers and the allowed, and ask back, so that both
-- sides see each other's presence (and caps) for as long as the roster keeps them.
local function handle_subscriptions(self)
  self.handlers[#self.handlers + 1] = self.conn:on("presence", { type = "subscribe" }, function(s)
    local from = s.attr.from
    if not from then return end
    if matches(self.accept, from) or matches(self.peers, from) then
      self.conn:send(st.presence({ to = jidlib.bare(from), type = "subscribed" }))
      if not self.asked[jidlib.bare(from)] then
        self.asked[jidlib.bare(from)] = true
        self.conn:send(st.presence({ to = jidlib.bare(from), type = "subscribe" }))
      end
      M.log.info("%s: accepted presence subscription from %s", self.role, from)
    else
      self.conn:send(st.presence({ to = jidlib.bare(from), type = "unsubscribed" }))
      M.log.warn("%s: refused presence subscription from %s (not a grid peer)", self.role, from)
    end
  end)
end

-- Where the repository is online: its full JID from its presence (the resource may change when
-- it restarts), unless the configuration fixed one.
local function track_repository(self, jid)
  local bare = jidlib.bare(jid)
  self.repository = { bare = bare, fixed = jid ~= bare and jid or nil, online = {} }
  self.handlers[#self.handlers + 1] = self.conn:on("presence", function(s)
    local from = s.attr.from
    if not from or jidlib.bare(from) ~= bare or from == bare then return end
    if s.attr.type == "unavailable" then
      self.repository.online[from] = nil
    elseif s.attr.type == nil then
      local was = self.repository.online[from]
      self.repository.online[from] = true
      if not was then
        for _, fn in ipairs(self.repository_watchers) do task.spawn({ name = "repository online" }, fn, from) end
      end
    end
  end)
end

--- m:repository_jid() -> the full JID of the grid's repository | nil, err (not online, or none
-- configured).
---@return string? jid the repository's full JID
---@return sacm.Error? err
function Member:repository_jid()
  local r = self.repository
  if not r then return nil, errors.new("item-not-found", "no repository is configured (the `repository` option)") end
  if r.fixed then return r.fixed end
  local jids = {}
  for j in pairs(r.online) do jids[#jids + 1] = j end
  if #jids == 0 then
    return nil, errors.new("recipient-unavailable", ("the repository %s is not online"):format(r.bare))
  end
  table.sort(jids)
  return jids[1]
end

--- m:on_repository(fn): fn(full_jid) runs as a task each time the repository comes online.
---@param fn fun(full_jid: string)
function Member:on_repository(fn)
  self.repository_watchers[#self.repository_watchers + 1] = fn
end

local function describe(self)
  local id = proto.identity(self.role)
  self.disco:add_identity(id.category, id.type, id.name)
  -- a role that is not ready until it has subscribed (an evaluator) advertises its role feature,
  -- which is what orchestrators look for, only then (m:advertise_role()); the repository admits
  -- it by the role in its info form meanwhile
  if not self.defer_role_feature then self.disco:add_feature(proto.FEATURE[self.role]) end
  self:update_info()
end

--- m:advertise_role(): adds the role's feature, when join deferred it (defer_role_feature).
---(no parameters, no results)
function Member:advertise_role()
  self.disco:add_feature(proto.FEATURE[self.role])
end

--- m:update_info([fields]): replaces the role's XEP-0128 info fields (var -> string or list; the
-- role is always there); caps are re-advertised when they change.
---@param fields? table<string, string|string[]>
function Member:update_info(fields)
  if fields then self.info_fields = fields end
  local all = { role = self.role }
  for k, v in pairs(self.info_fields or {}) do all[k] = v end
  self.disco:add_extension({ form_type = proto.INFO_FORM_TYPE, fields = all })
end

--- m:set_features(key, prefix_fn, names): advertises exactly prefix_fn(name) for each name, withdrawing
-- ones from an earlier call (kinds a collector collects, policies an evaluator holds).
---@param key string which set of features this is
---@param prefix_fn fun(name: string): string the feature of a name
---@param names string[]
function Member:set_features(key, prefix_fn, names)
  self.feature_sets = self.feature_sets or {}
  local old = self.feature_sets[key] or {}
  local new = {}
  for _, n in ipairs(names) do new[prefix_fn(n)] = true end
  for f in pairs(old) do
    if not new[f] then self.disco:remove_feature(f) end
  end
  for f in pairs(new) do
    if not old[f] then self.disco:add_feature(f) end
  end
  self.feature_sets[key] = new
end

-- The owner (the repository) creates the grid's nodes when missing and brings existing ones to
-- the configuration the grid relies on (a node made by an older version kept its items).
local function ensure_nodes(self)
  local existing = {}
  local nodes, err = self.pubsub:nodes()
  if not nodes then return nil, err end
  for _, n in ipairs(nodes) do existing[n] = true end
  for _, node in pairs(proto.NODE) do
    if not existing[node] then
      local ok, cerr = self.pubsub:create(node, self.node_config)
      if ok then
        M.log.info("%s: created pubsub node %s", self.role, node)
      elseif cerr.condition ~= "conflict" then -- created meanwhile (another repository process): fine
        return nil, errors.new(cerr.condition or "internal-server-error", ("cannot create pubsub node %s on %s: %s "
          .. "(the repository's account must be allowed to create nodes: see docs/deploy.md)"):format(node,
          self.pubsub.jid, tostring(cerr)))
      end
    else
      local ok, cerr = self.pubsub:configure(node, self.node_config)
      if not ok then M.log.warn("%s: could not configure pubsub node %s: %s", self.role, node, tostring(cerr)) end
    end
  end
  return true
end

local function subscribe_once(self, node, bare)
  local subs = self.pubsub:subscriptions(node) or {}
  for _, s in ipairs(subs) do
    if jidlib.bare(s.jid) == bare and s.state == "subscribed" then return true end
  end
  return self.pubsub:subscribe(node, nil, bare)
end

--- m:subscribe(node_key, fn) -> handler: subscribes our bare JID to a grid node (once: an existing
-- subscription is reused) and calls fn(item, event) for each published item. Until the
-- repository has made the node and admitted us it is retried, for up to admission_timeout seconds.
---@param key string a grid node's key (sacm.grid.protocol NODE)
---@param fn fun(item: sacm.xmpp.pubsub.Item, event: sacm.xmpp.pubsub.Event)
---@return sacm.xmpp.Handler? handler
---@return sacm.Error? err
function Member:subscribe(key, fn)
  local node = assert(proto.NODE[key], "unknown grid node")
  local bare = jidlib.bare(self.conn.jid)
  local deadline, pause = time.monotonic() + self.admission_timeout, 0.05
  local waited = false
  while true do
    local ok, err = subscribe_once(self, node, bare)
    if ok then
      if waited then M.log.info("%s: admitted to %s", self.role, node) end
      break
    end
    if not NOT_YET[err.condition] or time.monotonic() + pause > deadline then
      return nil, errors.new(err.condition or "forbidden", ("%s cannot subscribe to %s on %s: %s (the grid's repository "
        .. "creates the nodes and admits each component by its role: is it running, and does it accept %s?)"):format(
        bare, node, self.pubsub.jid, tostring(err.text or err), bare))
    end
    if not waited then M.log.info("%s: waiting for the repository to admit %s to %s (%s)", self.role, bare, node,
      tostring(err.condition)) end
    waited = true
    task.sleep(pause)
    pause = math.min(pause * 2, 2)
  end
  local h = self.pubsub:on_event(node, function(ev)
    if ev.type == "items" then
      for _, item in ipairs(ev.items) do fn(item, ev) end
    end
  end)
  self.handlers[#self.handlers + 1] = h
  return h
end

--- m:publish(node_key, id, element) -> id | nil, err. Re-sent after a reconnect (the id makes it
-- idempotent), so an item published around a drop is not lost.
---@param key string a grid node's key
---@param id string the item id
---@param el sacm.xml.Element
---@return string? id
---@return sacm.Error? err
function Member:publish(key, id, el)
  return self.pubsub:publish(assert(proto.NODE[key], "unknown grid node"), id, el)
end

--- m:status(type, [fields, text, correlation]): publishes a status notification (best effort:
-- failures are logged, not raised).
---@param stype string the status type ("online", "heartbeat", ...)
---@param fields? table<string, any>
---@param text? string
---@param correlation? string
---@return string? id the published item's (failures are also logged)
---@return sacm.Error? err
function Member:status(stype, fields, text, correlation)
  local el = payload.status({ type = stype, component = self.conn.jid, role = self.role,
    correlation = correlation, text = text, fields = fields })
  local ok, err = self:publish("status", nil, el)
  if not ok then M.log.warn("%s: status '%s' not published: %s", self.role, stype, tostring(err)) end
  return ok, err
end

--- member.join(opts) -> member | nil, err. Waits until connected, described and subscribed.
-- opts: the xmpp.connect options (servers may also be "host:port" strings), role, pubsub (service JID; default pubsub.<domain>), peers (JIDs
-- to keep mutual presence with), accept (more JIDs/domains whose presence subscriptions are
-- approved; default our domain), node_config (for nodes we create), info (XEP-0128 fields),
-- features ({key = {prefix = fn, names = {...}}}: as set_features, before the first presence),
-- extensions (more XEP-0128 forms, {form_type, fields}, also before the first presence),
-- caps_cache (options of a caps.cache that learns others' caps from the first presence on),
-- heartbeat (seconds; false disables), repository (the JID of the grid's repository: bare, or full
-- to fix the resource; we register with it by presence, and track where it is online), owner
-- (true for the repository: create and configure the grid's nodes), admission_timeout (seconds,
-- default M.ADMISSION_TIMEOUT).
---@param opts table the xmpp.connect options, and role, pubsub, peers, accept, node_config, info, features, extensions, caps_cache, heartbeat, repository, owner, admission_timeout
---@return sacm.grid.Member? member
---@return sacm.Error? err
function M.join(opts)
  assert(type(opts) == "table" and proto.FEATURE[opts.role], "member.join needs a grid role")
  local copts = {}
  for _, k in ipairs(CONNECT_KEYS) do copts[k] = opts[k] end
  if opts.servers then -- several nodes of a cluster: connect to one, fail over to the others
    local servers, serr = M.parse_servers(opts.servers)
    if not servers then return nil, serr end
    copts.servers = servers
  end
  local conn, err = xmpp.connect(copts)
  if not conn then return nil, err end
  local domain = jidlib.domain(conn.jid)
  local self = setmetatable({
    role = opts.role, conn = conn, handlers = {}, asked = {}, started = time.now(),
    peers = opts.peers or {}, accept = opts.accept or { domain },
    node_config = opts.node_config or proto.NODE_CONFIG,
    admission_timeout = opts.admission_timeout or M.ADMISSION_TIMEOUT,
    defer_role_feature = opts.defer_role_feature,
    repository_watchers = {},
  }, Member)
  self.disco = disco.provider(conn)
  self.pubsub = pubsub.service(conn, opts.pubsub or ("pubsub." .. domain))
  self.commands = commands.provider(conn)
  self.info_fields = opts.info
  -- before our first presence: the presence (and caps) of peers answering it must not be missed
  if opts.caps_cache then self.caps_cache = caps.cache(conn, opts.caps_cache) end
  handle_subscriptions(self)
  if opts.repository then track_repository(self, opts.repository) end
  describe(self)
  -- the role's own features and forms before the first presence, so the first caps are the right
  -- ones (a peer that sees a ver computed before a feature was added would find it wrong)
  for key, set in pairs(opts.features or {}) do self:set_features(key, set.prefix, set.names) end
  for _, form in ipairs(opts.extensions or {}) do self.disco:add_extension(form) end
  self.caps = caps.advertise(conn, { node = proto.CAPS_NODE })
  local register = { table.unpack(self.peers) }
  if self.repository then register[#register + 1] = self.repository.bare end
  for _, peer in ipairs(register) do
    self.asked[jidlib.bare(peer)] = true
    conn:send(st.presence({ to = jidlib.bare(peer), type = "subscribe" }))
  end
  if opts.owner then
    local ok
    ok, err = ensure_nodes(self)
    if not ok then
      if self.caps_cache then self.caps_cache:close() end
      conn:close()
      return nil, err
    end
  end
  -- the first status may come before the repository admitted us: it waits for that, not the join
  task.spawn({ name = "online status" }, function()
    local deadline, pause = time.monotonic() + self.admission_timeout, 0.1
    while not self.closed do
      local el = payload.status({ type = "online", component = conn.jid, role = self.role,
        fields = { version = proto.VERSION } })
      local ok, perr = self:publish("status", nil, el)
      if ok then return end
      if not NOT_YET[perr.condition] or time.monotonic() + pause > deadline then
        M.log.warn("%s: status 'online' not published: %s", self.role, tostring(perr))
        return
      end
      task.sleep(pause)
      pause = math.min(pause * 2, 2)
    end
  end)
  local beat = opts.heartbeat
  if beat == nil then beat = M.HEARTBEAT end
  if beat then
    self.heartbeat = timer.every(beat, function()
      self:status("heartbeat", { uptime = math.floor(time.now() - self.started) })
    end)
  end
  M.log.info("%s joined the grid as %s", self.role, conn.jid)
  return self
end

--- m:close(): says goodbye (status offline), stops handlers and disconnects.
---(no parameters, no results)
function Member:close()
  if self.closed then return end
  self.closed = true
  if self.heartbeat then self.heartbeat:cancel() end
  -- the goodbye waits for the server's answer: skipped where nothing may wait (closed outside a
  -- task), rather than raising from a close handler
  if self.conn.state == "connected" and task.can_wait() then self:status("offline") end
  for _, h in ipairs(self.handlers) do h.remove() end
  self.caps:stop()
  if self.caps_cache then self.caps_cache:close() end
  self.commands:close()
  self.conn:close()
end

Member.__close = errors.closer(Member.close)

return M
