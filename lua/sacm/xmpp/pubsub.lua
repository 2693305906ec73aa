--- sacm.xmpp.pubsub: XEP-0060 Publish-Subscribe client for playbooks.
--
--   local pubsub = require "sacm.xmpp.pubsub"
--   local svc = pubsub.service(conn, "pubsub.grid.example")
--   assert(svc:create("posture", { access_model = "whitelist", max_items = 10 }))
--   local id = assert(svc:publish("posture", nil, report))
--   for ev in svc:events("posture") do print(ev.type, ev.items[1].id) end
--
-- Every request waits for the service's answer (it yields the running task) and returns a value,
-- or nil, err on an expected failure. err.condition is the stanza error condition (RFC 6120:
-- item-not-found, forbidden, conflict, ...); where the service adds a condition from
-- http://jabber.org/protocol/pubsub#errors it is err.pubsub_condition (invalid-jid,
-- precondition-not-met, ...), with err.feature for <unsupported feature='...'/>.
-- Bad arguments raise. Notifications are only accepted from the service's own JID.
-- See docs/api/pubsub.md.
local xml = require "sacm.xml"
local st = require "sacm.xmpp.stanza"
local jidlib = require "sacm.xmpp.jid"
local errors = require "sacm.error"
local task = require "sacm.task"
local sync = require "sacm.sync"
local forms = require "sacm.xmpp.forms"

local element_in = xml._element_in
local Element = require("sacm._xml").metatable

local M = {}

M.NS = "http://jabber.org/protocol/pubsub"
M.NS_OWNER = "http://jabber.org/protocol/pubsub#owner"
M.NS_EVENT = "http://jabber.org/protocol/pubsub#event"
M.NS_ERRORS = "http://jabber.org/protocol/pubsub#errors"
M.NS_DATA = "jabber:x:data"
M.NS_SHIM = "http://jabber.org/protocol/shim"
M.NS_DELAY = "urn:xmpp:delay"
M.NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
M.FORM_NODE_CONFIG = "http://jabber.org/protocol/pubsub#node_config"
M.FORM_PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
M.FORM_SUBSCRIBE_OPTIONS = "http://jabber.org/protocol/pubsub#subscribe_options"

--- The logger this module writes to (area "pubsub"). Rejected notifications are logged as warnings.
M.log = require("sacm.log").new("pubsub")

M.EVENTS_LIMIT = 10000 -- default bound of service:events() queues

---------------------------------------------------------------------------- data forms (XEP-0004)
-- Node configuration, subscribe options and publish-options travel as data forms whose fields are
-- XEP-0060's registered pubsub#... names. Lua callers use the short names ({max_items = 10}).

