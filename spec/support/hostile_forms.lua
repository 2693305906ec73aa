-- Hostile command forms as they are on the wire, and a way to submit one to a role and time the
-- role's answer. Shared by spec/grid_commands_spec.lua (which asserts the errors) and
-- bench/hostile_forms.lua (which measures how long a role takes to refuse them).
local xml = require "sacm.xml"
local time = require "sacm.time"
local st = require "sacm.xmpp.stanza"
local forms = require "sacm.xmpp.forms"
local commands = require "sacm.xmpp.commands"

local M = {}

--- field(var, values [, type]) -> a <field/> of a submitted form.
function M.field(var, values, ftype)
  local f = xml.element("field", { xmlns = forms.NS, var = var, type = ftype })
  for _, v in ipairs(values) do f:tag("value"):text(v):up() end
  return f
end
local field = M.field

--- collect_cases() -> { {name, fields, pattern of the error text}, ... } for the collect command.
function M.collect_cases()
  local many_fields = {}
  for i = 1, 5000 do many_fields[i] = xml.element("field", { xmlns = forms.NS, var = "j" .. i }) end
  many_fields[#many_fields + 1] = field("timeout", { "abc" })
  local three_thousand = {}
  for i = 1, 3000 do three_thousand[i] = "os" end
  local nested = field("correlation", {})
  nested:tag("value"):tag("deep", { xmlns = "urn:junk" }):tag("deeper"):text("x"):up():up():up()
  nested:tag("value"):text("two"):up()
  return {
    { "wrong types", { field("timeout", { "1", "2" }), field("kinds", { "os" }, "boolean") }, "timeout: expects one value, got 2" },
    { "bidirectional Unicode", { field("correlation", { "abc\u{202E}fdp.exe" }) }, "correlation: 'abc\u{202E}fdp.exe' is not an identifier" },
    { "nested junk", { nested }, "correlation: expects one value, got 2" },
    { "5,000 fields", many_fields, "invalid form: more than 500 fields %(5002%)" },
    { "one 200 KB value", { field("correlation", { ("c"):rep(200 * 1024) }) }, "correlation: longer than 4096 bytes" },
    { "3,000 values", { field("kinds", three_thousand, "list-multi") }, "kinds: more than 1000 values %(3000%)" },
    { "timeout=-1e309", { field("timeout", { "-1e309" }) }, "timeout: not an integer %(xs:integer%): '%-1e309'" },
    { "timeout=-1", { field("timeout", { "-1" }) }, "timeout: %-1 is out of range %(1 to 3600%)" },
  }, many_fields, three_thousand
end

-- Wraps the role connection's command handler to time its answer to the stanza with id want_id
-- -> done(): puts the handler back and gives the seconds the role took from receiving that stanza
-- to answering it (in this process: a large stanza's trip through the XMPP server is not the
-- role's to bound).
local function timed_handler(role_conn, want_id)
  local handler
  for _, h in ipairs(role_conn.handlers.iq) do
    if h.filter.ns == commands.NS then handler = h end
  end
  assert(handler, "the role has no ad-hoc command handler")
  local original, took = handler.fn, nil
  handler.fn = function(stanza, c)
    local t0 = time.monotonic()
    local r1, r2 = original(stanza, c)
    if stanza.attr.id == want_id then took = time.monotonic() - t0 end
    return r1, r2
  end
  return function() handler.fn = original; return took end
end

--- open(client, role_conn, node) -> the reply to execute, the seconds the role took, the session id.
-- Opening a session is the reference: the same handler answering a benign request.
function M.open(client, role_conn, node)
  local iq = st.iq({ type = "set", to = role_conn.jid })
    :tag("command", { xmlns = commands.NS, node = node, action = "execute" }):up()
  iq.attr.id = st.new_id()
  local done = timed_handler(role_conn, iq.attr.id)
  local opened, err = client:iq(iq, { timeout = 20 })
  local took = done()
  assert(opened, tostring(err))
  return opened, took, opened:child("command", commands.NS).attr.sessionid
end

--- cancel(client, role_conn, node, sid): ends a session open() opened (a peer may hold only a
-- few open at once).
function M.cancel(client, role_conn, node, sid)
  assert(client:iq(st.iq({ type = "set", to = role_conn.jid })
    :tag("command", { xmlns = commands.NS, node = node, sessionid = sid, action = "cancel" }):up(), { timeout = 20 }))
end

--- submit(client, role_conn, node, fields) -> the error the role answered, the seconds it took.
-- Opens a session of node at the role and completes it with a form of the given <field/>
-- elements as they are; a form the role accepts is an assertion failure.
function M.submit(client, role_conn, node, fields)
  local _, _, sid = M.open(client, role_conn, node)
  local x = xml.element("x", { xmlns = forms.NS, type = "submit" })
  x:tag("field", { var = "FORM_TYPE", type = "hidden" }):tag("value"):text(node):up():up()
  for _, f in ipairs(fields) do x:add(f) end
  local iq = st.iq({ type = "set", to = role_conn.jid })
    :tag("command", { xmlns = commands.NS, node = node, sessionid = sid, action = "complete" }):add(x):up()
  iq.attr.id = st.new_id()
  local done = timed_handler(role_conn, iq.attr.id)
  local reply, err = client:iq(iq, { timeout = 20 })
  local took = done()
  assert(reply == nil, "a hostile form was accepted")
  return err, took
end

return M
