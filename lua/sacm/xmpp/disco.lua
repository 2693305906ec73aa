--- sacm.xmpp.disco: XEP-0030 Service Discovery, both ways, per connection (with XEP-0128 extensions).
--
--   local info, err = disco.info(conn, "pubsub.grid.example")
--   if info and disco.has_feature(info, "http://jabber.org/protocol/pubsub") then ... end
--   for _, item in ipairs(disco.items(conn, "grid.example")) do print(item.jid, item.node, item.name) end
--
--   local p = disco.provider(conn)            -- answers disco#info / disco#items for this connection
--   p:add_identity("client", "bot", "sacm collector")
--   p:add_feature("urn:example:sacm:collector")
--   p:add_node("urn:example:inventory", { name = "Inventory", items = function(req) return {...} end })
--
-- State lives per connection (a table keyed weakly by the connection): two connections in one
-- process never share a provider.
local xml = require "sacm.xml"
local handlers = require "sacm._handlers"
local st = require "sacm.xmpp.stanza"
local errors = require "sacm.error"
local log = require("sacm.log").new("disco")

local M = {}

M.NS_INFO = "http://jabber.org/protocol/disco#info"
M.NS_ITEMS = "http://jabber.org/protocol/disco#items"
M.NS_DATA = "jabber:x:data"
M.NS_PING = "urn:xmpp:ping"

--- The identity answered while none was added: an automated client (XEP-0030 registry).
M.DEFAULT_IDENTITY = { category = "client", type = "bot", name = "sacmrun" }

-------------------------------------------------------------------------------- helpers

local function check_string(v, what, level)
  if type(v) ~= "string" or v == "" then
    error(("%s must be a non-empty string, got %s"):format(what, type(v) == "string" and '""' or type(v)),
      (level or 2) + 1)
  end
end

