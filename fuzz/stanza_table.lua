-- fuzz/stanza_table.lua: a stanza converted by runtime/xmpp.c is an element like those
-- sacm.xml.parse makes (docs/api/xml.md), and what the runtime does with any stanza it receives
-- works on it: serialize it (the repository stores payloads as text), parse that text back to
-- the same tree, reply to it and answer it with an error (lua/sacm/xmpp/init.lua, on_stanza).
local xml = require "sacm.xml"
local st = require "sacm.xmpp.stanza"
local compare = require "compare"

local function check_element(el, path)
  assert(xml.is_element(el), path .. ": not an element")
  assert(type(el.name) == "string", path .. ": name is not a string")
  assert(el.ns == nil or type(el.ns) == "string", path .. ": ns")
  assert(type(el.attr) == "table", path .. ": attr")
  for k, v in pairs(el.attr) do
    assert(type(k) == "string" and type(v) == "string", path .. ": an attribute is not strings")
  end
  for i, child in ipairs(el) do
    if type(child) ~= "string" then check_element(child, path .. "/" .. i) end
  end
end

return function(el, input)
  check_element(el, el.name)
  local text = xml.serialize(el) -- raising here is the finding: the stanza was received
  local again, err = xml.parse(text)
  if not again then
    error(("a received stanza serializes to what parse refuses (%s):\n%s\ninput: %s"):format(tostring(err), text, input))
  end
  local d = compare.difference(el, again, el.name)
  if d then error(("a received stanza changes when written and read back: %s\nwritten: %s\ninput: %s"):format(d, text, input)) end
  -- the answers on_stanza and handlers give
  xml.serialize(st.reply(el))
  xml.serialize(st.error_reply(el, "service-unavailable"))
  xml.serialize(st.error_reply(el, "bad-request", "iq type must be get, set, result or error"))
  local e = st.to_error(el)
  assert(type(e.condition) == "string", "to_error gave no condition")
  st.payload(el)
end
