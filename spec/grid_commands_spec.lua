-- The grid's commands as docs/protocol.md section 3 writes them: typed fields refused at once
-- with bad-payload naming the field, only offered actions, the command's own FORM_TYPE, forbidden
-- for non-peers whatever session they name, evaluate's failed list and unknown correlations, the
-- repository's query errors, and a collection's answer naming exactly the kinds it reports.
local prosody = require "support.prosody"
local grid = require "support.grid"
local tmp = require "support.tmp"
local fs = require "sacm.fs"
local xmpp = require "sacm.xmpp"
local st = require "sacm.xmpp.stanza"
local forms = require "sacm.xmpp.forms"
local commands = require "sacm.xmpp.commands"
local proto = require "sacm.grid.protocol"
local collector = require "sacm.roles.collector"
local evaluator = require "sacm.roles.evaluator"
local repository = require "sacm.roles.repository"
local orchestrator = require "sacm.roles.orchestrator"
local wait_until = require("support.wait").until_true

describe("the grid's commands #e2e", function()
  local server, dir, g, orch, coll, eval, repo, outsider

  local function start(mod, role, extra) return g:start(mod, role, extra) end

  lazy_setup(function()
    server = prosody.start({ users = { orchestrator = "pw", collector = "pw", evaluator = "pw", repository = "pw",
      outsider = "pw" }, shipped = true })
    dir = tmp.dir("grid-commands")
    g = grid.new(server, dir)
    assert(fs.mkdir(dir .. "/policies"))
    assert(fs.write(dir .. "/policies/t.lua", [[
return { id = "t", title = "t", rules = {
  { id = "t-os", title = "os known", severity = "low", rationale = "test", requires = { "os" },
    check = function(p) return p.os.attributes.hostname and "pass" or "fail", "hostname" end } } }
]]))
    repo = start(repository, "repository", { database = dir .. "/grid.db" })
    orch = start(orchestrator, "orchestrator")
    eval = start(evaluator, "evaluator", { policies = dir .. "/policies" })
    coll = start(collector, "collector", { kinds = { "os", "users" } })
    assert(orch:discover({ collectors = 1, evaluators = 1, timeout = 15 }))
    outsider = assert(xmpp.connect({ jid = server:jid("outsider") .. "/x", password = "pw", host = server.host,
      port = server.port, cafile = server.ca_file }))
  end)

  lazy_teardown(function()
    if outsider then outsider:close() end
    if g then g:close_roles() end
    if server then server:stop() end
    if dir then tmp.remove(dir) end
  end)

  local function refused(jid, node, values, app)
    local s, err = orch:command(jid, node, values)
    assert.is_nil(s)
    assert.equal("bad-request", err.condition, tostring(err))
    assert.equal(app or "bad-payload", err.app_condition, tostring(err))
    return err
  end

  it("refuses a mistyped or out-of-range timeout at once, naming the field", function()
    local c = coll.member.conn.jid
    assert.matches("^timeout: not an integer %(xs:integer%): 'soon'", refused(c, "collect", { timeout = "soon" }).text:match("timeout:.*"))
    assert.matches("timeout: not an integer", refused(c, "collect", { timeout = "2.5" }).text)
    assert.matches("timeout: 0 is out of range %(1 to 3600%)", refused(c, "collect", { timeout = "0" }).text)
    assert.matches("timeout: %-5 is out of range", refused(c, "collect", { timeout = "-5" }).text)
    assert.is_nil(next(coll.running), "a refused collect must start nothing")
  end)

  it("answers a collect without kinds with every kind it will report, and says so when done", function()
    local statuses = {}
    orch:on_status(function(s) statuses[#statuses + 1] = s end)
    local s = assert(orch:command(coll.member.conn.jid, "collect", { correlation = "c-all" }))
    local kinds = s.values.kinds
    table.sort(kinds)
    assert.same(coll:all_kinds(), kinds)
    local done = wait_until(function()
      for _, x in ipairs(statuses) do
        if x.type == "collection-done" and x.correlation == "c-all" then return x end
      end
    end, 20, "collection-done")
    assert.equal(table.concat(coll:all_kinds(), " "), done.fields.kinds)
    assert.is_truthy(done.fields.published and done.fields.failed and done.fields.spooled)
  end)

  it("offers complete and refuses next; refuses another command's FORM_TYPE", function()
    local s = assert(commands.start(orch.conn, coll.member.conn.jid, proto.CMD.collect))
    assert.is_true(s.actions.complete)
    local ok, err = s:submit({ kinds = { "os" } }, "next")
    assert.is_nil(ok)
    assert.equal("bad-action", err.app_condition)
    s:cancel()
    -- a submission carrying the evaluate form's FORM_TYPE
    local iq = st.iq({ type = "set", to = coll.member.conn.jid })
    local opened = assert(orch.conn:iq(st.iq({ type = "set", to = coll.member.conn.jid })
      :tag("command", { xmlns = commands.NS, node = proto.CMD.collect, action = "execute" }):up()))
    local sid = opened:child("command", commands.NS).attr.sessionid
    iq:tag("command", { xmlns = commands.NS, node = proto.CMD.collect, sessionid = sid, action = "complete" })
      :add(forms.submit({ form_type = proto.CMD.evaluate, fields = { { var = "policies", type = "list-multi" } } }, {}))
    local reply, rerr = orch.conn:iq(iq)
    assert.is_nil(reply)
    assert.equal("bad-request", rerr.condition)
    assert.matches("FORM_TYPE", tostring(rerr.text))
  end)

  it("says forbidden to a non-peer, with or without a session id", function()
    local s, err = commands.execute(outsider, coll.member.conn.jid, proto.CMD.status, nil, 10)
    assert.is_nil(s)
    assert.equal("forbidden", err.condition)
    local session = assert(commands.start(orch.conn, coll.member.conn.jid, proto.CMD.collect))
    local iq = st.iq({ type = "set", to = coll.member.conn.jid })
      :tag("command", { xmlns = commands.NS, node = proto.CMD.collect, sessionid = session.sessionid, action = "complete" }):up()
    local reply, ferr = outsider:iq(iq, 10)
    assert.is_nil(reply)
    assert.equal("forbidden", ferr.condition)
    session:cancel()
  end)

  it("evaluates a known correlation, lists failed endpoints by id, and refuses an unknown correlation", function()
    local run = assert(orch:collect({ kinds = { "os" }, timeout = 20 }))
    local s = assert(orch:command(eval.member.conn.jid, "evaluate",
      { correlation = run.correlation, endpoints = { coll.endpoint, "no-such-endpoint" } }))
    assert.same({ coll.endpoint }, s.values.endpoints)
    assert.same({ "no-such-endpoint" }, s.values.failed)
    assert.equal("1", s.values.pass)
    local none, err = orch:command(eval.member.conn.jid, "evaluate", { correlation = "made-up-correlation" })
    assert.is_nil(none)
    assert.equal("item-not-found", err.condition)
    local ok = assert(orch:command(eval.member.conn.jid, "evaluate", { correlation = run.correlation }))
    assert.same({}, ok.values.failed or {})
  end)

  it("names the field of a bad query, with bad-payload", function()
    local r = repo.member.conn.jid
    assert.matches("max: not an integer", refused(r, "query", { type = "posture", max = "ten" }).text)
    assert.matches("^since: not an XEP%-0082 date%-time: 'yesterday'", refused(r, "query", { type = "posture", since = "yesterday" }).text)
    assert.matches("^kind: this filter does not apply to results queries", refused(r, "query", { type = "results", kind = "os" }).text)
    local page = assert(orch:command(r, "query", { type = "posture", max = "2" }))
    assert.equal("2", page.values.count)
  end)
end)

describe("provenance at the repository #e2e", function()
  local xml = require "sacm.xml"
  local payload = require "sacm.grid.payload"
  local upload = require "sacm.grid.upload"
  local crypto = require "sacm.crypto"
  local server, dir, g, repo, coll, other, eval

  local function start(mod, role, extra) return g:start(mod, role, extra) end

  lazy_setup(function()
    server = prosody.start({ users = { orchestrator = "pw", collector = "pw", collector2 = "pw", evaluator = "pw",
      repository = "pw" }, shipped = true })
    dir = tmp.dir("provenance")
    g = grid.new(server, dir)
    assert(fs.mkdir(dir .. "/policies"))
    repo = start(repository, "repository", { database = dir .. "/grid.db" })
    coll = start(collector, "collector", { kinds = { "os" }, endpoint = "web1" })
    other = start(collector, "collector2", { kinds = { "os" }, endpoint = "db1" })
    eval = start(evaluator, "evaluator", { policies = dir .. "/policies" })
    wait_until(function()
      return repo.members[server:jid("collector")] and repo.members[server:jid("collector2")]
        and repo.members[server:jid("evaluator")]
    end, 15, "the repository admitting every component")
    assert.is_true(coll:collect({ "os" }).published == 1) -- binds web1 to collector
  end)

  lazy_teardown(function()
    if g then g:close_roles() end
    if server then server:stop() end
    if dir then tmp.remove(dir) end
  end)

  local function client_of(role)
    return upload.client(role.member.conn, { service = repo.member.conn.jid, cafile = server.ca_file })
  end

  local function posture_set(endpoint, collector_jid)
    local id = crypto.uuid()
    local p = payload.posture({ id = crypto.uuid(), kind = "os", endpoint = endpoint, collector = collector_jid,
      collected = os.time(), data = { attributes = { hostname = "forged" }, items = {} } })
    return id, xml.serialize(payload.posture_set({ id = id, endpoint = endpoint, collector = collector_jid, postures = { p } }))
  end

  local function refused_upload(role, id, text, pattern)
    local before = repo.store:stats()
    local ok, err = client_of(role):upload(id, text)
    assert.is_nil(ok)
    assert.is_true(err.permanent, tostring(err))
    assert.matches(pattern, tostring(err))
    local after = repo.store:stats()
    assert.equal(before.posture, after.posture)
    assert.equal(before.results, after.results)
    assert.equal(before.refused + 1, after.refused)
  end

  it("refuses a collector's result set, and nothing is stored", function()
    local id = crypto.uuid()
    local r = payload.result({ id = crypto.uuid(), endpoint = "web1", rule_id = "accounts-single-uid0", policy_id = "accounts",
      policy_version = "v", result = "pass", evaluated = os.time(), evaluator = coll.member.conn.jid,
      evidence = { "FORGED by the collector account" } })
    local set = xml.serialize(payload.result_set({ id = id, endpoint = "web1", evaluator = coll.member.conn.jid,
      evaluated = os.time(), totals = { total = 1, pass = 1 }, results = { r } }))
    refused_upload(coll, id, set, "403.*is not an evaluator of this grid")
  end)

  it("refuses posture of an endpoint bound to another collector", function()
    local id, text = posture_set("web1", other.member.conn.jid)
    refused_upload(other, id, text, "403.*endpoint 'web1' is bound to collector " .. server:jid("collector"))
  end)

  it("refuses posture that names another collector than its uploader", function()
    local id, text = posture_set("web1", coll.member.conn.jid)
    refused_upload(other, id, text, "403.*names collector")
  end)

  it("refuses an evaluator's posture", function()
    local id, text = posture_set("e-endpoint", eval.member.conn.jid)
    refused_upload(eval, id, text, "403.*is not a collector of this grid")
  end)

  it("refuses results judged on posture it never stored, or on another endpoint's posture", function()
    local function result_set(posture_id, endpoint, value)
      local id = crypto.uuid()
      local r = payload.result({ id = crypto.uuid(), endpoint = endpoint, rule_id = "t-os", policy_id = "t",
        policy_version = "v", result = value, evaluated = os.time(), evaluator = eval.member.conn.jid,
        posture_ids = { posture_id }, evidence = { "judged" } })
      return id, xml.serialize(payload.result_set({ id = id, endpoint = endpoint, evaluator = eval.member.conn.jid,
        evaluated = os.time(), totals = { total = 1, [value] = 1 }, results = { r } }))
    end
    -- posture a collector announced but never uploaded (it skipped the repository)
    local never = crypto.uuid()
    local id, text = result_set(never, "web9", "pass")
    refused_upload(eval, id, text, "403.*judged on posture " .. never:gsub("%-", "%%-") .. ", which this repository never stored")
    -- web1's real posture, judged as db1's
    local row = assert(repo.store.db:first("SELECT id FROM posture WHERE endpoint = 'web1'"))
    id, text = result_set(row.id, "db1", "pass")
    refused_upload(eval, id, text, "of endpoint 'db1' was judged on posture " .. row.id:gsub("%-", "%%-")
      .. " of endpoint 'web1'")
    -- judged on its own endpoint's stored posture: stored; an error about undelivered posture too
    id, text = result_set(row.id, "web1", "pass")
    assert(client_of(eval):upload(id, text))
    id, text = result_set(crypto.uuid(), "web1", "error")
    assert(client_of(eval):upload(id, text))
  end)

  it("admits no account to a role its name or the roles configuration does not give it", function()
    -- the collector2 account runs an evaluator: it advertises the role, but may not hold it
    local rogue = assert(evaluator.start(g:options("collector2", { jid = server:jid("collector2") .. "/as-evaluator",
      policies = dir .. "/policies" })))
    local found = wait_until(function()
      for _, r in ipairs(repo.store:refusals(20)) do
        if r.what == "role evaluator" then return r end
      end
    end, 10, "the repository refusing the evaluator role")
    assert.is_nil((repo.members[server:jid("collector2")] or {}).evaluator)
    assert.is_true((repo.members[server:jid("collector2")] or {}).collector)
    -- so the pubsub service refuses its results
    local ok, err = rogue.member:publish("results", "forged", xml.element("x", { xmlns = "urn:example" }))
    rogue:close()
    assert.is_nil(ok)
    assert.is_truthy(err.condition == "forbidden" or err.condition == "not-allowed", tostring(err))
    assert.matches("^collector2@", found.uploader)
    assert.matches("advertises the evaluator role, which the account may not hold %(its name does not begin with "
      .. "'evaluator'; name it so or list it in the repository's roles%): not admitted", found.reason)
  end)

  it("counts and reports the refusals in its status", function()
    local o = start(orchestrator, "orchestrator")
    local s = assert(o:command(repo.member.conn.jid, "status"))
    assert.equal(tostring(repo.store:stats().refused), s.values.refused)
    assert.is_true(tonumber(s.values.refused) >= 4)
    local text = table.concat(s.values.refusals, "\n")
    assert.matches("is not an evaluator of this grid", text)
    assert.matches("is bound to collector", text)
  end)
end)

describe("hostile submissions and data #e2e", function()
  local xml = require "sacm.xml"
  local payload = require "sacm.grid.payload"
  local upload = require "sacm.grid.upload"
  local crypto = require "sacm.crypto"
  local time = require "sacm.time"
  local server, dir, g, repo, coll, eval, orch

  local function start(mod, role, extra) return g:start(mod, role, extra) end

  lazy_setup(function()
    server = prosody.start({ users = { orchestrator = "pw", collector = "pw", evaluator = "pw", repository = "pw" },
      shipped = true })
    dir = tmp.dir("hostile")
    g = grid.new(server, dir)
    assert(fs.mkdir(dir .. "/policies"))
    repo = start(repository, "repository", { database = dir .. "/grid.db" })
    orch = start(orchestrator, "orchestrator")
    eval = start(evaluator, "evaluator", { policies = dir .. "/policies" })
    coll = start(collector, "collector", { kinds = { "os" }, endpoint = "web1" })
    assert(orch:discover({ collectors = 1, evaluators = 1, timeout = 15 }))
  end)

  lazy_teardown(function()
    if g then g:close_roles() end
    if server then server:stop() end
    if dir then tmp.remove(dir) end
  end)

  local function refused_at_once(jid, node, values, pattern)
    local t0 = time.monotonic()
    local s, err = orch:command(jid, node, values)
    assert.is_nil(s)
    assert.equal("bad-request", err.condition, tostring(err))
    assert.equal("bad-payload", err.app_condition)
    assert.matches(pattern, err.text)
    -- and the component still answers at once (no work was started)
    assert(orch.conn:ping(jid, 5))
    return time.monotonic() - t0
  end

  it("refuses identifiers with markup, oversized values and too many values, naming the field", function()
    refused_at_once(coll.member.conn.jid, "collect", { correlation = "<img src=x>" }, "correlation: '<img src=x>' is not an identifier")
    refused_at_once(coll.member.conn.jid, "collect", { correlation = ("c"):rep(200 * 1024) }, "correlation: longer than 4096 bytes")
    local many = {}
    for i = 1, 3000 do many[i] = "os" end
    refused_at_once(coll.member.conn.jid, "collect", { kinds = many }, "kinds: more than 1000 values %(3000%)")
    refused_at_once(eval.member.conn.jid, "evaluate", { endpoints = { "web1", "<script>" } }, "endpoints: '<script>' is not an identifier")
    refused_at_once(repo.member.conn.jid, "query", { type = "posture", endpoint = "x' OR '1'='1" }, "endpoint: .* is not an identifier")
  end)

  it("ignores a posture notification whose server-verified publisher is not the collector it names", function()
    local before = eval.refused_provenance or 0
    local p = payload.posture({ id = crypto.uuid(), kind = "os", endpoint = "db9", collector = server:jid("evaluator") .. "/x",
      collected = time.now(), data = { attributes = { hostname = "forged" }, items = {} } })
    assert(coll.member:publish("posture", p.attr.id, p))
    wait_until(function() return (eval.refused_provenance or 0) > before end, 10, "the evaluator refusing the forgery")
    assert.is_nil(eval.latest.db9)
  end)

  it("refuses posture dated ahead of the repository's clock, and the evaluator ignores it", function()
    local up = upload.client(coll.member.conn, { service = repo.member.conn.jid, cafile = server.ca_file })
    local id = crypto.uuid()
    local p = payload.posture({ id = crypto.uuid(), kind = "os", endpoint = "web1", collector = coll.member.conn.jid,
      collected = time.parse("9999-01-01T00:00:00Z"), data = { attributes = { hostname = "forged" }, items = {} } })
    local text = xml.serialize(payload.posture_set({ id = id, endpoint = "web1", collector = coll.member.conn.jid, postures = { p } }))
    local ok, err = up:upload(id, text)
    assert.is_nil(ok)
    assert.matches("more than 300 s ahead of the repository's clock", tostring(err))
    -- announced straight on the node, the evaluator drops it and keeps judging real posture
    assert(coll.member:publish("posture", p.attr.id, p))
    wait_until(function() return (eval.refused_future or 0) >= 1 end, 10, "the evaluator dropping the future posture")
    local real = assert(orch:collect({ kinds = { "os" }, timeout = 20 }))
    local run = assert(orch:evaluate({ correlation = real.correlation, timeout = 20 }))
    assert.equal(0, #run.results) -- no policy here: the point is that evaluation still runs on real posture
    assert.is_true(eval.latest.web1.os.collected < time.now() + 1)
  end)
end)