-- Types of the registered fields, for forms that omit <field type=...> (submit and result forms may).
local FIELD_HINTS = { fields = {} }
for _, name in ipairs { "deliver_notifications", "deliver_payloads", "notify_config", "notify_delete",
  "notify_retract", "notify_sub", "persist_items", "presence_based_delivery", "purge_offline",
  "subscribe", "include_body", "deliver", "digest" } do
  FIELD_HINTS.fields[#FIELD_HINTS.fields + 1] = { var = "pubsub#" .. name, type = "boolean" }
end
for _, name in ipairs { "max_items", "max_payload_size", "item_expire", "digest_frequency" } do
  FIELD_HINTS.fields[#FIELD_HINTS.fields + 1] = { var = "pubsub#" .. name, datatype = "pubsub:integer-or-max" }
end

-- "access_model" -> "pubsub#access_model"; names that already carry a namespace stay as they are.
local function field_var(key)
  if type(key) ~= "string" or key == "" then
    error("form field names must be non-empty strings, got " .. tostring(key), 4)
  end
  if key == "FORM_TYPE" or key:find("[#:/]") then return key end
  return "pubsub#" .. key
end

local function short_name(var)
  return var:match("^pubsub#(.+)$") or var
end

-- submit_form(form_type, values) -> <x xmlns='jabber:x:data' type='submit'> with FORM_TYPE first
-- and the other fields in sorted order (deterministic output).
---@param form_type string
---@param values? table<string, any> short names (max_items) or full vars
---@return sacm.xml.Element x type='submit'
local function submit_form(form_type, values)
  if values ~= nil and type(values) ~= "table" then error("options must be a table", 3) end
  local fields, by_var = {}, {}
  for key, v in pairs(values or {}) do
    local var = field_var(key)
    if var ~= "FORM_TYPE" then
      if by_var[var] ~= nil then error("form field " .. var .. " given twice", 3) end
      by_var[var] = v
      fields[#fields + 1] = { var = var }
    end
  end
  table.sort(fields, function(a, b) return a.var < b.var end)
  local ok, x = pcall(forms.submit, { form_type = form_type, fields = fields }, by_var)
  if not ok then error(x, 3) end
  return x
end

--- parse_form(x) -> the sacm.xmpp.forms view of a pubsub form, the registered fields typed even when
-- the element leaves them untyped (booleans as booleans, max_items and friends as integers).
---@param x sacm.xml.Element a pubsub data form
---@return sacm.xmpp.forms.Form? form
---@return sacm.Error? err
local function parse_form(x)
  return forms.parse(x, FIELD_HINTS)
end

-- A form's values keyed by short name (pubsub#max_items -> max_items).
local function form_config(form)
  local config = {}
  for var, v in pairs(form.values) do config[short_name(var)] = v end
  return config
end

M.submit_form = submit_form
M.parse_form = parse_form

---------------------------------------------------------------------------- errors

-- Adds the pubsub#errors condition (and what was being done) to an error from conn:iq.
local function request_error(err, what, svc)
  if not errors.is(err) then
    return errors.new("undefined-condition", what .. ": " .. errors.message(err))
  end
  local text = err.text
  local e = err.stanza and err.stanza:child("error")
  if not e then
    -- not an error reply (timeout, connection lost): say what was being done
    err.text = ("%s at %s: %s"):format(what, svc.jid, text or "failed")
    return err
  end
  -- stanza.to_error's stand-in when the service sent no <text/>
  if text == "error reply from " .. tostring(err.stanza.attr.from or "the server") then text = nil end
  local detail = {}
  for child in e:children(nil, M.NS_ERRORS) do
    err.pubsub_condition = child.name
    err.feature = child.attr.feature
    detail[#detail + 1] = child.name .. (child.attr.feature and (" " .. child.attr.feature) or "")
    break
  end
  if text then detail[#detail + 1] = text end
  err.text = ("%s at %s refused%s"):format(what, svc.jid,
    #detail > 0 and (": " .. table.concat(detail, ": ")) or "")
  return err
end

local function malformed(what, svc, text)
  return errors.new("undefined-condition", ("%s at %s: %s"):format(what, svc.jid, text))
end

---------------------------------------------------------------------------- the service

local Service = {}
Service.__index = Service
Service.__fields = { jid = true, conn = true, timeout = true }
M.Service = Service

--- pubsub.service(conn, jid [, opts]) -> service. jid is the pubsub service (e.g. "pubsub.grid.example").
-- opts.timeout: seconds to wait for each answer (default: the connection's request timeout).
-- opts.resend: true sends idempotent requests (reads, publish with an id, configure, subscribe,
-- purge, set_affiliations) again after a reconnect instead of failing with connection-lost.
---@param conn sacm.xmpp.Connection
---@param jid string the pubsub service
---@param opts? {timeout?: number, resend?: boolean}
---@return sacm.xmpp.pubsub.Service
function M.service(conn, jid, opts)
  if type(conn) ~= "table" or type(conn.iq) ~= "function" or type(conn.on) ~= "function" then
    error("pubsub.service expects an xmpp connection", 2)
  end
  local normal = jidlib.normalize(jid)
  if not normal then error("pubsub.service: not a valid JID: " .. tostring(jid), 2) end
  if opts ~= nil and type(opts) ~= "table" then error("pubsub.service: opts must be a table", 2) end
  opts = opts or {}
  return setmetatable({ conn = conn, jid = normal, timeout = opts.timeout, resend = opts.resend and true or false },
    Service)
end

function Service:__tostring()
  return "pubsub service " .. self.jid
end

local function check_node(node, level)
  if type(node) ~= "string" or node == "" then
    error("node must be a non-empty string, got " .. tostring(node), (level or 2) + 1)
  end
end

-- A request skeleton: <iq type to><pubsub xmlns=ns><child attr/></pubsub></iq>, cursor at <pubsub>.
local function request(self, iqtype, ns, child, attr)
  return st.iq({ type = iqtype, to = self.jid })
    :tag("pubsub", { xmlns = ns }):tag(child, attr):up()
end

-- idempotent: the request may be sent again after a reconnect (when the service allows it).
-- what says what was being done, for the error; with further arguments it is a format for them,
-- applied only when there is an error (publish is on the hot path).
local function send(self, iq, what, idempotent, ...)
  local conn = self.conn
  -- (conn._request where the connection has it: iq() without an options table per request)
  local reply, err
  if conn._request then
    reply, err = conn:_request(iq, self.timeout, idempotent and self.resend or nil)
  else
    reply, err = conn:iq(iq, { timeout = self.timeout, resend = idempotent and self.resend or nil })
  end
  if not reply then
    if select("#", ...) > 0 then what = what:format(...) end
    return nil, request_error(err, what, self)
  end
  return reply
end

-- The reply's <pubsub xmlns=ns><name> element, or nil.
local function reply_child(reply, ns, name)
  local ps = reply:child("pubsub", ns)
  return ps and ps:child(name, ns)
end

--- svc:create(node [, config]) -> node name, or nil, err. node nil asks for an instant node (the
-- service picks the name). config: node options {access_model = "whitelist", max_items = 10, ...}.
---@param node? string nil: an instant node
---@param config? table<string, any> node options by short name
---@return string? node the node's name
---@return sacm.Error? err
function Service:create(node, config)
  if node ~= nil then check_node(node) end
  local iq = request(self, "set", M.NS, "create", { node = node })
  if config ~= nil then
    if type(config) ~= "table" then error("config must be a table", 2) end
    iq:tag("configure"):add(submit_form(M.FORM_NODE_CONFIG, config)):up()
  end
  local what = ("create node '%s'"):format(node or "(instant)")
  local reply, err = send(self, iq, what)
  if not reply then return nil, err end
  local created = reply_child(reply, M.NS, "create")
  local name = created and created.attr.node or node
  if not name then return nil, malformed(what, self, "the service created a node but did not name it") end
  return name
end

--- svc:get_config(node) -> config (short names: {access_model = "open", max_items = 10, ...}), form;
-- or nil, err. form is the parsed XEP-0004 form (fields with labels, types and options).
---@param node string
---@return table<string, any>? config short names
---@return sacm.xmpp.forms.Form|sacm.Error form, or err
function Service:get_config(node)
  check_node(node)
  local what = ("get configuration of node '%s'"):format(node)
  local reply, err = send(self, request(self, "get", M.NS_OWNER, "configure", { node = node }), what, true)
  if not reply then return nil, err end
  local configure = reply_child(reply, M.NS_OWNER, "configure")
  local x = configure and configure:child("x", M.NS_DATA)
  if not x then return nil, malformed(what, self, "the reply holds no configuration form") end
  local form = parse_form(x)
  return form_config(form), form
end

--- svc:default_config() -> the service's default node configuration (as get_config), or nil, err.
---@return table<string, any>? config short names
---@return sacm.xmpp.forms.Form|sacm.Error form, or err
function Service:default_config()
  local what = "get the default node configuration"
  local reply, err = send(self, request(self, "get", M.NS_OWNER, "default", nil), what, true)
  if not reply then return nil, err end
  local default = reply_child(reply, M.NS_OWNER, "default")
  local x = default and default:child("x", M.NS_DATA)
  if not x then return nil, malformed(what, self, "the reply holds no configuration form") end
  local form = parse_form(x)
  return form_config(form), form
end

--- svc:configure(node, config) -> true, or nil, err. Only the options given change.
---@param node string
---@param config table<string, any> the options to change
---@return true? ok
---@return sacm.Error? err
function Service:configure(node, config)
  check_node(node)
  if type(config) ~= "table" then error("config must be a table", 2) end
  local iq = request(self, "set", M.NS_OWNER, "configure", { node = node })
  iq:child("pubsub"):child("configure"):add(submit_form(M.FORM_NODE_CONFIG, config))
  local reply, err = send(self, iq, ("configure node '%s'"):format(node), true)
  if not reply then return nil, err end
  return true
end

--- svc:delete(node [, redirect_uri]) -> true, or nil, err. Subscribers are notified.
---@param node string
---@param redirect? string a URI for the subscribers
---@return true? ok
---@return sacm.Error? err
function Service:delete(node, redirect)
  check_node(node)
  local iq = request(self, "set", M.NS_OWNER, "delete", { node = node })
  if redirect ~= nil then
    if type(redirect) ~= "string" then error("redirect must be a URI string", 2) end
    iq:child("pubsub"):child("delete"):tag("redirect", { uri = redirect }):up()
  end
  local reply, err = send(self, iq, ("delete node '%s'"):format(node))
  if not reply then return nil, err end
  return true
end

--- svc:purge(node) -> true, or nil, err. Removes every item; subscribers get a purge notification.
---@param node string
---@return true? ok
---@return sacm.Error? err
function Service:purge(node)
  check_node(node)
  local reply, err = send(self, request(self, "set", M.NS_OWNER, "purge", { node = node }),
    ("purge node '%s'"):format(node), true)
  if not reply then return nil, err end
  return true
end

local function subscription_of(el, node, jid)
  return {
    node = el.attr.node or node,
    jid = el.attr.jid or jid,
    subid = el.attr.subid,
    state = el.attr.subscription or "subscribed",
  }
end

--- svc:subscribe(node [, options [, jid]]) -> subscription {node, jid, subid, state}, or nil, err.
-- jid defaults to the connection's full JID (notifications reach this connection whether or not it
-- sent presence). options: subscribe options {deliver = true, include_body = false, ...}.
-- state is "subscribed", "pending" (the owner must approve) or "unconfigured"; options_required is
-- true when the service wants options before it delivers.
---@param node string
---@param options? table<string, any> subscribe options
---@param jid? string default: the connection's full JID
---@return sacm.xmpp.pubsub.Subscription? subscription
---@return sacm.Error? err
function Service:subscribe(node, options, jid)
  check_node(node)
  jid = jid or self.conn.jid
  if type(jid) ~= "string" then error("subscribe needs a jid (the connection has none yet)", 2) end
  local iq = request(self, "set", M.NS, "subscribe", { node = node, jid = jid })
  if options ~= nil then
    if type(options) ~= "table" then error("options must be a table", 2) end
    iq:tag("options", { node = node, jid = jid }):add(submit_form(M.FORM_SUBSCRIBE_OPTIONS, options)):up()
  end
  local reply, err = send(self, iq, ("subscribe %s to node '%s'"):format(jid, node), true)
  if not reply then return nil, err end
  local ps = reply:child("pubsub", M.NS)
  local el = ps and ps:child("subscription", M.NS)
  local sub = el and subscription_of(el, node, jid) or { node = node, jid = jid, state = "subscribed" }
  local so = el and el:child("subscribe-options", M.NS)
  if so and so:child("required", M.NS) then sub.options_required = true end
  return sub
end

--- svc:unsubscribe(node [, subid [, jid]]) -> true, or nil, err.
---@param node string
---@param subid? string
---@param jid? string
---@return true? ok
---@return sacm.Error? err
function Service:unsubscribe(node, subid, jid)
  check_node(node)
  jid = jid or self.conn.jid
  if type(jid) ~= "string" then error("unsubscribe needs a jid (the connection has none yet)", 2) end
  if subid ~= nil and type(subid) ~= "string" then error("subid must be a string", 2) end
  local reply, err = send(self, request(self, "set", M.NS, "unsubscribe", { node = node, jid = jid, subid = subid }),
    ("unsubscribe %s from node '%s'"):format(jid, node))
  if not reply then return nil, err end
  return true
end

--- svc:publish(node, id, payload [, publish_options]) -> item id, or nil, err.
-- id nil: the service assigns one and it is returned. payload: an element (or nil for an item
-- without payload). publish_options: node options the node must have ({access_model = "whitelist"}),
-- else the publish fails with conflict / pubsub_condition precondition-not-met.
---@param node string
---@param id? string nil: the service assigns one
---@param payload? sacm.xml.Element
---@param publish_options? table<string, any> node options the node must have
---@return string? id the item's id
---@return sacm.Error? err
function Service:publish(node, id, payload, publish_options)
  check_node(node)
  if id ~= nil and (type(id) ~= "string" or id == "") then error("item id must be a non-empty string or nil", 2) end
  if payload ~= nil and not xml.is_element(payload) then
    error("payload must be an element (sacm.xml), got " .. type(payload), 2)
  end
  -- Built as element tables directly (not with tag()/up() or element()'s checked copy of each
  -- attribute table): this runs for every item published, and every value here is a checked
  -- string already.
  local ps = setmetatable({ name = "pubsub", ns = M.NS, attr = {},
    setmetatable({ name = "publish", ns = M.NS, attr = { node = node },
      setmetatable({ name = "item", ns = M.NS, attr = { id = id }, payload }, Element) }, Element) }, Element)
  if publish_options ~= nil then
    if type(publish_options) ~= "table" then error("publish_options must be a table", 2) end
    ps[2] = element_in("publish-options", nil, M.NS):add(submit_form(M.FORM_PUBLISH_OPTIONS, publish_options))
  end
  local iq = setmetatable({ name = "iq", ns = st.NS_CLIENT, attr = { type = "set", to = self.jid }, ps }, Element)
  local reply, err = send(self, iq, "publish to node '%s'", id ~= nil, node)
  if not reply then return nil, err end
  local published = reply_child(reply, M.NS, "publish")
  local item = published and published:child("item", M.NS)
  -- XEP-0060 7.1.2: the result may be empty when the publisher chose the id
  local got = item and item.attr.id or id
  if not got then
    return nil, malformed(("publish to node '%s'"):format(node), self,
      "the service accepted the item but did not say which id it gave it")
  end
  return got
end

--- svc:retract(node, id [, notify]) -> true, or nil, err. notify = true asks the service to notify
-- subscribers (Prosody notifies only when asked).
---@param node string
---@param id string
---@param notify? boolean ask the service to notify subscribers
---@return true? ok
---@return sacm.Error? err
function Service:retract(node, id, notify)
  check_node(node)
  if type(id) ~= "string" or id == "" then error("item id must be a non-empty string", 2) end
  local iq = request(self, "set", M.NS, "retract", { node = node, notify = notify and "true" or nil })
  iq:child("pubsub"):child("retract"):tag("item", { id = id }):up()
  local reply, err = send(self, iq, ("retract item '%s' from node '%s'"):format(id, node))
  if not reply then return nil, err end
  return true
end

-- (index loops rather than el:children(): this runs for every notification)
local function item_of(el)
  local payload
  for i = 1, #el do
    local c = el[i]
    if type(c) == "table" then payload = c break end
  end
  return { id = el.attr.id, payload = payload, publisher = el.attr.publisher }
end

--- svc:items(node [, {max = N} | {ids = {...}}]) -> list of {id, payload, publisher}, or nil, err.
-- Without options: every item the node keeps. max: the latest N. ids: those items (missing ones
-- are left out). The list is in the service's order (Prosody: oldest first).
---@param node string
---@param opts? {max?: integer, ids?: string[]}
---@return sacm.xmpp.pubsub.Item[]? items
---@return sacm.Error? err
function Service:items(node, opts)
  check_node(node)
  if opts ~= nil and type(opts) ~= "table" then error("items options must be a table", 2) end
  opts = opts or {}
  local max = opts.max
  if max ~= nil and (math.type(max) ~= "integer" or max < 1) then error("max must be a positive integer", 2) end
  local iq = request(self, "get", M.NS, "items", { node = node, max_items = max })
  if opts.ids then
    if type(opts.ids) ~= "table" then error("ids must be a list of item ids", 2) end
    local items = iq:child("pubsub"):child("items")
    for _, id in ipairs(opts.ids) do
      if type(id) ~= "string" then error("ids must be strings", 2) end
      items:add(xml.element("item", { xmlns = M.NS, id = id }))
    end
  end
  local reply, err = send(self, iq, ("get items of node '%s'"):format(node), true)
  if not reply then return nil, err end
  local list = {}
  local items = reply_child(reply, M.NS, "items")
  if items then
    for el in items:children("item", M.NS) do list[#list + 1] = item_of(el) end
  end
  return list
end

--- svc:subscriptions([node]) -> list of {node, jid, subid, state} for this account, or nil, err.
---@param node? string
---@return sacm.xmpp.pubsub.Subscription[]? subscriptions
---@return sacm.Error? err
function Service:subscriptions(node)
  if node ~= nil then check_node(node) end
  local reply, err = send(self, request(self, "get", M.NS, "subscriptions", { node = node }),
    "list subscriptions", true)
  if not reply then return nil, err end
  local list = {}
  local subs = reply_child(reply, M.NS, "subscriptions")
  if subs then
    for el in subs:children("subscription", M.NS) do list[#list + 1] = subscription_of(el, node) end
  end
  return list
end

--- svc:node_subscriptions(node) -> list of {node, jid, subid, state} of every subscriber (owner), or nil, err.
---@param node string
---@return sacm.xmpp.pubsub.Subscription[]? subscriptions
---@return sacm.Error? err
function Service:node_subscriptions(node)
  check_node(node)
  local reply, err = send(self, request(self, "get", M.NS_OWNER, "subscriptions", { node = node }),
    ("list subscribers of node '%s'"):format(node), true)
  if not reply then return nil, err end
  local list = {}
  local subs = reply_child(reply, M.NS_OWNER, "subscriptions")
  if subs then
    for el in subs:children("subscription", M.NS_OWNER) do list[#list + 1] = subscription_of(el, node) end
  end
  return list
end

--- svc:affiliations([node]) -> list of {node, affiliation} for this account (XEP-0060 5.7), or nil, err.
-- Prosody 0.12 does not implement this request (service-unavailable); node_affiliations does.
---@param node? string
---@return {node: string, affiliation: string}[]? affiliations
---@return sacm.Error? err
function Service:affiliations(node)
  if node ~= nil then check_node(node) end
  local reply, err = send(self, request(self, "get", M.NS, "affiliations", { node = node }),
    "list affiliations", true)
  if not reply then return nil, err end
  local list = {}
  local affs = reply_child(reply, M.NS, "affiliations")
  if affs then
    for el in affs:children("affiliation", M.NS) do
      list[#list + 1] = { node = el.attr.node or node, affiliation = el.attr.affiliation }
    end
  end
  return list
end

--- svc:node_affiliations(node) -> list of {jid, affiliation} (owner, XEP-0060 8.9.1), sorted by
-- JID, or nil, err. An entry without a jid or affiliation makes the reply malformed (an error):
-- dropping it could hide an owner.
---@param node string
---@return {jid: string, affiliation: string}[]? affiliations sorted by JID
---@return sacm.Error? err
function Service:node_affiliations(node)
  check_node(node)
  local what = ("list affiliations of node '%s'"):format(node)
  local reply, err = send(self, request(self, "get", M.NS_OWNER, "affiliations", { node = node }), what, true)
  if not reply then return nil, err end
  local list = {}
  local affs = reply_child(reply, M.NS_OWNER, "affiliations")
  if affs then
    for el in affs:children("affiliation", M.NS_OWNER) do
      local jid, aff = el.attr.jid, el.attr.affiliation
      if not jid or not aff then
        return nil, malformed(what, self, "the reply has an <affiliation/> without jid or affiliation")
      end
      list[#list + 1] = { jid = jidlib.normalize(jid) or jid, affiliation = aff }
    end
  end
  table.sort(list, function(a, b) return a.jid < b.jid end)
  return list
end

--- The affiliations XEP-0060 defines (4.1); "none" removes one.
M.AFFILIATIONS = { owner = true, publisher = true, ["publish-only"] = true, member = true, outcast = true, none = true }

-- The changes of set_affiliations as a list of {jid, affiliation}, checked and sorted by JID.
local function affiliation_changes(changes)
  local usage = "set_affiliations expects {[jid] = affiliation} or {{jid = ..., affiliation = ...}, ...}"
  if type(changes) ~= "table" then error(usage, 3) end
  local list, seen = {}, {}
  local function add(jid, aff)
    if type(jid) ~= "string" or type(aff) ~= "string" then error(usage, 4) end
    local normal = jidlib.normalize(jid)
    if not normal then error("set_affiliations: not a valid JID: " .. jid, 4) end
    if jidlib.resource(normal) then
      error(("set_affiliations: %s is a full JID; affiliations belong to bare JIDs (%s)"):format(jid,
        jidlib.bare(normal)), 4)
    end
    if not M.AFFILIATIONS[aff] then
      error(("set_affiliations: '%s' (for %s) is not an affiliation; use owner, publisher, publish-only, "
        .. "member, outcast or none"):format(aff, jid), 4)
    end
    if seen[normal] then error("set_affiliations: " .. normal .. " is given twice", 4) end
    seen[normal] = true
    list[#list + 1] = { jid = normal, affiliation = aff }
  end
  local n = #changes
  if n > 0 then
    -- a list with string keys as well mixes the two forms: a mistake, not something to merge
    for k in pairs(changes) do
      if math.type(k) ~= "integer" or k < 1 or k > n then error(usage .. ", not both", 3) end
    end
    for i, c in ipairs(changes) do
      if type(c) ~= "table" then error(("%s (entry %d is a %s)"):format(usage, i, type(c)), 3) end
      add(c.jid, c.affiliation)
    end
  else
    for jid, aff in pairs(changes) do add(jid, aff) end
  end
  table.sort(list, function(a, b) return a.jid < b.jid end)
  return list
end

--- svc:set_affiliations(node, changes) -> true, or nil, err (owner, XEP-0060 8.9.2).
-- changes: {[jid] = affiliation} or a list {{jid = ..., affiliation = ...}, ...}; affiliation is
-- "owner", "publisher", "publish-only", "member", "outcast" or "none" (removes). JIDs are bare.
-- All changes go in one request, which the service applies or refuses as a whole. An empty
-- change sends nothing. Bad arguments raise, and so does a change of this account's own
-- affiliation to anything but owner: from an owner, Prosody 0.12 applies it and the account
-- (even an admin of the service) can no longer manage the node (ejabberd ignores it); from
-- anyone else it could only be refused.
---@param node string
---@param changes table<string, string>|{jid: string, affiliation: string}[] bare JID -> affiliation
---@return true? ok
---@return sacm.Error? err
function Service:set_affiliations(node, changes)
  check_node(node)
  local list = affiliation_changes(changes)
  if #list == 0 then return true end
  local me = self.conn.jid and jidlib.bare(self.conn.jid) -- normalized
  for _, c in ipairs(list) do
    if c.jid == me and c.affiliation ~= "owner" then
      error(("set_affiliations: refusing to make %s, the account sending the request, '%s' of node '%s': "
        .. "an owner doing that on Prosody 0.12 can no longer manage the node, and no account gains a "
        .. "right by affiliating itself; change this account's affiliation from another owner"):format(c.jid,
        c.affiliation, node), 2)
    end
  end
  local iq = request(self, "set", M.NS_OWNER, "affiliations", { node = node })
  local affs = iq:child("pubsub"):child("affiliations")
  for _, c in ipairs(list) do
    affs:add(xml.element("affiliation", { xmlns = M.NS_OWNER, jid = c.jid, affiliation = c.affiliation }))
  end
  local reply, err = send(self, iq, ("set affiliations of node '%s'"):format(node), true)
  if not reply then return nil, err end
  return true
end

--- svc:nodes() -> list of node names the service lists (disco#items), or nil, err.
---@return string[]? nodes
---@return sacm.Error? err
function Service:nodes()
  local iq = st.iq({ type = "get", to = self.jid }):tag("query", { xmlns = M.NS_DISCO_ITEMS }):up()
  local reply, err = send(self, iq, "list nodes", true)
  if not reply then return nil, err end
  local list = {}
  local q = reply:child("query", M.NS_DISCO_ITEMS)
  if q then
    for el in q:children("item", M.NS_DISCO_ITEMS) do
      if el.attr.node then list[#list + 1] = el.attr.node end
    end
  end
  return list
end

---------------------------------------------------------------------------- notifications

local NS_EVENT, NS_SHIM, NS_DELAY = M.NS_EVENT, M.NS_SHIM, M.NS_DELAY

--- pubsub.parse_event(message) -> event, or nil if the message carries no pubsub event we know.
-- event: {type = "items"|"retract"|"delete"|"purge"|"configuration"|"subscription", node, from,
-- items = {{id, payload, publisher}}, retracts = {ids}, subids = {...} (SHIM headers), delay
-- (XEP-0203 stamp), redirect (delete), config (configuration with a form), jid/state/subid
-- (subscription), message (the stanza)}.
---@param s sacm.xml.Element a message stanza
---@return sacm.xmpp.pubsub.Event? event
function M.parse_event(s)
  -- one pass over the message's children for the three this reads (each the first of its kind)
  local event_el, headers, delay
  for i = 1, #s do
    local c = s[i]
    if type(c) == "table" then
      local ns, name = c.ns, c.name
      if ns == NS_EVENT then
        if name == "event" and not event_el then event_el = c end
      elseif ns == NS_SHIM then
        if name == "headers" and not headers then headers = c end
      elseif ns == NS_DELAY then
        if name == "delay" and not delay then delay = c end
      end
    end
  end
  if not event_el then return nil end
  local what
  for i = 1, #event_el do
    local c = event_el[i]
    if c.ns == NS_EVENT then what = c break end -- (text children are strings: no ns)
  end
  if not what then return nil end
  local ev = { node = what.attr.node, from = s.attr.from, message = s }
  if what.name == "items" then
    local items, retracts = {}, {}
    ev.items, ev.retracts = items, retracts
    for i = 1, #what do
      local c = what[i]
      if c.ns == NS_EVENT then
        if c.name == "item" then
          items[#items + 1] = item_of(c)
        elseif c.name == "retract" and c.attr.id then
          retracts[#retracts + 1] = c.attr.id
        end
      end
    end
    ev.type = (#ev.items == 0 and #ev.retracts > 0) and "retract" or "items"
  elseif what.name == "delete" then
    ev.type = "delete"
    local r = what:child("redirect", NS_EVENT)
    ev.redirect = r and r.attr.uri
  elseif what.name == "purge" then
    ev.type = "purge"
  elseif what.name == "configuration" then
    ev.type = "configuration"
    local x = what:child("x", M.NS_DATA)
    if x then ev.config = form_config(parse_form(x)) end
  elseif what.name == "subscription" then
    ev.type = "subscription"
    ev.jid, ev.subid, ev.state = what.attr.jid, what.attr.subid, what.attr.subscription
  else
    return nil
  end
  if ev.node == nil then return nil end
  if headers then
    for h in headers:children("header", NS_SHIM) do
      if h.attr.name == "SubID" then
        ev.subids = ev.subids or {}
        ev.subids[#ev.subids + 1] = h:get_text()
      end
    end
  end
  if delay then ev.delay = delay.attr.stamp end
  return ev
end

-- One message handler per connection, shared by every registration on it (so a foreign
-- notification is logged once). Keyed weakly: the table holds no connection alive.
local dispatchers = setmetatable({}, { __mode = "k" })
local counters = setmetatable({}, { __mode = "k" }) -- conn -> {accepted, rejected, malformed}

local function stats_of(conn)
  local c = counters[conn]
  if not c then
    c = { accepted = 0, rejected = 0, malformed = 0 }
    counters[conn] = c
  end
  return c
end

-- dispatch runs inside the delivery of the stanza (a direct handler of the connection): streams
-- are fed there, and each callback gets a task of its own, so one slow handler delays no other.
local function deliver_to(reg, ev)
  if reg.stream then
    reg.stream:_push(ev)
  else
    task._spawn("pubsub event handler", nil, reg.fn, ev)
  end
end

local function dispatch(d, s)
  if s.attr.type == "error" then return end
  local from = s.attr.from
  -- Who receives the event is settled before anything is delivered: a stream that closes itself
  -- (after its node's delete) changes d.regs. Nearly always one registration matches, so the
  -- list of them is only made when there is a second.
  local regs = d.regs
  local accepted, ev, first, deliver = false, nil, nil, nil
  for i = 1, #regs do
    local reg = regs[i]
    if from and jidlib.equal(from, reg.service) then
      if not accepted then
        accepted = true
        local ok, parsed = pcall(M.parse_event, s)
        if not ok or not parsed then
          d.stats.malformed = d.stats.malformed + 1
          M.log.warn("ignored a pubsub notification from %s that could not be read%s", from,
            ok and "" or (": " .. errors.message(parsed)))
          return
        end
        ev = parsed
      end
      if reg.node == nil or reg.node == ev.node then
        if not first then
          first = reg
        elseif not deliver then
          deliver = { first, reg }
        else
          deliver[#deliver + 1] = reg
        end
      end
    end
  end
  if not accepted then
    d.stats.rejected = d.stats.rejected + 1
    M.log.warn("ignored a pubsub notification from %s: not a pubsub service this connection listens to",
      tostring(from))
    return
  end
  d.stats.accepted = d.stats.accepted + 1
  if not first then
    M.log.debug("no listener for the %s event of node '%s' from %s", ev.type, tostring(ev.node), from)
    return
  end
  if not deliver then return deliver_to(first, ev) end
  -- callbacks first: their tasks then start before the readers of the streams resume
  for _, reg in ipairs(deliver) do
    if not reg.stream then deliver_to(reg, ev) end
  end
  for _, reg in ipairs(deliver) do
    if reg.stream then reg.stream:_push(ev) end
  end
end

local function register(conn, reg)
  local d = dispatchers[conn]
  if not d then
    d = { regs = {}, stats = stats_of(conn) }
    -- direct where the connection offers it: nothing here waits, and a task per notification
    -- would cost more than the rest of the dispatch
    local on = conn._on_direct or conn.on
    d.handler = on(conn, "message", { ns = M.NS_EVENT, child = "event" }, function(s) dispatch(d, s) end)
    dispatchers[conn] = d
  end
  d.regs[#d.regs + 1] = reg
  function reg.remove()
    for i = #d.regs, 1, -1 do
      if d.regs[i] == reg then table.remove(d.regs, i) end
    end
    if #d.regs == 0 and dispatchers[conn] == d then
      d.handler.remove()
      dispatchers[conn] = nil
    end
  end
  return reg
end

--- pubsub.on_event(conn, {service = jid, node = name or nil}, fn) -> handler with :remove().
-- fn(event) runs as a task for each notification from that service (for that node, if given).
-- Notifications from any other JID are dropped and logged.
---@param conn sacm.xmpp.Connection
---@param filter {service: string, node?: string}
---@param fn fun(event: sacm.xmpp.pubsub.Event)
---@return sacm.xmpp.Handler handler
function M.on_event(conn, filter, fn)
  if type(conn) ~= "table" or type(conn.on) ~= "function" then error("on_event expects an xmpp connection", 2) end
  if type(filter) ~= "table" then error("on_event expects a filter {service = jid [, node = name]}", 2) end
  if type(fn) ~= "function" then error("on_event expects a function", 2) end
  local service = jidlib.normalize(filter.service)
  if not service then error("on_event: filter.service must be the pubsub service JID", 2) end
  if filter.node ~= nil then check_node(filter.node) end
  local reg = register(conn, { service = service, node = filter.node, fn = fn })
  return { remove = reg.remove }
end

--- pubsub.stats(conn) -> {accepted, rejected, malformed} notification counts of this connection.
---@param conn sacm.xmpp.Connection
---@return {accepted: integer, rejected: integer, malformed: integer}
function M.stats(conn)
  local c = stats_of(conn)
  return { accepted = c.accepted, rejected = c.rejected, malformed = c.malformed }
end

--- svc:on_event([node,] fn) -> handler with :remove().
---@param node? string|fun(event: sacm.xmpp.pubsub.Event) the handler when fn is left out
---@param fn? fun(event: sacm.xmpp.pubsub.Event)
---@return sacm.xmpp.Handler handler
function Service:on_event(node, fn)
  if fn == nil then node, fn = nil, node end
  return M.on_event(self.conn, { service = self.jid, node = node }, fn)
end

-- Event streams ---------------------------------------------------------------------------

local Stream = {}
Stream.__index = Stream

function Stream:_push(ev)
  if self.closed then return end
  if not self.queue:try_put(ev) then
    self.dropped = self.dropped + 1
    if self.dropped == 1 or self.dropped % 1000 == 0 then
      M.log.warn("events of %s node '%s': the consumer is %d events behind; dropped %d so far",
        self.service, tostring(self.node), self.limit, self.dropped)
    end
    return
  end
  -- a node's stream ends after its delete notification
  if ev.type == "delete" and self.node ~= nil then self:close() end
end

--- stream:get([timeout]) -> event, or nil, err (timeout; closed once closed and drained).
---@param timeout? number seconds
---@return sacm.xmpp.pubsub.Event? event
---@return sacm.Error? err timeout | closed
function Stream:get(timeout)
  return self.queue:get(timeout)
end

--- stream:close(): stops listening; events already queued can still be read.
---(no parameters, no results)
function Stream:close()
  if self.closed then return end
  self.closed = true
  self.reg.remove()
  self.queue:close()
end

function Stream:__call()
  local ev = self.queue:get()
  return ev
end
Stream.__close = errors.closer(Stream.close)

function Stream:__tostring()
  return ("pubsub events of %s node %s (%s)"):format(self.service, tostring(self.node),
    self.closed and "closed" or (self.queue:len() .. " queued, " .. self.dropped .. " dropped"))
end
Stream.__len = function(self) return #self.queue end

--- svc:events([node [, opts]]) -> stream, usable as `for ev in svc:events(node) do ... end`.
-- Notifications are queued from the moment of the call (subscribe after it to miss nothing).
-- opts.limit (default 10000) bounds the queue: XMPP has no flow control toward a slow consumer,
-- so when it is full new events are dropped, counted in stream.dropped and logged. The stream
-- of one node ends after that node's delete notification; stream:close() (or leaving the for
-- loop, which closes it) stops it.
---@param node? string
---@param opts? {limit?: integer}
---@return sacm.xmpp.pubsub.Stream stream also its own iterator
---@return nil
---@return nil
---@return sacm.xmpp.pubsub.Stream closing the for loop's to-be-closed value
function Service:events(node, opts)
  if type(node) == "table" and opts == nil then node, opts = nil, node end
  if node ~= nil then check_node(node) end
  if opts ~= nil and type(opts) ~= "table" then error("events options must be a table", 2) end
  opts = opts or {}
  local limit = opts.limit or M.EVENTS_LIMIT
  if math.type(limit) ~= "integer" or limit < 1 then error("limit must be a positive integer", 2) end
  local stream = setmetatable({
    service = self.jid, node = node, limit = limit, dropped = 0, closed = false,
    queue = sync.queue(limit),
  }, Stream)
  stream.reg = register(self.conn, { service = self.jid, node = node, stream = stream })
  -- the 4th value makes a generic for close the stream when the loop ends or breaks
  return stream, nil, nil, stream
end

return M