-- An ordered feature list from a list ({"a", "b"}), a set ({a = true}) or both (the list wins).
local function feature_list(features)
  local list = {}
  if type(features) ~= "table" then return list end
  if #features > 0 then
    for i = 1, #features do list[i] = features[i] end
    return list
  end
  for k, v in pairs(features) do
    if type(k) == "string" and v then list[#list + 1] = k end
  end
  table.sort(list)
  return list
end
M._feature_list = feature_list

-- The FORM_TYPE field of a data form: its value(s) and its type attribute.
local function form_type(form)
  for field in form:children("field", M.NS_DATA) do
    if field.attr.var == "FORM_TYPE" then
      local values = {}
      for v in field:children("value", M.NS_DATA) do values[#values + 1] = v:get_text() end
      return values[1], field.attr.type, values
    end
  end
end

--- form_type(form) -> the FORM_TYPE value of a data form element (nil when it has none).
---@param form sacm.xml.Element a jabber:x:data form
---@return string? form_type
function M.form_type(form)
  return (form_type(form))
end

--- form_values(form) -> {var = {value, ...}} for every field of a data form with a var.
---@param form sacm.xml.Element a jabber:x:data form
---@return table<string, string[]> values
function M.form_values(form)
  local out = {}
  for field in form:children("field", M.NS_DATA) do
    local var = field.attr.var
    if var then
      local values = out[var] or {}
      for v in field:children("value", M.NS_DATA) do values[#values + 1] = v:get_text() end
      out[var] = values
    end
  end
  return out
end

--- extension(info, form_type) -> the first XEP-0128 form in info whose FORM_TYPE is form_type.
---@param info sacm.xmpp.disco.Info?
---@param ft string the FORM_TYPE
---@return sacm.xml.Element? form
function M.extension(info, ft)
  for _, form in ipairs(info and info.forms or {}) do
    if form_type(form) == ft then return form end
  end
end

-- Builds a XEP-0128 form element from {form_type = "urn:...", fields = {var = "v" | {"v1", "v2"}}}.
local function build_form(spec)
  check_string(spec.form_type, "form_type", 4)
  local form = xml.element("x", { xmlns = M.NS_DATA, type = "result" })
  form:tag("field", { var = "FORM_TYPE", type = "hidden" }):tag("value"):text(spec.form_type):up():up()
  local vars = {}
  for var in pairs(spec.fields or {}) do
    if type(var) ~= "string" or var == "FORM_TYPE" then error("bad field name in extension form: " .. tostring(var), 4) end
    vars[#vars + 1] = var
  end
  table.sort(vars)
  for _, var in ipairs(vars) do
    local v = spec.fields[var]
    local values = type(v) == "table" and v or { v }
    form:tag("field", { var = var, type = #values > 1 and "text-multi" or nil })
    for _, value in ipairs(values) do form:tag("value"):text(tostring(value)):up() end
    form:up()
  end
  return form
end

-- A validated XEP-0128 form element (a copy) from an element or a {form_type, fields} table.
local function extension_form(form)
  if type(form) ~= "table" then error("add_extension expects a jabber:x:data form element or a table", 3) end
  if not xml.is_element(form) then return build_form(form) end
  if form.name ~= "x" or form.ns ~= M.NS_DATA then
    error("add_extension expects an <x xmlns='jabber:x:data'/> element", 3)
  end
  local ft, ftype, values = form_type(form)
  if not ft then error("an extension form needs a FORM_TYPE field (XEP-0128)", 3) end
  if ftype ~= "hidden" then error("the FORM_TYPE field of an extension form must be of type 'hidden' (XEP-0115)", 3) end
  if #values > 1 then error("the FORM_TYPE field of an extension form must have one value", 3) end
  local copy = form:clone()
  copy.attr.type = copy.attr.type or "result"
  return copy
end

-------------------------------------------------------------------------------- parsing and building

--- parse_info(query) -> info: {identities = {{category, type, name, lang}}, features = {list and
-- set}, forms = {<x/> elements}, node}. Duplicates are kept in the lists as received (XEP-0115
-- verification needs to see them).
---@param query sacm.xml.Element a disco#info <query/>
---@return sacm.xmpp.disco.Info info
function M.parse_info(query)
  local info = { identities = {}, features = {}, forms = {}, node = query.attr.node }
  for child in query:children() do
    if child.ns == M.NS_INFO and child.name == "identity" then
      local a = child.attr
      if a.category and a.type then
        info.identities[#info.identities + 1] = { category = a.category, type = a.type, name = a.name, lang = a["xml:lang"] }
      end
    elseif child.ns == M.NS_INFO and child.name == "feature" then
      local var = child.attr.var
      if var then
        info.features[#info.features + 1] = var
        info.features[var] = true
      end
    elseif child.ns == M.NS_DATA and child.name == "x" then
      info.forms[#info.forms + 1] = child
    end
  end
  return info
end

--- info_query(info [, node]) -> a <query xmlns='disco#info'/> element describing info.
---@param info {identities?: sacm.xmpp.disco.Identity[], features?: string[]|table<string, boolean>, forms?: sacm.xml.Element[]}
---@param node? string
---@return sacm.xml.Element query
function M.info_query(info, node)
  local q = xml.element("query", { xmlns = M.NS_INFO, node = node })
  for _, id in ipairs(info.identities or {}) do
    q:tag("identity", { category = id.category, type = id.type, name = id.name, ["xml:lang"] = id.lang }):up()
  end
  for _, f in ipairs(feature_list(info.features)) do q:tag("feature", { var = f }):up() end
  for _, form in ipairs(info.forms or {}) do q:add(form) end
  return q
end

--- items_query(items [, node]) -> a <query xmlns='disco#items'/> element listing items.
---@param items? sacm.xmpp.disco.Item[]
---@param node? string
---@return sacm.xml.Element query
function M.items_query(items, node)
  local q = xml.element("query", { xmlns = M.NS_ITEMS, node = node })
  for _, item in ipairs(items or {}) do
    q:tag("item", { jid = item.jid, node = item.node, name = item.name }):up()
  end
  return q
end

-------------------------------------------------------------------------------- client

local function request(conn, ns, jid, node, timeout, what)
  if type(conn) ~= "table" or type(conn.iq) ~= "function" then error(what .. ": first argument must be a connection", 3) end
  check_string(jid, what .. ": jid", 3)
  if node ~= nil and type(node) ~= "string" then error(what .. ": node must be a string", 3) end
  if node == "" then node = nil end
  local iq = st.iq({ type = "get", to = jid }):tag("query", { xmlns = ns, node = node }):up()
  local reply, err = conn:iq(iq, timeout)
  if not reply then return nil, err end
  local query = reply:child("query", ns)
  if not query then
    return nil, errors.new("bad-format", ("%s answered %s without a <query xmlns='%s'/>"):format(jid, what, ns))
  end
  return query
end

--- info(conn, jid [, node [, timeout]]) -> info, or nil, err.
-- info.identities: list of {category=, type=, name=, lang=}; info.features: feature -> true and
-- the features in order (info.features[1], ...); info.forms: XEP-0128 <x/> elements; info.node.
-- err comes from conn:iq: item-not-found, service-unavailable, remote-server-timeout, ...
---@param conn sacm.xmpp.Connection
---@param jid string
---@param node? string
---@param timeout? number seconds
---@return sacm.xmpp.disco.Info? info
---@return sacm.Error? err
function M.info(conn, jid, node, timeout)
  local query, err = request(conn, M.NS_INFO, jid, node, timeout, "disco.info")
  if not query then return nil, err end
  local info = M.parse_info(query)
  info.node = info.node or node
  info.jid = jid
  return info
end

--- items(conn, jid [, node [, timeout]]) -> list of {jid=, node=, name=}, or nil, err.
---@param conn sacm.xmpp.Connection
---@param jid string
---@param node? string
---@param timeout? number seconds
---@return sacm.xmpp.disco.Item[]? items
---@return sacm.Error? err
function M.items(conn, jid, node, timeout)
  local query, err = request(conn, M.NS_ITEMS, jid, node, timeout, "disco.items")
  if not query then return nil, err end
  local items = {}
  for item in query:children("item", M.NS_ITEMS) do
    local a = item.attr
    if a.jid then
      items[#items + 1] = { jid = a.jid, node = a.node, name = a.name }
    else
      log.debug("disco#items from %s: an <item/> without jid was ignored", jid)
    end
  end
  return items
end

--- has_feature(info, feature) -> boolean
---@param info sacm.xmpp.disco.Info?
---@param feature string
---@return boolean
function M.has_feature(info, feature)
  if type(info) ~= "table" or type(info.features) ~= "table" then return false end
  if info.features[feature] == true then return true end
  for _, f in ipairs(info.features) do if f == feature then return true end end
  return false
end

-------------------------------------------------------------------------------- provider

---@class sacm.xmpp.disco.Identity
---@field category string
---@field type string
---@field name string?
---@field lang string?
---@class sacm.xmpp.disco.Item
---@field jid string
---@field node string?
---@field name string?
---@class sacm.xmpp.disco.Info what disco.info answers (parse_info)
---@field identities sacm.xmpp.disco.Identity[]
---@field features table the features in order ([1], [2], ...) and as a set (feature -> true)
---@field forms sacm.xml.Element[] XEP-0128 forms
---@field node string?
---@field jid string? who answered
---@class sacm.xmpp.disco.Provider what this connection answers to disco#info and disco#items (disco.provider)
---@field conn sacm.xmpp.Connection
local Provider = {}
Provider.__index = Provider
M.Provider = Provider

local providers = setmetatable({}, { __mode = "k" })

local ALWAYS = { [M.NS_INFO] = true, [M.NS_ITEMS] = true }

local function changed(self, what)
  for _, h in ipairs(self.watchers) do
    local ok, err = pcall(h.fn, self, what)
    if not ok then log.error("disco on_change callback failed: %s", errors.message(err)) end
  end
end

local function identity_key(category, type_, lang)
  return category .. "/" .. type_ .. "/" .. (lang or "")
end

--- provider:add_identity(category, type [, name [, lang]]). The first one replaces the default
-- identity (client/bot "sacmrun"). One identity per category/type/lang: adding again renames it.
---@param category string
---@param type_ string
---@param name? string
---@param lang? string
---@return sacm.xmpp.disco.Provider self
function Provider:add_identity(category, type_, name, lang)
  check_string(category, "identity category")
  check_string(type_, "identity type")
  if name ~= nil and type(name) ~= "string" then error("identity name must be a string", 2) end
  if lang ~= nil and type(lang) ~= "string" then error("identity lang must be a string", 2) end
  local key = identity_key(category, type_, lang)
  for _, id in ipairs(self.identities) do
    if identity_key(id.category, id.type, id.lang) == key then
      if id.name == name then return self end
      id.name = name
      changed(self, "identity")
      return self
    end
  end
  self.identities[#self.identities + 1] = { category = category, type = type_, name = name, lang = lang }
  changed(self, "identity")
  return self
end

--- provider:remove_identity(category, type [, lang]) -> boolean. With none left, the default
-- identity is answered again.
---@param category string
---@param type_ string
---@param lang? string
---@return boolean removed
function Provider:remove_identity(category, type_, lang)
  local key = identity_key(category, type_, lang)
  for i, id in ipairs(self.identities) do
    if identity_key(id.category, id.type, id.lang) == key then
      table.remove(self.identities, i)
      changed(self, "identity")
      return true
    end
  end
  return false
end

--- provider:add_feature(ns); provider:remove_feature(ns) -> boolean.
---@param ns string
---@return sacm.xmpp.disco.Provider self
function Provider:add_feature(ns)
  check_string(ns, "feature")
  if self.features[ns] then return self end
  self.features[ns] = true
  self.features[#self.features + 1] = ns
  changed(self, "feature")
  return self
end

---@param ns string
---@return boolean removed
function Provider:remove_feature(ns)
  check_string(ns, "feature")
  if ALWAYS[ns] then error(ns .. " is always advertised (XEP-0030)", 2) end
  if not self.features[ns] then return false end
  self.features[ns] = nil
  for i = #self.features, 1, -1 do
    if self.features[i] == ns then table.remove(self.features, i) end
  end
  changed(self, "feature")
  return true
end

---@param ns string
---@return boolean
function Provider:has_feature(ns)
  return self.features[ns] == true
end

--- provider:add_extension(form) -> self. A XEP-0128 form: a jabber:x:data element with a hidden
-- FORM_TYPE field, or {form_type = "urn:...", fields = {var = value | {values}}}. A form with the
-- same FORM_TYPE is replaced (XEP-0115 forbids two).
---@param form sacm.xml.Element|{form_type: string, fields?: table<string, string|string[]>}
---@return sacm.xmpp.disco.Provider self
function Provider:add_extension(form)
  local copy = extension_form(form)
  local ft = form_type(copy)
  for i, f in ipairs(self.forms) do
    if form_type(f) == ft then
      if xml.equal(f, copy) then return self end
      self.forms[i] = copy
      changed(self, "extension")
      return self
    end
  end
  self.forms[#self.forms + 1] = copy
  changed(self, "extension")
  return self
end

--- provider:remove_extension(form_type) -> boolean
---@param ft string the FORM_TYPE
---@return boolean removed
function Provider:remove_extension(ft)
  for i, f in ipairs(self.forms) do
    if form_type(f) == ft then
      table.remove(self.forms, i)
      changed(self, "extension")
      return true
    end
  end
  return false
end

--- provider:add_item({jid=, node=, name=}) / provider:remove_item(jid [, node]): the entity's own
-- disco#items (without a node). jid defaults to the connection's JID.
---@param item {jid?: string, node?: string, name?: string}
---@return sacm.xmpp.disco.Provider self
function Provider:add_item(item)
  if type(item) ~= "table" then error("add_item expects {jid=, node=, name=}", 2) end
  local jid = item.jid or self.conn.jid
  check_string(jid, "item jid")
  self:remove_item(jid, item.node)
  self.items[#self.items + 1] = { jid = jid, node = item.node, name = item.name }
  return self
end

---@param jid string
---@param node? string
---@return boolean removed
function Provider:remove_item(jid, node)
  for i = #self.items, 1, -1 do
    local it = self.items[i]
    if it.jid == jid and it.node == node then
      table.remove(self.items, i)
      return true
    end
  end
  return false
end

--- provider:add_node(node, spec) -> self. spec: name=, info = table | function(request, provider)
-- returning {identities=, features=, forms=} (or nil, err), items = table | function(request,
-- provider) returning a list of {jid=, node=, name=} (jid defaults to ours) or nil, err. Functions
-- run in the iq handler's task and may wait. Without info, the node answers a hierarchy identity
-- (branch with items, leaf without) and the disco features.
---@param node string
---@param spec {name?: string, info?: table|(fun(request: sacm.xml.Element, provider: sacm.xmpp.disco.Provider): table?, sacm.Error?), items?: table|(fun(request: sacm.xml.Element, provider: sacm.xmpp.disco.Provider): table?, sacm.Error?)}
---@return sacm.xmpp.disco.Provider self
function Provider:add_node(node, spec)
  check_string(node, "node")
  if type(spec) ~= "table" then error("add_node expects a spec table", 2) end
  for _, k in ipairs({ "info", "items" }) do
    local v = spec[k]
    if v ~= nil and type(v) ~= "table" and type(v) ~= "function" then
      error(("node %s: %s must be a table or a function"):format(k, k), 2)
    end
  end
  self.nodes[node] = { name = spec.name, info = spec.info, items = spec.items }
  return self
end

--- provider:add_alias(node): node answers exactly what the entity itself answers (XEP-0115's
-- node#ver).
---@param node string
---@return sacm.xmpp.disco.Provider self
function Provider:add_alias(node)
  check_string(node, "node")
  self.nodes[node] = { alias = true }
  return self
end

--- provider:remove_node(node) -> boolean (also removes aliases)
---@param node string
---@return boolean removed
function Provider:remove_node(node)
  local had = self.nodes[node] ~= nil
  self.nodes[node] = nil
  return had
end

---@param node string
---@return boolean
function Provider:has_node(node)
  return self.nodes[node] ~= nil
end

--- provider:set_access(fn): fn(from, node, kind) decides who may ask ("info" or "items"); a false
-- or nil answer gets service-unavailable, as if nothing were there. nil removes the check.
---@param fn? fun(from: string, node: string?, kind: "info"|"items"): boolean? nil removes the check
---@return sacm.xmpp.disco.Provider self
function Provider:set_access(fn)
  if fn ~= nil and type(fn) ~= "function" then error("set_access expects a function or nil", 2) end
  self.access = fn
  return self
end

--- provider:on_change(fn) -> handle with :remove(). fn(provider, what) runs (synchronously)
-- after the entity's own answer changed: what is "identity", "feature" or "extension". Node
-- changes do not count (they do not change an XEP-0115 ver).
---@param fn fun(provider: sacm.xmpp.disco.Provider, what: "identity"|"feature"|"extension")
---@return sacm.xmpp.Handler handle
function Provider:on_change(fn)
  if type(fn) ~= "function" then error("on_change expects a function", 2) end
  return handlers.add(self.watchers, { fn = fn })
end

--- provider:info() -> the entity's own info {identities, features, forms} (copies).
---@return {identities: sacm.xmpp.disco.Identity[], features: string[], forms: sacm.xml.Element[]} info copies
function Provider:info()
  local ids = {}
  local source = #self.identities > 0 and self.identities or { M.DEFAULT_IDENTITY }
  for i, id in ipairs(source) do ids[i] = { category = id.category, type = id.type, name = id.name, lang = id.lang } end
  local features = {}
  for i, f in ipairs(self.features) do features[i] = f; features[f] = true end
  local forms = {}
  for i, f in ipairs(self.forms) do forms[i] = f end
  return { identities = ids, features = features, forms = forms }
end

-- A node's info as a table, from its spec; nil, err on failure.
local function node_info(self, spec, node, request)
  local info = spec.info
  if type(info) == "function" then
    local result, err = info(request, self)
    if result == nil then return nil, err or errors.new("item-not-found", "no such node: " .. node) end
    info = result
  end
  if info == nil then
    local features = { M.NS_INFO }
    if spec.items then features[2] = M.NS_ITEMS end
    return {
      identities = { { category = "hierarchy", type = spec.items and "branch" or "leaf", name = spec.name } },
      features = features,
    }
  end
  if type(info) ~= "table" then error("node " .. node .. ": info returned a " .. type(info)) end
  return info
end

local function node_items(self, spec, node, request)
  local items = spec.items
  if type(items) == "function" then
    local result, err = items(request, self)
    if result == nil then return nil, err or errors.new("item-not-found", "no such node: " .. node) end
    items = result
  end
  local out = {}
  for i, item in ipairs(items or {}) do
    out[i] = { jid = item.jid or self.conn.jid, node = item.node, name = item.name }
  end
  return out
end

local function lookup(self, request, kind)
  local query = request:child("query")
  local node = query and query.attr.node
  if node == "" then node = nil end
  self.stats[kind] = self.stats[kind] + 1
  if self.access and not self.access(request.attr.from, node, kind) then
    return nil, nil, errors.new("service-unavailable")
  end
  if node == nil then return node, { root = true } end
  local spec = self.nodes[node]
  if not spec then return nil, nil, errors.new("item-not-found", "no such node: " .. node) end
  if spec.alias then return node, { root = true } end
  return node, spec
end

local function answer_info(self, request)
  local node, spec, err = lookup(self, request, "info")
  if not spec then return nil, err end
  if spec.root then return M.info_query(self:info(), node) end
  local info, e = node_info(self, spec, node, request)
  if not info then return nil, e end
  return M.info_query(info, node)
end

local function answer_items(self, request)
  local node, spec, err = lookup(self, request, "items")
  if not spec then return nil, err end
  if spec.root then return M.items_query(self.items, node) end
  local items, e = node_items(self, spec, node, request)
  if not items then return nil, e end
  return M.items_query(items, node)
end

--- provider(conn) -> the connection's provider, created (and its iq handlers installed) on first use.
---@param conn sacm.xmpp.Connection
---@return sacm.xmpp.disco.Provider
function M.provider(conn)
  if type(conn) ~= "table" or type(conn.on) ~= "function" then error("disco.provider: expects a connection", 2) end
  local self = providers[conn]
  if self then return self end
  self = setmetatable({
    conn = conn,
    identities = {},
    features = {},
    forms = {},
    items = {},
    nodes = {},
    watchers = {},
    stats = { info = 0, items = 0 },
  }, Provider)
  for _, f in ipairs({ M.NS_INFO, M.NS_ITEMS, M.NS_PING }) do
    self.features[#self.features + 1] = f
    self.features[f] = true
  end
  self.handlers = {
    conn:on("iq", { type = "get", ns = M.NS_INFO, child = "query" }, function(s) return answer_info(self, s) end),
    conn:on("iq", { type = "get", ns = M.NS_ITEMS, child = "query" }, function(s) return answer_items(self, s) end),
  }
  providers[conn] = self
  return self
end

--- provider:close(): removes the iq handlers (requests then get service-unavailable) and forgets
-- the provider; disco.provider(conn) makes a fresh one.
---(no parameters, no results)
function Provider:close()
  for _, h in ipairs(self.handlers) do h.remove() end
  self.handlers = {}
  if providers[self.conn] == self then providers[self.conn] = nil end
end

--- existing(conn) -> the connection's provider if one was made, else nil.
---@param conn sacm.xmpp.Connection
---@return sacm.xmpp.disco.Provider? provider
function M.existing(conn)
  return providers[conn]
end

function Provider:__tostring()
  return ("disco provider for %s"):format(tostring(self.conn and self.conn.jid))
end

return M
