--- sacm.xmpp.stanza: XMPP stanzas (RFC 6120) as sacm.xml elements: constructors, replies, errors.
local xml = require "sacm.xml"
local errors = require "sacm.error"

local M = {}

M.NS_CLIENT = "jabber:client"
M.NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"

local next_id = 0
local id_prefix = require("sacm.crypto").hex(require("sacm.crypto").random(4))

--- new_id() -> a fresh stanza id, unique within this process and unpredictable across processes.
---@return string id
function M.new_id()
  next_id = next_id + 1
  return id_prefix .. "-" .. next_id
end

local element_in = xml._element_in

local function stanza(name, attr)
  return element_in(name, attr, M.NS_CLIENT)
end

---@param attr? table<string, string> to, from, type, id, ...
---@return sacm.xml.Element iq in jabber:client
function M.iq(attr) return stanza("iq", attr) end
---@param attr? table<string, string>
---@return sacm.xml.Element message
function M.message(attr) return stanza("message", attr) end
---@param attr? table<string, string>
---@return sacm.xml.Element presence
function M.presence(attr) return stanza("presence", attr) end

--- reply(st) -> a result iq (or message/presence) addressed back to st's sender, same id.
---@param st sacm.xml.Element the stanza to answer
---@return sacm.xml.Element reply
function M.reply(st)
  local attr = { id = st.attr.id, to = st.attr.from, from = st.attr.to }
  if st.name == "iq" then attr.type = "result" else attr.type = st.attr.type end
  return stanza(st.name, attr)
end

local DEFAULT_TYPES = {
  ["bad-request"] = "modify", ["conflict"] = "cancel", ["feature-not-implemented"] = "cancel",
  ["forbidden"] = "auth", ["internal-server-error"] = "cancel", ["item-not-found"] = "cancel",
  ["jid-malformed"] = "modify", ["not-acceptable"] = "modify", ["not-allowed"] = "cancel",
  ["not-authorized"] = "auth", ["policy-violation"] = "modify", ["recipient-unavailable"] = "wait",
  ["remote-server-not-found"] = "cancel", ["remote-server-timeout"] = "wait",
  ["resource-constraint"] = "wait", ["service-unavailable"] = "cancel",
  ["subscription-required"] = "auth", ["undefined-condition"] = "cancel",
  ["unexpected-request"] = "wait",
}
M.ERROR_TYPES = DEFAULT_TYPES

--- error_reply(st, condition [, text [, type [, app_element]]]) -> an error stanza (RFC 6120 8.3).
---@param st sacm.xml.Element the stanza to answer
---@param condition string an RFC 6120 stanza error condition (others become undefined-condition)
---@param text? string
---@param etype? "auth"|"cancel"|"continue"|"modify"|"wait" default: the condition's usual type
---@param app? sacm.xml.Element an application-specific condition element
---@return sacm.xml.Element reply
function M.error_reply(st, condition, text, etype, app)
  -- the runtime's own names for a failure (timeout, internal-error) go out as their RFC 6120 names
  if not DEFAULT_TYPES[condition] and DEFAULT_TYPES[errors.SAME[condition]] then condition = errors.SAME[condition] end
  if not DEFAULT_TYPES[condition] then condition, text = "undefined-condition", text or condition end
  local attr = { id = st.attr.id, to = st.attr.from, from = st.attr.to, type = "error" }
  local reply = stanza(st.name, attr)
  reply:tag("error", { type = etype or DEFAULT_TYPES[condition] })
    :tag(condition, { xmlns = M.NS_STANZAS }):up()
  -- an error text often quotes what was refused: never let it make the reply unwritable
  if text then reply:tag("text", { xmlns = M.NS_STANZAS }):text((xml.clean_text(tostring(text)))):up() end
  if app then reply:add(app) end
  reply:reset()
  return reply
end

--- to_error(st) -> a sacm.error for an error stanza: condition, type, text, stanza.
---@param st sacm.xml.Element an error stanza
---@return sacm.Error err with err.type and err.stanza
function M.to_error(st)
  local err = st:child("error")
  local condition, text = "undefined-condition", nil
  if err then
    for child in err:children() do
      if child.ns == M.NS_STANZAS then
        if child.name == "text" then text = child:get_text() else condition = child.name end
      end
    end
  end
  return errors.new(condition, text or ("error reply from " .. tostring(st.attr.from or "the server")),
    { type = err and err.attr.type, stanza = st })
end

--- payload(st) -> the first child element (the request or result payload), if any.
---@param st sacm.xml.Element
---@return sacm.xml.Element? payload
function M.payload(st)
  for child in st:children() do return child end
end

return M
