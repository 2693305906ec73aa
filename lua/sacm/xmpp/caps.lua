--- sacm.xmpp.caps: XEP-0115 Entity Capabilities. Say what we support in every presence, and learn
-- what others support from theirs, with one disco#info query per distinct capability set.
--
--   caps.advertise(conn, { to = { "orchestrator@grid.example/main" } })   -- presence with <c/>
--
--   local cache = caps.cache(conn)                                          -- watch others' <c/>
--   for _, jid in ipairs(cache:find("urn:example:sacm:collector")) do ... end
--
-- The cache trusts a verification string only after it has computed it itself from the disco#info
-- answer (XEP-0115 5.4): a peer that lies about its ver cannot put a wrong feature list under that
-- ver for anyone else. State is per connection.
local xml = require "sacm.xml"
local handlers = require "sacm._handlers"
local st = require "sacm.xmpp.stanza"
local errors = require "sacm.error"
local crypto = require "sacm.crypto"
local task = require "sacm.task"
local timer = require "sacm.timer"
local time = require "sacm.time"
local jidlib = require "sacm.xmpp.jid"
local disco = require "sacm.xmpp.disco"
local log = require("sacm.log").new("caps")

local M = {}

M.NS = "http://jabber.org/protocol/caps"
M.DEFAULT_NODE = "https://sacmrun.example/caps"
M.DEFAULT_HASH = "sha-1"

-- IANA "Hash Function Textual Names" accepted in <c hash=.../>, and their OpenSSL names.
-- md2/md5 are not accepted: a ver made with them could be forged.
M.HASHES = { ["sha-1"] = "sha1", ["sha-224"] = "sha224", ["sha-256"] = "sha256",
             ["sha-384"] = "sha384", ["sha-512"] = "sha512" }

-------------------------------------------------------------------------------- verification string

