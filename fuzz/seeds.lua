-- fuzz/seeds.lua: writes the seed inputs of the forms and payload targets into
-- spec/fixtures/fuzz/ with the real encoders, so the seeds are what roles send:
--   ./sacmrun fuzz/seeds.lua
-- The other targets' seeds are written by hand. libFuzzer mutates from these.
local xml = require "sacm.xml"
local forms = require "sacm.xmpp.forms"
local payload = require "sacm.grid.payload"
local proto = require "sacm.grid.protocol"

local root = "spec/fixtures/fuzz/"
local function write(target, name, el)
  local f = assert(io.open(root .. target .. "/" .. name .. ".xml", "w"))
  f:write(type(el) == "string" and el or xml.serialize(el))
  f:close()
end

-- forms: submissions to each command, wrapped in <command/> as they arrive, and forms as offered
local collect = proto.collect_form({ "os", "packages", "services" })
local function command(node, x)
  local cmd = xml.element("command", { xmlns = "http://jabber.org/protocol/commands", node = node, action = "execute" })
  return cmd:add(x)
end
write("forms", "collect-submit", command(proto.CMD.collect, forms.submit(collect,
  { kinds = { "os", "packages" }, correlation = "run-1", timeout = 30 })))
write("forms", "evaluate-submit", command(proto.CMD.evaluate, forms.submit(proto.evaluate_form({ "baseline" }),
  { endpoints = { "ep-1", "ep-2" }, policies = { "baseline" }, kinds = { "os" }, correlation = "c.2" })))
write("forms", "cancel-submit", forms.submit(proto.CANCEL_FORM, { correlation = "run-1" }))
write("forms", "query-submit", forms.submit(proto.QUERY_FORM, { type = "history", endpoint = "ep-1",
  result = "fail", since = "2026-01-01T00:00:00Z", max = 500, after = "cursor" }))
write("forms", "get-submit", forms.submit(proto.GET_FORM, { id = "posture/ep-1/os" }))
write("forms", "collect-form", forms.new(collect))
write("forms", "query-form", forms.new(proto.QUERY_FORM))
write("forms", "result-items", forms.new({ type = "result", title = "Results",
  reported = { { var = "id", type = "text-single" }, { var = "ok", type = "boolean" }, { var = "jids", type = "jid-multi" } },
  items = { { id = "a", ok = true, jids = { "a@b/c" } }, { id = "b", ok = false, jids = {} } } }))
write("forms", "typed", [[<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>]]
  .. proto.CMD.collect .. [[</value></field><field var='timeout' type='text-single'><validate xmlns='http://jabber.org/protocol/xdata-validate' datatype='xs:integer'><range min='1' max='3600'/></validate><value> 42 </value></field><field var='flag' type='boolean'><value>1</value></field><field var='who' type='jid-single'><value>user@example.org/res</value></field><field var='notes' type='text-multi'><value>line one</value><value>line two</value></field><field var='kinds'><value>os</value><value>os</value></field></x>]])

-- payload: each decoder's input as roles write it
local posture = payload.posture({ id = "p-1", kind = "os", endpoint = "ep-1", hostname = "host.example",
  collected = 1780000000.25, collector = "collector@grid.example/c", correlation = "run-1", module_version = 2,
  data = { attributes = { name = "Debian", version = 12, secure = true, load = 0.5 },
    items = { { name = "openssl", version = "3.0.15" }, { name = "libc6", version = "2.36" } } } })
write("payload", "posture", posture)
write("payload", "posture-error", payload.posture({ id = "p-2", kind = "packages", endpoint = "ep-1",
  collected = 1780000000, error = { condition = "timeout", text = "dpkg did not answer in 30 s" } }))
write("payload", "posture-ref", payload.posture({ id = "p-3", kind = "packages", endpoint = "ep-1", collected = 1780000000,
  ref = { href = "https://repo.example/u/p-3", size = 123456, digest = string.rep("ab", 32) } }))
write("payload", "posture-set", payload.posture_set({ id = "set-1", endpoint = "ep-1", hostname = "host.example",
  collector = "collector@grid.example/c", correlation = "run-1", postures = { posture } }))
local result = payload.result({ id = "r-1", endpoint = "ep-1", hostname = "host.example", rule_id = "ssh.root",
  policy_id = "baseline", policy_version = "3", result = "fail", severity = "high", title = "No root login over SSH",
  evaluated = 1780000001.5, evaluator = "evaluator@grid.example/e", correlation = "run-1", posture_ids = { "p-1", "p-2" },
  posture_collected = 1780000000.25, evidence = { "PermitRootLogin yes", "in /etc/ssh/sshd_config line 32" } })
write("payload", "result", result)
local totals = { total = 1, pass = 0, fail = 1, error = 0, notapplicable = 0, notchecked = 0 }
write("payload", "result-set", payload.result_set({ id = "rs-1", endpoint = "ep-1", hostname = "host.example",
  evaluator = "evaluator@grid.example/e", evaluated = 1780000002, correlation = "run-1", totals = totals, results = { result } }))
write("payload", "result-set-ref", payload.result_set({ id = "rs-2", endpoint = "ep-1", evaluator = "evaluator@grid.example/e",
  evaluated = 1780000002, totals = totals, ref = { href = "https://repo.example/r/rs-2", size = 99, digest = string.rep("0f", 32) } }))
local pending = payload.result_set({ id = "rs-3", endpoint = "ep-1", evaluator = "evaluator@grid.example/e",
  evaluated = 1780000002, totals = totals })
pending.attr.delivery = "pending"
write("payload", "result-set-pending", pending)
write("payload", "status", payload.status({ type = "evaluation-done", component = "evaluator@grid.example/e",
  role = "evaluator", at = 1780000003, correlation = "run-1", text = "judged 1 endpoint",
  fields = { endpoints = 1, policy = "baseline", ok = true } }))
print("seeds written under " .. root)
