-- mod_sacm_xmlns_guard: refuses stanzas that Prosody could only relay as XML no client parses.
--
-- Namespaces in XML 1.0 binds the prefix xml to http://www.w3.org/XML/1998/namespace and forbids
-- declaring that namespace (or http://www.w3.org/2000/xmlns/) as the default. A client may send
-- <message><xml:e/></message>, which is namespace-well-formed. Prosody 0.12 keeps the element as
-- name "e" with xmlns = the XML namespace and relays it as
--   <e xmlns='http://www.w3.org/XML/1998/namespace'/>
-- which is not: the recipient's parser (expat, as used by libstrophe and sacmrun) stops with
-- "reserved prefix (xml) must not be undeclared or bound to another namespace name", and the
-- recipient's whole stream fails (invalid-xml). Whoever can send the recipient a message could
-- keep it offline, stanza after stanza.
--
-- This module stops such stanzas where they enter the server, on the sender's host, before they
-- are routed anywhere (to a client, to the pubsub service, to offline storage): the sender gets
-- a bad-request error (unless the stanza was itself an error or a result, which are never
-- answered) and nothing is relayed. Enable it on every VirtualHost whose users may send to the
-- grid's roles (it is in examples/servers/prosody.cfg.lua).
local st = require "util.stanza"

local RESERVED = {
  ["http://www.w3.org/XML/1998/namespace"] = true,
  ["http://www.w3.org/2000/xmlns/"] = true,
}

-- Any element of the stanza in a reserved namespace? Iterative: a stanza is at most Prosody's
-- stanza size limit, but its depth is the sender's choice.
local function has_reserved(stanza)
  local stack, n = { stanza }, 1
  while n > 0 do
    local el = stack[n]
    stack[n] = nil
    n = n - 1
    if RESERVED[el.attr.xmlns] then return true end
    for _, child in ipairs(el.tags) do
      n = n + 1
      stack[n] = child
    end
  end
  return false
end

local function guard(event)
  local stanza, origin = event.stanza, event.origin
  if not has_reserved(stanza) then return nil end
  module:log("info", "refused a %s from %s: it has an element in a reserved XML namespace",
             stanza.name, origin.full_jid or origin.host or "?")
  local t = stanza.attr.type
  if t ~= "error" and not (stanza.name == "iq" and t == "result") then
    origin.send(st.error_reply(stanza, "modify", "bad-request",
      "elements in the namespace of the xml or xmlns prefix cannot be relayed"))
  end
  return true -- handled: not routed
end

-- "pre-" events fire on the sender's host for every stanza from its clients, whatever the
-- destination; the priority puts this check before any other handler.
for _, kind in ipairs { "message", "presence", "iq" } do
  for _, to in ipairs { "/full", "/bare", "/host" } do
    module:hook("pre-" .. kind .. to, guard, 1000)
  end
end