-- Byte-wise ordering ("i;octet", RFC 4790), independent of the C library's locale.
local function octet_less(a, b)
  if a == b then return false end
  local n = math.min(#a, #b)
  local i = 1
  while i <= n do
    -- compare 8-byte chunks first, then the differing bytes
    local j = math.min(i + 7, n)
    if a:sub(i, j) ~= b:sub(i, j) then
      for k = i, j do
        local x, y = a:byte(k), b:byte(k)
        if x ~= y then return x < y end
      end
    end
    i = j + 1
  end
  return #a < #b
end
M._octet_less = octet_less

local function as_info(info)
  if xml.is_element(info) then return disco.parse_info(info) end
  if type(info) ~= "table" then error("expected a disco info table or a disco#info <query/> element", 3) end
  return info
end

-- The forms that take part in the hash: those with exactly one hidden FORM_TYPE (XEP-0115 5.4
-- step 3.6: forms whose FORM_TYPE is not hidden are ignored; a form without one is no XEP-0128
-- form at all). Returns a list of {form_type =, fields = {{var =, values = {...}}}}.
local function hashed_forms(info)
  local out = {}
  for _, form in ipairs(info.forms or {}) do
    local ft, ftype
    local fields = {}
    for field in form:children("field", disco.NS_DATA) do
      local values = {}
      for v in field:children("value", disco.NS_DATA) do values[#values + 1] = v:get_text() end
      if field.attr.var == "FORM_TYPE" then
        ft, ftype = values, field.attr.type
      elseif field.attr.var then
        fields[#fields + 1] = { var = field.attr.var, values = values }
      end
    end
    if ft and ftype == "hidden" then
      out[#out + 1] = { form_type = ft[1] or "", form_types = ft, fields = fields }
    end
  end
  return out
end

--- string(info) -> S, the string XEP-0115 5.1 hashes (identities, features, extension forms).
---@param info sacm.xmpp.disco.Info|sacm.xml.Element a disco info table or a disco#info <query/>
---@return string S
function M.string(info)
  info = as_info(info)
  local ids = {}
  for i, id in ipairs(info.identities or {}) do
    ids[i] = { id.category or "", id.type or "", id.lang or "", id.name or "" }
  end
  table.sort(ids, function(a, b)
    for k = 1, 4 do
      if a[k] ~= b[k] then return octet_less(a[k], b[k]) end
    end
    return false
  end)
  local out = {}
  for _, id in ipairs(ids) do out[#out + 1] = table.concat(id, "/") .. "<" end

  local features = disco._feature_list(info.features)
  table.sort(features, octet_less)
  for _, f in ipairs(features) do out[#out + 1] = f .. "<" end

  local forms = hashed_forms(info)
  table.sort(forms, function(a, b) return octet_less(a.form_type, b.form_type) end)
  for _, form in ipairs(forms) do
    out[#out + 1] = form.form_type .. "<"
    table.sort(form.fields, function(a, b) return octet_less(a.var, b.var) end)
    for _, field in ipairs(form.fields) do
      out[#out + 1] = field.var .. "<"
      table.sort(field.values, octet_less)
      for _, v in ipairs(field.values) do out[#out + 1] = v .. "<" end
    end
  end
  return table.concat(out)
end

--- ver(info [, hash]) -> the verification string: base64 of the hash (default sha-1) of string(info).
-- info: a disco info table (disco.info, provider:info()) or a disco#info <query/> element.
---@param info sacm.xmpp.disco.Info|sacm.xml.Element a disco info table or a disco#info <query/>
---@param hash? string a XEP-0115 hash name ("sha-1")
---@return string ver
function M.ver(info, hash)
  hash = hash or M.DEFAULT_HASH
  local name = M.HASHES[hash]
  if not name then error("unsupported caps hash '" .. tostring(hash) .. "'", 2) end
  return crypto.base64_encode(crypto.digest(name, M.string(info)))
end

--- well_formed(info) -> true, or false, reason (XEP-0115 5.4 steps 3.3-3.5: no duplicate
-- identity, feature or FORM_TYPE, and one value per FORM_TYPE).
---@param info sacm.xmpp.disco.Info|sacm.xml.Element a disco info table or a disco#info <query/>
---@return boolean ok
---@return string? reason
function M.well_formed(info)
  info = as_info(info)
  local seen = {}
  for _, id in ipairs(info.identities or {}) do
    local key = table.concat({ id.category or "", id.type or "", id.lang or "", id.name or "" }, "\0")
    if seen[key] then return false, "duplicate identity " .. (id.category or "") .. "/" .. (id.type or "") end
    seen[key] = true
  end
  seen = {}
  for _, f in ipairs(disco._feature_list(info.features)) do
    if seen[f] then return false, "duplicate feature " .. f end
    seen[f] = true
  end
  seen = {}
  for _, form in ipairs(hashed_forms(info)) do
    for i = 2, #form.form_types do
      if form.form_types[i] ~= form.form_types[1] then
        return false, "FORM_TYPE with several values in a form " .. form.form_type
      end
    end
    if seen[form.form_type] then return false, "two extension forms with FORM_TYPE " .. form.form_type end
    seen[form.form_type] = true
  end
  return true
end

--- verify(info, ver [, hash]) -> true, or false, reason.
---@param info sacm.xmpp.disco.Info|sacm.xml.Element a disco info table or a disco#info <query/>
---@param ver string
---@param hash? string ("sha-1")
---@return boolean ok
---@return string? reason
function M.verify(info, ver, hash)
  hash = hash or M.DEFAULT_HASH
  if not M.HASHES[hash] then return false, "unsupported hash " .. tostring(hash) end
  info = as_info(info)
  local ok, why = M.well_formed(info)
  if not ok then return false, "ill-formed disco#info: " .. why end
  local computed = M.ver(info, hash)
  if computed ~= ver then return false, ("advertised ver %s, computed %s"):format(tostring(ver), computed) end
  return true
end

--- element(node, ver [, hash]) -> <c xmlns='http://jabber.org/protocol/caps' hash= node= ver=/>
---@param node string
---@param ver string
---@param hash? string ("sha-1")
---@return sacm.xml.Element c
function M.element(node, ver, hash)
  return xml.element("c", { xmlns = M.NS, hash = hash or M.DEFAULT_HASH, node = node, ver = ver })
end

-------------------------------------------------------------------------------- advertising

---@class sacm.xmpp.caps.AdvertiseOptions
---@field node? string a URI naming the software
---@field hash? string "sha-1"
---@field broadcast? boolean a presence without 'to' (true)
---@field to? string|string[] directed presence to each
---@field show? string
---@field status? string
---@field priority? integer
---@field debounce? number seconds (0.1)

---@class sacm.xmpp.caps.Advertiser sends presence with our caps (caps.advertise)
---@field conn sacm.xmpp.Connection
---@field node string
---@field ver string the current verification string
---@field hash string
local Advertiser = {}
Advertiser.__index = Advertiser
function Advertiser:__tostring()
  return ("caps advertiser for %s (node %s)"):format(tostring(self.conn and self.conn.jid), tostring(self.node))
end
M.Advertiser = Advertiser

local advertisers = setmetatable({}, { __mode = "k" })

local function target_list(to)
  if to == nil then return {} end
  if type(to) == "string" then return { to } end
  if type(to) ~= "table" then error("caps.advertise: 'to' must be a JID or a list of JIDs", 3) end
  local list = {}
  for i, j in ipairs(to) do
    if type(j) ~= "string" then error("caps.advertise: 'to' must hold JIDs", 3) end
    list[i] = j
  end
  return list
end

local function presence(self, to, ptype)
  local p = st.presence({ to = to, type = ptype })
  if ptype == nil then
    if self.show then p:tag("show"):text(self.show):up() end
    if self.status then p:tag("status"):text(self.status):up() end
    if self.priority then p:tag("priority"):text(tostring(self.priority)):up() end
    p:add(M.element(self.node, self.ver, self.hash))
  end
  return p
end

-- Recomputes the ver (moving the node#ver alias along) and returns whether it changed.
local function refresh(self)
  local ver = M.ver(self.provider:info(), self.hash)
  if ver == self.ver then return false end
  if self.ver then self.provider:remove_node(self.node .. "#" .. self.ver) end
  self.ver = ver
  self.provider:add_alias(self.node .. "#" .. ver)
  return true
end

local function send_all(self)
  if self.stopped then return end
  if self.broadcast then self.conn:send(presence(self, nil)) end
  for _, to in ipairs(self.targets) do self.conn:send(presence(self, to)) end
  self.sent = self.sent + 1
end

--- advertise(conn [, opts]) -> advertiser. Sends presence carrying our caps now, again (after
-- `debounce` seconds) whenever the disco provider's identities, features or extensions change,
-- and after every reconnect. Adds http://jabber.org/protocol/caps to the provider, which answers
-- disco#info for node#ver (XEP-0115 6.2).
-- opts: node (a URI naming the software, default M.DEFAULT_NODE), hash ("sha-1"), broadcast
-- (default true: a presence without 'to', which goes to the roster and makes us available),
-- to (a JID or list: directed presence to each), show, status, priority, debounce (0.1 s).
-- Calling it again on the same connection reconfigures and returns the same advertiser.
---@param conn sacm.xmpp.Connection
---@param opts? sacm.xmpp.caps.AdvertiseOptions
---@return sacm.xmpp.caps.Advertiser
function M.advertise(conn, opts)
  if type(conn) ~= "table" or type(conn.on) ~= "function" then error("caps.advertise: expects a connection", 2) end
  opts = opts or {}
  if type(opts) ~= "table" then error("caps.advertise: opts must be a table", 2) end
  local self = advertisers[conn]
  if self and not self.stopped then
    self:configure(opts)
    return self
  end
  local hash = opts.hash or M.DEFAULT_HASH
  if not M.HASHES[hash] then error("caps.advertise: unsupported hash '" .. tostring(hash) .. "'", 2) end
  self = setmetatable({
    conn = conn,
    provider = disco.provider(conn),
    node = opts.node or M.DEFAULT_NODE,
    hash = hash,
    broadcast = opts.broadcast ~= false,
    targets = target_list(opts.to),
    show = opts.show, status = opts.status, priority = opts.priority,
    debounce = opts.debounce or 0.1,
    sent = 0,
  }, Advertiser)
  if type(self.node) ~= "string" or self.node == "" then error("caps.advertise: node must be a non-empty string", 2) end
  self.provider:add_feature(M.NS)
  self.watch = self.provider:on_change(function() self:_schedule() end)
  self.status_handler = conn:on("status", function(event)
    if event == "reconnected" and not self.stopped then
      refresh(self)
      send_all(self)
    end
  end)
  advertisers[conn] = self
  refresh(self)
  send_all(self)
  return self
end

--- advertiser(conn) -> the connection's running advertiser, or nil.
---@param conn sacm.xmpp.Connection
---@return sacm.xmpp.caps.Advertiser? advertiser
function M.advertiser(conn)
  local self = advertisers[conn]
  if self and not self.stopped then return self end
end

function Advertiser:_schedule()
  if self.stopped or self.pending then return end
  self.pending = timer.after(self.debounce, function()
    self.pending = nil
    if refresh(self) then send_all(self) end
  end, { name = "caps presence" })
end

--- adv:configure(opts): changes show/status/priority/to/broadcast/node and re-sends presence.
---@param opts sacm.xmpp.caps.AdvertiseOptions
function Advertiser:configure(opts)
  if opts.hash and opts.hash ~= self.hash then
    if not M.HASHES[opts.hash] then error("unsupported caps hash '" .. tostring(opts.hash) .. "'", 2) end
    self.hash = opts.hash
  end
  if opts.node and opts.node ~= self.node then
    if self.ver then self.provider:remove_node(self.node .. "#" .. self.ver) end
    self.node, self.ver = opts.node, nil
  end
  if opts.to ~= nil then self.targets = target_list(opts.to) end
  if opts.broadcast ~= nil then self.broadcast = opts.broadcast end
  if opts.show ~= nil then self.show = opts.show or nil end
  if opts.status ~= nil then self.status = opts.status or nil end
  if opts.priority ~= nil then self.priority = opts.priority or nil end
  if opts.debounce ~= nil then self.debounce = opts.debounce end
  self:update()
end

--- adv:update(): recomputes the ver and sends presence now, changed or not.
---(no parameters, no results)
function Advertiser:update()
  if self.stopped then return end
  refresh(self)
  send_all(self)
end

--- adv:set_presence{show=, status=, priority=}: a new presence (with caps) to everyone.
-- Use this, not a presence of your own, so every presence carries caps (XEP-0115 4); false clears.
---@param p {show?: string, status?: string, priority?: integer}|false false clears
function Advertiser:set_presence(p)
  self:configure({ show = p.show, status = p.status, priority = p.priority })
end

--- adv:add_target(jid): also send directed presence to jid (now and on every change).
---@param jid string
function Advertiser:add_target(jid)
  if type(jid) ~= "string" then error("add_target expects a JID", 2) end
  for _, t in ipairs(self.targets) do if jidlib.equal(t, jid) then return end end
  self.targets[#self.targets + 1] = jid
  if not self.stopped then self.conn:send(presence(self, jid)) end
end

--- adv:remove_target(jid): stop sending to jid and send it unavailable presence.
---@param jid string
function Advertiser:remove_target(jid)
  for i = #self.targets, 1, -1 do
    if jidlib.equal(self.targets[i], jid) then
      table.remove(self.targets, i)
      if not self.stopped then self.conn:send(presence(self, jid, "unavailable")) end
    end
  end
end

--- adv:element() -> the <c/> element for the current ver (to put in a presence of your own).
---@return sacm.xml.Element c
function Advertiser:element()
  return M.element(self.node, self.ver, self.hash)
end

--- adv:stop([opts]): no more presence; removes the node#ver alias and the caps feature.
-- opts.unavailable = true first sends unavailable presence (broadcast and to each target).
---@param opts? {unavailable?: boolean}
function Advertiser:stop(opts)
  if self.stopped then return end
  if opts and opts.unavailable then
    if self.broadcast then self.conn:send(presence(self, nil, "unavailable")) end
    for _, to in ipairs(self.targets) do self.conn:send(presence(self, to, "unavailable")) end
  end
  self.stopped = true
  if self.pending then self.pending:cancel(); self.pending = nil end
  self.watch.remove()
  self.status_handler.remove()
  if self.ver then self.provider:remove_node(self.node .. "#" .. self.ver) end
  if self.provider:has_feature(M.NS) then self.provider:remove_feature(M.NS) end
  if advertisers[self.conn] == self then advertisers[self.conn] = nil end
end

-------------------------------------------------------------------------------- the cache

---@class sacm.xmpp.caps.Entity what a full JID last advertised
---@field hash string
---@field ver string
---@field node string
---@field info sacm.xmpp.disco.Info? verified
---@field rejected string? why its caps were refused

---@class sacm.xmpp.caps.Cache the caps of the entities whose presence a connection sees (caps.cache)
local Cache = {}
Cache.__index = Cache
function Cache:__tostring()
  local n = 0
  for _ in pairs(self.entities or {}) do n = n + 1 end
  return ("caps cache of %s (%d entities%s)"):format(tostring(self.conn and self.conn.jid), n,
    self.closed and ", closed" or "")
end
M.Cache = Cache

local caches = setmetatable({}, { __mode = "k" })

-- Re-evaluates the predicates of cache:wait.
local function recheck(self)
  local waiters = self.waiters
  for i = #waiters, 1, -1 do
    local w = waiters[i]
    local ok, value = pcall(w.pred, self)
    if not ok then
      table.remove(waiters, i)
      task.wake(w.task, nil, value)
    elseif value then
      table.remove(waiters, i)
      task.wake(w.task, value)
    end
  end
end

local function notify(self, jid, info)
  for _, h in ipairs(self.watchers) do
    task.spawn({ name = "caps update handler" }, h.fn, jid, info, self)
  end
  recheck(self)
end

local function index(self, jid, key)
  local set = self.by_key[key]
  if not set then set = {}; self.by_key[key] = set end
  set[jid] = true
end

local function unindex(self, jid, key)
  local set = self.by_key[key]
  if not set then return end
  set[jid] = nil
  if next(set) == nil then self.by_key[key] = nil end
end

local function remove_entity(self, jid)
  self.rejections[jid] = nil
  local e = self.entities[jid]
  if not e then return end
  self.entities[jid] = nil
  unindex(self, jid, e.key)
  if e.info then notify(self, jid, nil) end
end

-- Keeps at most max_entries verified vers: the oldest no current entity uses go first.
local function evict(self)
  local order = self.order
  local i = 1
  while #order > self.max_entries and i <= #order do
    local key = order[i]
    if self.by_key[key] then
      i = i + 1
    else
      table.remove(order, i)
      self.known[key] = nil
    end
  end
end

local function accept(self, key, info, from)
  local entry = {
    identities = info.identities, features = info.features, forms = info.forms,
    hash = info.hash, ver = info.ver, verified_from = from,
  }
  self.known[key] = entry
  self.order[#self.order + 1] = key
  self.stats.verified = self.stats.verified + 1
  local jids = {}
  for jid in pairs(self.by_key[key] or {}) do jids[#jids + 1] = jid end
  table.sort(jids)
  for _, jid in ipairs(jids) do
    local e = self.entities[jid]
    if e and e.key == key and not e.rejected and e.info ~= entry then
      e.info = entry
      notify(self, jid, entry)
    end
  end
  evict(self)
end

local function holdoff_key(jid, key) return jid .. "\0" .. key end

local function pick_candidate(self, key, tried)
  local now = time.monotonic()
  local best
  for jid in pairs(self.by_key[key] or {}) do
    local e = self.entities[jid]
    local until_ = self.holdoff[holdoff_key(jid, key)]
    if e and not e.rejected and not tried[jid] and not (until_ and until_ > now) then
      if not best or jid < best then best = jid end
    end
  end
  return best
end

local function query(self, jid, e)
  -- at most max_lookups queries in flight: a burst of new vers must not flood the server
  while self.active >= self.max_lookups do
    local me = task.current()
    self.slot_waiters[#self.slot_waiters + 1] = me
    task.suspend(function()
      for i = #self.slot_waiters, 1, -1 do if self.slot_waiters[i] == me then table.remove(self.slot_waiters, i) end end
    end)
  end
  self.active = self.active + 1
  self.stats.queries = self.stats.queries + 1
  local ok, info, err = pcall(disco.info, self.conn, jid, e.node .. "#" .. e.ver, self.timeout)
  self.active = self.active - 1
  while #self.slot_waiters > 0 do
    if task.wake(table.remove(self.slot_waiters, 1)) then break end
  end
  if not ok then error(info, 0) end
  return info, err
end

-- Finds the info for key: asks entities advertising it, one after another, until one answers
-- with info that hashes to the ver. One lookup per key at a time.
local function lookup(self, key)
  if self.lookups[key] or self.known[key] or self.closed then return end
  self.lookups[key] = true
  local tried = {}
  local ok, err = pcall(function()
    while not self.known[key] and not self.closed do
      local jid = pick_candidate(self, key, tried)
      if not jid then break end
      tried[jid] = true
      local e = self.entities[jid]
      local info, qerr
      local own = self.conn.jid and jidlib.equal(jid, self.conn.jid) and disco.existing(self.conn)
      if own then
        info = own:info()
      else
        info, qerr = query(self, jid, e)
      end
      if info then
        local good, why = M.verify(info, e.ver, e.hash)
        if good then
          info.hash, info.ver = e.hash, e.ver
          accept(self, key, info, jid)
        else
          self.stats.rejected = self.stats.rejected + 1
          log.warn("ignoring caps of %s: %s", jid, why)
          -- remembered while jid stays available, even if it advertises something else between
          local r = self.rejections[jid] or {}
          r[key] = why
          self.rejections[jid] = r
          local cur = self.entities[jid]
          if cur and cur.key == key then cur.rejected = why end
        end
      else
        self.stats.failed = self.stats.failed + 1
        log.warn("caps lookup of %s (ver %s) failed, next try in %g s: %s", jid, e.ver, self.retry_after,
          tostring(qerr))
        self.holdoff[holdoff_key(jid, key)] = time.monotonic() + self.retry_after
        -- tried again after the hold-off even if no new presence comes: a component whose
        -- lookup timed out once (a busy server) would otherwise stay unknown until it re-sends
        -- presence, which it may never do
        if not self.retries[key] then
          self.retries[key] = timer.after(self.retry_after, function()
            self.retries[key] = nil
            if not self.closed then lookup(self, key) end
          end, { background = true }) -- a retry alone does not keep a program running
        end
      end
    end
  end)
  self.lookups[key] = nil
  recheck(self) -- a wait may be about the outcome (stats, rejected)
  if not ok then error(err, 0) end
end

local function on_presence(self, s)
  if self.closed then return end
  local from = s.attr.from and jidlib.normalize(s.attr.from)
  if not from then return end
  local ptype = s.attr.type
  if ptype == "unavailable" or ptype == "error" then
    -- Only the JID itself: a server also sends unavailable from a bare JID around subscription
    -- changes, which says nothing about resources that sent us directed presence.
    remove_entity(self, from)
    return
  end
  if ptype ~= nil then return end -- subscription management and probes say nothing about caps
  local c = s:child("c", M.NS)
  if not c then return end -- no caps in this presence: keep what it advertised before
  local hash, ver, node = c.attr.hash, c.attr.ver, c.attr.node
  if not hash then
    log.debug("legacy caps (no hash) from %s ignored", from)
    return
  end
  if not M.HASHES[hash] then
    log.debug("caps from %s use unsupported hash %s", from, hash)
    return
  end
  if type(ver) ~= "string" or ver == "" or type(node) ~= "string" then
    log.debug("caps from %s without node or ver ignored", from)
    return
  end
  local key = hash .. " " .. ver
  local e = self.entities[from]
  if e and e.key == key then
    e.node = node
    if e.info or e.rejected then return end
  else
    if e then
      unindex(self, from, e.key)
      if e.info then
        e.info = nil
        notify(self, from, nil)
      end
    end
    local r = self.rejections[from]
    e = { key = key, hash = hash, ver = ver, node = node, rejected = r and r[key] }
    self.entities[from] = e
    index(self, from, key)
    if e.rejected then return end
    local known = self.known[key]
    if known then
      e.info = known
      notify(self, from, known)
      return
    end
  end
  lookup(self, key)
end

--- cache(conn [, opts]) -> the connection's caps cache (created on first call). It handles every
-- presence the connection receives (roster broadcasts and directed presence alike).
-- opts: timeout (disco#info query, 10 s), retry_after (seconds before asking an entity again after
-- a failed query, 30), max_lookups (queries in flight, 8), max_entries (verified vers kept, 1000).
---@param conn sacm.xmpp.Connection
---@param opts? {timeout?: number, retry_after?: number, max_lookups?: integer, max_entries?: integer}
---@return sacm.xmpp.caps.Cache
function M.cache(conn, opts)
  if type(conn) ~= "table" or type(conn.on) ~= "function" then error("caps.cache: expects a connection", 2) end
  local self = caches[conn]
  if self and not self.closed then return self end
  opts = opts or {}
  self = setmetatable({
    conn = conn,
    timeout = opts.timeout or 10,
    retry_after = opts.retry_after or 30,
    max_lookups = opts.max_lookups or 8,
    max_entries = opts.max_entries or 1000,
    entities = {},   -- full JID -> {key, hash, ver, node, info, rejected}
    by_key = {},     -- "hash ver" -> {jid = true}
    known = {},      -- "hash ver" -> verified info
    order = {},      -- verified keys, oldest first
    lookups = {},    -- keys being looked up
    holdoff = {},    -- jid\0key -> monotonic time before which we do not ask again
    rejections = {}, -- jid -> {key = reason}: vers jid advertised and answered for with other info
    watchers = {},
    waiters = {},
    slot_waiters = {},
    retries = {},    -- "hash ver" -> timer of the next lookup after a failed one
    active = 0,
    stats = { queries = 0, verified = 0, rejected = 0, failed = 0 },
  }, Cache)
  self.handler = conn:on("presence", function(s) on_presence(self, s) end)
  caches[conn] = self
  return self
end

--- cache:info_for(jid) -> the verified info the full JID advertises, or nil (unknown, not yet
-- verified, or rejected).
---@param jid string a full JID
---@return sacm.xmpp.disco.Info? info
function Cache:info_for(jid)
  local e = self.entities[jidlib.normalize(jid) or jid]
  return e and e.info or nil
end

--- cache:entity(jid) -> {hash, ver, node, info, rejected} as last advertised, or nil.
---@param jid string a full JID
---@return sacm.xmpp.caps.Entity? entity
function Cache:entity(jid)
  local e = self.entities[jidlib.normalize(jid) or jid]
  if not e then return nil end
  return { hash = e.hash, ver = e.ver, node = e.node, info = e.info, rejected = e.rejected }
end

--- cache:find(feature) -> sorted list of the full JIDs whose verified caps include feature.
---@param feature string
---@return string[] jids
function Cache:find(feature)
  local out = {}
  for jid, e in pairs(self.entities) do
    if e.info and e.info.features[feature] then out[#out + 1] = jid end
  end
  table.sort(out)
  return out
end

--- cache:looking_up() -> true while a disco#info lookup of some entity's caps is in flight.
---@return boolean
function Cache:looking_up()
  return next(self.lookups) ~= nil
end

--- cache:jids() -> sorted list of the full JIDs with verified caps.
---@return string[] jids
function Cache:jids()
  local out = {}
  for jid, e in pairs(self.entities) do
    if e.info then out[#out + 1] = jid end
  end
  table.sort(out)
  return out
end

--- cache:on_update(fn) -> handle with :remove(). fn(jid, info, cache) runs as a task when a full
-- JID's verified caps become known or change (info), or when it leaves or its new ver is not
-- verified yet (info == nil).
---@param fn fun(jid: string, info: sacm.xmpp.disco.Info?, cache: sacm.xmpp.caps.Cache)
---@return sacm.xmpp.Handler handle
function Cache:on_update(fn)
  if type(fn) ~= "function" then error("on_update expects a function", 2) end
  return handlers.add(self.watchers, { fn = fn })
end

--- cache:wait(pred [, timeout]) -> pred's first truthy value, or nil, err (timeout). pred(cache)
-- is called now, after every update and after every finished lookup.
---@generic T
---@param pred fun(cache: sacm.xmpp.caps.Cache): T?
---@param timeout? number seconds
---@return T? value
---@return sacm.Error? err timeout
function Cache:wait(pred, timeout)
  local v = pred(self)
  if v then return v end
  local me = task.current()
  if not me then error("cache:wait must be called inside a task", 2) end
  local w = { task = me, pred = pred }
  self.waiters[#self.waiters + 1] = w
  local t
  if timeout then
    t = timer.after(timeout, function()
      task.wake(me, nil, errors.new("timeout", ("caps: condition not met within %gs"):format(timeout)))
    end)
  end
  local function forget()
    if t then t:cancel() end
    for i = #self.waiters, 1, -1 do if self.waiters[i] == w then table.remove(self.waiters, i) end end
  end
  local value, err = task.suspend(forget)
  forget()
  if value == nil and err ~= nil and not errors.is(err) then error(err, 0) end -- pred raised
  return value, err
end

--- cache:wait_for(jid [, timeout]) -> info once jid's caps are verified, or nil, err (timeout).
---@param jid string a full JID
---@param timeout? number seconds
---@return sacm.xmpp.disco.Info? info
---@return sacm.Error? err timeout
function Cache:wait_for(jid, timeout)
  return self:wait(function(c) return c:info_for(jid) end, timeout)
end

--- cache:clear(): forgets every entity (not the verified vers).
---(no parameters, no results)
function Cache:clear()
  local jids = {}
  for jid in pairs(self.entities) do jids[#jids + 1] = jid end
  for _, jid in ipairs(jids) do remove_entity(self, jid) end
end

--- cache:close(): stops watching presence.
---(no parameters, no results)
function Cache:close()
  if self.closed then return end
  self.closed = true
  self.handler.remove()
  for _, t in pairs(self.retries) do t:cancel() end
  self.retries = {}
  if caches[self.conn] == self then caches[self.conn] = nil end
end

return M
