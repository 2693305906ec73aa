-- sacm.xmpp.pubsub end to end against a real, private Prosody 0.12: node life cycle, items, subscriptions,
-- affiliations, error conditions, notifications to a second connection, forged notifications,
-- XEP-0060 shapes Prosody never sends (from a fake service run by another client), and 200 items
-- with 16 publishes in flight arriving in order.
local prosody = require "support.prosody"
local xmpp = require "sacm.xmpp"
local xml = require "sacm.xml"
local st = require "sacm.xmpp.stanza"
local task = require "sacm.task"
local time = require "sacm.time"
local pubsub = require "sacm.xmpp.pubsub"

local NS_POSTURE = "urn:example:sacm:posture"

local function connect(server, user, password, resource)
  return assert(xmpp.connect({
    jid = ("%s@%s/%s"):format(user, server.domain, resource or "spec"),
    password = password,
    host = server.host, port = server.port, cafile = server.ca_file,
  }))
end

local function posture(host, n)
  return xml.element("posture", { xmlns = NS_POSTURE, host = host, seq = n })
    :tag("package", { name = "openssl" }):text("3.0.11-1~deb12u2"):up()
    :tag("package", { name = "sudo" }):text("1.9.13p3-1+deb12u1"):reset()
end

local function ids(items)
  local out = {}
  for i, item in ipairs(items) do out[i] = item.id end
  return out
end

-- Captures (instead of printing) what sacm.xmpp.pubsub logs as warnings while fn runs.
local function capture_warnings(fn)
  local seen, original = {}, pubsub.log.warn
  pubsub.log.warn = function(fmt, ...)
    seen[#seen + 1] = select("#", ...) > 0 and fmt:format(...) or fmt
  end
  local ok, err = pcall(fn)
  pubsub.log.warn = original
  if not ok then error(err, 0) end
  return seen
end

describe("sacm.xmpp.pubsub against Prosody #e2e", function()
  local server, owner, bob, mallory
  local svc, bob_svc

  setup(function()
    server = prosody.start({
      admins = { "owner" },
      users = { owner = "pw-owner", bob = "pw-bob", carol = "pw-carol", dave = "pw-dave", mallory = "pw-mallory" },
      pubsub_config = "    expose_publisher = true",
    })
    owner = connect(server, "owner", "pw-owner")
    bob = connect(server, "bob", "pw-bob")
    mallory = connect(server, "mallory", "pw-mallory")
    svc = pubsub.service(owner, server.pubsub)
    bob_svc = pubsub.service(bob, server.pubsub)
  end)

  teardown(function()
    for _, c in ipairs({ owner, bob, mallory }) do if c then c:close() end end
    if server then server:stop() end
  end)

  it("runs a node's whole life cycle, notifying a subscriber on another connection", function()
    -- create with a configuration; get_config reflects it
    assert.equal("reports", assert(svc:create("reports", {
      access_model = "open", max_items = 3, title = "posture reports", ["pubsub#notify_retract"] = true,
    })))
    local config, form = assert(svc:get_config("reports"))
    assert.equal("open", config.access_model)
    assert.equal(3, config.max_items)
    assert.equal("posture reports", config.title)
    assert.is_true(config.notify_retract)
    assert.is_true(config.persist_items)
    assert.is_true(config.deliver_payloads)
    assert.equal(pubsub.FORM_NODE_CONFIG, form.form_type)
    assert.equal("form", form.type)

    -- configure changes only what it is given
    assert.is_true(svc:configure("reports", { max_items = 4, title = "posture reports v2" }))
    config = assert(svc:get_config("reports"))
    assert.equal(4, config.max_items)
    assert.equal("posture reports v2", config.title)
    assert.equal("open", config.access_model)

    -- bob listens, then subscribes (nothing can slip between the two)
    local events = bob_svc:events("reports")
    local sub = assert(bob_svc:subscribe("reports"))
    assert.equal("reports", sub.node)
    assert.equal(bob.jid, sub.jid)
    assert.equal("subscribed", sub.state)

    -- publish with an id: the notification carries the payload as an element, and the publisher
    local p1 = posture("web1", 1)
    assert.equal("r1", assert(svc:publish("reports", "r1", p1)))
    local ev = assert(events:get(5))
    assert.equal("items", ev.type)
    assert.equal("reports", ev.node)
    assert.equal(server.pubsub, ev.from)
    assert.same({}, ev.retracts)
    assert.equal(1, #ev.items)
    assert.equal("r1", ev.items[1].id)
    assert.equal("owner@" .. server.domain, ev.items[1].publisher)
    local payload = ev.items[1].payload
    assert.is_true(xml.is_element(payload))
    assert.is_true(xml.equal(p1, payload))
    assert.equal(NS_POSTURE, payload.ns)
    assert.equal("web1", payload.attr.host)
    assert.equal("3.0.11-1~deb12u2", payload:find("package/#"))
    local names = {}
    for pkg in payload:children("package", NS_POSTURE) do names[#names + 1] = pkg.attr.name end
    assert.same({ "openssl", "sudo" }, names)

    -- publish without an id: the service's id is returned and notified
    local id2 = assert(svc:publish("reports", nil, posture("web2", 2)))
    assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+$", id2)
    ev = assert(events:get(5))
    assert.same({ id2 }, ids(ev.items))
    assert.equal("web2", ev.items[1].payload.attr.host)

    for n = 3, 5 do assert.equal("r" .. n, svc:publish("reports", "r" .. n, posture("web" .. n, n))) end
    for n = 3, 5 do assert.same({ "r" .. n }, ids(assert(events:get(5)).items)) end

    -- items: max_items = 4 keeps the last four, oldest first; latest N; by id (in the order asked)
    local all = assert(svc:items("reports"))
    assert.same({ id2, "r3", "r4", "r5" }, ids(all))
    assert.equal("web3", all[2].payload.attr.host)
    assert.equal("owner@" .. server.domain, all[2].publisher)
    assert.same({ "r4", "r5" }, ids(assert(svc:items("reports", { max = 2 }))))
    assert.same({ "r5", id2 }, ids(assert(svc:items("reports", { ids = { "r5", "r1", id2 } }))))
    assert.same({ id2, "r3", "r4", "r5" }, ids(assert(bob_svc:items("reports"))))

    -- publish-options: a precondition the node meets, and one it does not
    assert.equal("r6", svc:publish("reports", "r6", posture("web6", 6), { access_model = "open" }))
    assert.same({ "r6" }, ids(assert(events:get(5)).items))
    local id, err = svc:publish("reports", "r7", posture("web7", 7), { access_model = "whitelist" })
    assert.is_nil(id)
    assert.equal("conflict", err.condition)
    assert.equal("precondition-not-met", err.pubsub_condition)
    assert.matches("^conflict: publish to node 'reports' at pubsub%.localhost refused: precondition%-not%-met",
      tostring(err))

    -- retract with notification
    assert.is_true(svc:retract("reports", "r3", true))
    ev = assert(events:get(5))
    assert.equal("retract", ev.type)
    assert.same({ "r3" }, ev.retracts)
    assert.same({}, ev.items)
    assert.same({ "r4", "r5", "r6" }, ids(assert(svc:items("reports"))))

    -- retract without notify: Prosody stays silent, so the next event bob sees is the purge
    assert.is_true(svc:retract("reports", "r4"))
    assert.is_true(svc:purge("reports"))
    ev = assert(events:get(5))
    assert.equal("purge", ev.type)
    assert.equal("reports", ev.node)
    assert.same({}, assert(svc:items("reports")))

    -- delete: bob is told, and the stream of the node ends after that event
    assert.is_true(svc:delete("reports"))
    ev = assert(events:get(5))
    assert.equal("delete", ev.type)
    assert.equal("reports", ev.node)
    local none, closed = events:get(1)
    assert.is_nil(none)
    assert.equal("closed", closed.condition)
    local _, gone = svc:get_config("reports")
    assert.equal("item-not-found", gone.condition)
    assert.equal(0, #events)
  end)

  it("enforces the whitelist access model; owners manage affiliations and list subscribers", function()
    -- a fresh account: bob's unfiltered subscription list trips a Prosody bug by now (next test)
    local carol <close> = connect(server, "carol", "pw-carol")
    local carol_svc = pubsub.service(carol, server.pubsub)
    assert(svc:create("whitelisted", { access_model = "whitelist" }))
    local sub, err = carol_svc:subscribe("whitelisted")
    assert.is_nil(sub)
    assert.equal("forbidden", err.condition)
    local items
    items, err = carol_svc:items("whitelisted")
    assert.is_nil(items)
    assert.equal("forbidden", err.condition)

    assert.same({ { jid = "owner@localhost", affiliation = "owner" } }, assert(svc:node_affiliations("whitelisted")))
    assert.is_true(svc:set_affiliations("whitelisted", { ["carol@localhost"] = "member" }))
    assert.same({
      { jid = "carol@localhost", affiliation = "member" },
      { jid = "owner@localhost", affiliation = "owner" },
    }, assert(svc:node_affiliations("whitelisted")))

    sub = assert(carol_svc:subscribe("whitelisted"))
    assert.equal("subscribed", sub.state)
    assert.same({}, assert(carol_svc:items("whitelisted")))

    -- the owner sees carol among the subscribers; carol sees her own subscriptions
    local subscribers = assert(svc:node_subscriptions("whitelisted"))
    assert.same({ { node = "whitelisted", jid = carol.jid, state = "subscribed" } }, subscribers)
    local mine = assert(carol_svc:subscriptions())
    assert.same({ { node = "whitelisted", jid = carol.jid, state = "subscribed" } }, mine)
    assert.same(mine, assert(carol_svc:subscriptions("whitelisted")))

    -- carol (a member) may not manage the node
    local ok
    ok, err = carol_svc:node_affiliations("whitelisted")
    assert.is_nil(ok)
    assert.equal("forbidden", err.condition)
    ok, err = carol_svc:configure("whitelisted", { access_model = "open" })
    assert.is_nil(ok)
    assert.equal("forbidden", err.condition)
    ok, err = carol_svc:delete("whitelisted")
    assert.is_nil(ok)
    assert.equal("forbidden", err.condition)

    assert.is_true(carol_svc:unsubscribe("whitelisted"))
    assert.same({}, assert(carol_svc:subscriptions()))
    assert.same({}, assert(svc:node_subscriptions("whitelisted")))

    -- removing the affiliation shuts carol out again
    assert.is_true(svc:set_affiliations("whitelisted", { ["carol@localhost"] = "none" }))
    sub, err = carol_svc:subscribe("whitelisted")
    assert.is_nil(sub)
    assert.equal("forbidden", err.condition)

    -- the user's own affiliations (XEP-0060 5.7) are not implemented by Prosody 0.12
    local affs
    affs, err = svc:affiliations()
    assert.is_nil(affs)
    assert.equal("service-unavailable", err.condition)
    assert.is_true(svc:delete("whitelisted"))
  end)

  it("sets affiliations from a map or a list, in one request, and checks them before sending", function()
    assert(svc:create("affs", { access_model = "whitelist", publish_model = "publishers" }))
    -- the list form, JIDs normalized (the domain lowercased)
    assert.is_true(svc:set_affiliations("affs", {
      { jid = "carol@LOCALHOST", affiliation = "publisher" },
      { jid = "dave@localhost", affiliation = "member" },
    }))
    assert.same({
      { jid = "carol@localhost", affiliation = "publisher" },
      { jid = "dave@localhost", affiliation = "member" },
      { jid = "owner@localhost", affiliation = "owner" },
    }, assert(svc:node_affiliations("affs")))
    -- an empty change is no request at all
    assert.is_true(svc:set_affiliations("affs", {}))

    -- mistakes raise, and nothing is sent (the affiliations stay as they were)
    local function raises(changes, text)
      local ok, err = pcall(svc.set_affiliations, svc, "affs", changes)
      assert.is_false(ok)
      assert.truthy(tostring(err):find(text, 1, true), tostring(err))
    end
    raises({ ["carol@localhost"] = "admin" }, "'admin' (for carol@localhost) is not an affiliation")
    raises({ ["carol@localhost/spec"] = "member" }, "carol@localhost/spec is a full JID")
    raises({ ["@localhost"] = "member" }, "not a valid JID: @localhost")
    raises({ { jid = "carol@localhost", affiliation = "member" }, { jid = "carol@LocalHost", affiliation = "none" } },
      "carol@localhost is given twice")
    raises({ { jid = "carol@localhost", affiliation = "member" }, ["dave@localhost"] = "none" }, "not both")
    raises({ "carol@localhost" }, "entry 1 is a string")
    raises("carol@localhost", "set_affiliations expects")
    -- Prosody would let the owner demote itself and lose the node (servers_spec pins that)
    raises({ ["owner@localhost"] = "member" }, "refusing to make owner@localhost, the account sending the request, 'member'")
    assert.is_true(svc:set_affiliations("affs", { ["owner@localhost"] = "owner" }))
    assert.same({
      { jid = "carol@localhost", affiliation = "publisher" },
      { jid = "dave@localhost", affiliation = "member" },
      { jid = "owner@localhost", affiliation = "owner" },
    }, assert(svc:node_affiliations("affs")))

    -- "none" removes
    assert.is_true(svc:set_affiliations("affs", { ["carol@localhost"] = "none", ["dave@localhost"] = "none" }))
    assert.same({ { jid = "owner@localhost", affiliation = "owner" } }, assert(svc:node_affiliations("affs")))

    -- a non-owner is refused by the service
    local ok, err = bob_svc:set_affiliations("affs", { ["bob@localhost"] = "owner" })
    assert.is_nil(ok)
    assert.equal("forbidden", err.condition)
    assert.truthy(err.text:find("set affiliations of node 'affs' at " .. server.pubsub, 1, true))
    assert.is_true(svc:delete("affs"))
  end)

  it("reads a node's affiliations strictly: an entry without a JID makes the reply malformed", function()
    local fake = pubsub.service(bob, mallory.jid)
    local reply = { { jid = "Zed@Example.ORG", affiliation = "member" }, { jid = "amy@example.org", affiliation = "owner" } }
    local h = mallory:on("iq", { ns = pubsub.NS_OWNER }, function()
      local ps = xml.element("pubsub", { xmlns = pubsub.NS_OWNER }):tag("affiliations", { node = "n" })
      for _, a in ipairs(reply) do ps:tag("affiliation", a):up() end
      return ps:reset()
    end)
    -- sorted by JID, the domain lowercased (the localpart as the service wrote it)
    assert.same({ { jid = "Zed@example.org", affiliation = "member" }, { jid = "amy@example.org", affiliation = "owner" } },
      assert(fake:node_affiliations("n")))
    reply[#reply + 1] = { affiliation = "owner" }
    local list, err = fake:node_affiliations("n")
    assert.is_nil(list)
    assert.equal("undefined-condition", err.condition)
    assert.truthy(err.text:find("without jid or affiliation", 1, true), err.text)
    h.remove()
  end)

  it("pins a Prosody 0.12.3 bug: listing all subscriptions after a subscribed node was deleted never answers",
    function()
    -- mod_pubsub's handler raises (util/pubsub.lua:733: nodes[subscribed_node] is nil, the deleted
    -- node stays in the subscriber's index) and sends no reply. Listing one node still works.
    local dave <close> = connect(server, "dave", "pw-dave")
    local quick = pubsub.service(dave, server.pubsub, { timeout = 0.3 })
    assert(svc:create("short-lived"))
    assert(quick:subscribe("short-lived"))
    assert.equal(1, #assert(quick:subscriptions()))
    assert.is_true(svc:delete("short-lived"))
    local list, err = quick:subscriptions()
    assert.is_nil(list)
    assert.equal("remote-server-timeout", err.condition)
    assert(svc:create("still-fine"))
    assert.same({}, assert(quick:subscriptions("still-fine")))
    assert.is_true(svc:delete("still-fine"))
  end)

  it("lists nodes, creates instant nodes, reads the default configuration", function()
    local name = assert(svc:create())
    assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+$", name)
    assert(svc:create("listed"))
    local nodes = assert(svc:nodes())
    table.sort(nodes)
    local expected = { "listed", name }
    table.sort(expected)
    assert.same(expected, nodes)
    local default = assert(svc:default_config())
    assert.equal("open", default.access_model)
    assert.is_true(default.persist_items)
    assert.is_true(svc:delete(name))
    assert.is_true(svc:delete("listed"))
  end)

  it("returns the stanza error and the pubsub#errors condition of refused requests", function()
    assert(svc:create("errors"))
    local function fails(condition, pubsub_condition, ok, err)
      assert.is_nil(ok)
      assert.equal(condition, err.condition)
      assert.equal(pubsub_condition, err.pubsub_condition)
      assert.matches("^" .. condition:gsub("%-", "%%-") .. ": ", tostring(err))
      return err
    end
    -- publish to a node that does not exist
    local err = fails("item-not-found", nil, svc:publish("missing", nil, posture("x", 1)))
    assert.equal("cancel", err.type)
    assert.matches("publish to node 'missing' at pubsub.localhost", err.text, 1, true)
    -- create one that exists
    fails("conflict", nil, svc:create("errors"))
    -- create without being an admin
    err = fails("forbidden", nil, bob_svc:create("bobs-node"))
    assert.equal("auth", err.type)
    -- a malformed subscriber JID
    err = fails("bad-request", "invalid-jid", bob_svc:subscribe("errors", nil, "@nobody"))
    assert.equal("modify", err.type)
    -- subscribing someone else
    fails("forbidden", nil, bob_svc:subscribe("errors", nil, "owner@localhost"))
    -- unsubscribing when not subscribed
    fails("unexpected-request", "not-subscribed", bob_svc:unsubscribe("errors"))
    -- items of a node that keeps none (Prosody names the condition "persistent-items")
    assert(svc:create("transient", { persist_items = false }))
    fails("feature-not-implemented", "persistent-items", svc:items("transient"))
    -- retract of an item that is not there, purge and delete of a missing node
    fails("item-not-found", nil, svc:retract("errors", "nope", true))
    fails("item-not-found", nil, svc:purge("missing"))
    fails("item-not-found", nil, svc:delete("missing"))
    -- a bad configuration value
    fails("bad-request", nil, svc:configure("errors", { max_items = "lots" }))
    assert.is_true(svc:delete("errors"))
    assert.is_true(svc:delete("transient"))

    -- programmer errors raise
    assert.has_error(function() svc:publish("", nil, posture("x", 1)) end)
    assert.has_error(function() svc:publish("errors", nil, "<not-an-element/>") end)
    assert.has_error(function() svc:create("x", { max_items = print }) end)
    assert.has_error(function() svc:create("x", { "positional" }) end)
    assert.has_error(function() svc:items("errors", { max = 0 }) end)
    assert.has_error(function() pubsub.service(owner, "not a jid") end)
  end)

  it("times out when the service does not answer", function()
    -- mallory's connection plays a service that never answers
    local h = mallory:on("iq", { ns = pubsub.NS }, function() task.sleep(0.5); return true end)
    local silent = pubsub.service(owner, mallory.jid, { timeout = 0.2 })
    local started = time.monotonic()
    local ok, err = silent:create("x")
    assert.is_nil(ok)
    assert.equal("remote-server-timeout", err.condition)
    assert.matches("create node 'x' at " .. mallory.jid, err.text, 1, true)
    assert.is_true(time.monotonic() - started < 1)
    h.remove()
  end)

  it("delivers to on_event handlers, each as a task, until removed", function()
    assert(svc:create("handlers", { persist_items = false }))
    local seen, seen_any, done = {}, {}, require("sacm.sync").event()
    local h1 = bob_svc:on_event("handlers", function(ev)
      task.sleep(0.001) -- a handler may wait
      seen[#seen + 1] = ev.type .. ":" .. (ev.items and ev.items[1] and ev.items[1].id or "-")
      if #seen == 3 then done:set() end
    end)
    local h2 = pubsub.on_event(bob, { service = server.pubsub }, function(ev) seen_any[#seen_any + 1] = ev.node end)
    assert(bob_svc:subscribe("handlers"))
    for i = 1, 3 do assert(svc:publish("handlers", "h" .. i, posture("h", i))) end
    assert.is_true(done:wait(5))
    table.sort(seen)
    assert.same({ "items:h1", "items:h2", "items:h3" }, seen)
    assert.same({ "handlers", "handlers", "handlers" }, seen_any)
    h1.remove()
    h2.remove()
    assert(svc:publish("handlers", "h4", posture("h", 4)))
    assert(bob:ping()) -- the notification went out before the ping's answer
    task.sleep(0.05)
    assert.equal(3, #seen)
    assert.equal(3, #seen_any)
    assert.is_true(svc:delete("handlers"))
  end)

  it("ignores and logs notifications forged by another JID", function()
    assert(svc:create("forged", { persist_items = false }))
    local events = bob_svc:events("forged")
    local called = {}
    local h = bob_svc:on_event("forged", function(ev) called[#called + 1] = ev.items[1].id end)
    assert(bob_svc:subscribe("forged"))
    local before = pubsub.stats(bob)
    local warnings = capture_warnings(function()
      -- mallory sends bob a perfect-looking notification from her own JID
      local forged = st.message({ to = bob.jid, type = "headline" })
        :tag("event", { xmlns = pubsub.NS_EVENT })
          :tag("items", { node = "forged" })
            :tag("item", { id = "evil" }):add(posture("evil", 666))
      assert(mallory:send(forged))
      assert(mallory:ping()) -- the server has routed it by now
      -- then the real service publishes
      assert(svc:publish("forged", "good", posture("good", 1)))
      local ev = assert(events:get(5))
      assert.same({ "good" }, ids(ev.items))
      assert.equal(server.pubsub, ev.from)
    end)
    local after = pubsub.stats(bob)
    assert.equal(before.rejected + 1, after.rejected)
    assert.equal(before.accepted + 1, after.accepted)
    assert.same({ "good" }, called)
    assert.equal(0, #events)
    local logged = false
    for _, w in ipairs(warnings) do
      if w:find(mallory.jid, 1, true) and w:find("ignored a pubsub notification", 1, true) then logged = true end
    end
    assert.is_true(logged, "no warning naming " .. mallory.jid .. " in: " .. table.concat(warnings, " | "))
    h.remove()
    events:close()
    assert.is_true(svc:delete("forged"))
  end)

  it("reads XEP-0060 shapes Prosody does not send, from a fake service", function()
    -- mallory's connection plays a pubsub service; bob's service object points at it
    local fake = pubsub.service(bob, mallory.jid)
    local requests = {}
    local h = mallory:on("iq", { ns = pubsub.NS }, function(s)
      local ps = s:child("pubsub", pubsub.NS)
      local action = ps and st.payload(ps)
      requests[#requests + 1] = action.name
      if action.name == "affiliations" then
        return xml.element("pubsub", { xmlns = pubsub.NS }):tag("affiliations")
          :tag("affiliation", { node = "a", affiliation = "owner" }):up()
          :tag("affiliation", { node = "b", affiliation = "publisher" }):reset()
      elseif action.name == "subscribe" then
        local opts = ps:child("options", pubsub.NS)
        local form = pubsub.parse_form(opts:child("x", pubsub.NS_DATA))
        assert(form.form_type == pubsub.FORM_SUBSCRIBE_OPTIONS and form.values["pubsub#deliver"] == true)
        return xml.element("pubsub", { xmlns = pubsub.NS })
          :tag("subscription", { node = action.attr.node, jid = action.attr.jid, subid = "sub-42",
            subscription = "pending" })
            :tag("subscribe-options"):tag("required"):reset()
      elseif action.name == "publish" then
        return true -- XEP-0060 7.1.2: an empty result when the publisher chose the id
      end
      return nil, require("sacm.error").new("feature-not-implemented", "no",
        { app = xml.element("unsupported", { xmlns = pubsub.NS_ERRORS, feature = "retract-items" }) })
    end)

    assert.same({ { node = "a", affiliation = "owner" }, { node = "b", affiliation = "publisher" } },
      assert(fake:affiliations()))
    local sub = assert(fake:subscribe("a", { deliver = true }))
    assert.same({ node = "a", jid = bob.jid, subid = "sub-42", state = "pending", options_required = true }, sub)
    assert.equal("mine", fake:publish("a", "mine", posture("p", 1)))
    local ok, err = fake:retract("a", "mine")
    assert.is_nil(ok)
    assert.equal("feature-not-implemented", err.condition)
    assert.equal("unsupported", err.pubsub_condition)
    assert.equal("retract-items", err.feature)
    assert.same({ "affiliations", "subscribe", "publish", "retract" }, requests)
    h.remove()

    -- notifications: configuration with a form, subscription state, items with SHIM SubIDs and a
    -- delay, a mixed items/retract, a delete with redirect; and one with nothing we know
    local events = fake:events()
    local function notify(build)
      local m = st.message({ to = bob.jid })
      build(m:tag("event", { xmlns = pubsub.NS_EVENT }))
      assert(mallory:send(m:reset()))
    end
    notify(function(e)
      e:tag("configuration", { node = "a" })
        :tag("x", { xmlns = pubsub.NS_DATA, type = "result" })
          :tag("field", { var = "FORM_TYPE", type = "hidden" }):tag("value"):text(pubsub.FORM_NODE_CONFIG):up():up()
          :tag("field", { var = "pubsub#max_items" }):tag("value"):text("7"):up():up()
          :tag("field", { var = "pubsub#persist_items" }):tag("value"):text("0"):up():up()
          :tag("field", { var = "pubsub#children", type = "text-multi" })
            :tag("value"):text("x"):up():tag("value"):text("y")
    end)
    notify(function(e)
      e:tag("subscription", { node = "a", jid = bob.jid, subid = "sub-42", subscription = "subscribed" })
    end)
    notify(function(e)
      e:tag("items", { node = "a" }):tag("item", { id = "i1" }):add(posture("p", 1))
      e:reset():tag("headers", { xmlns = pubsub.NS_SHIM })
        :tag("header", { name = "SubID" }):text("sub-42"):up()
        :tag("header", { name = "SubID" }):text("sub-43"):up():up()
        :tag("delay", { xmlns = pubsub.NS_DELAY, stamp = "2024-05-01T10:00:00Z" })
    end)
    notify(function(e)
      e:tag("items", { node = "a" }):tag("item", { id = "i2" }):up():tag("retract", { id = "i1" })
    end)
    local warnings = capture_warnings(function()
      notify(function(e) e:tag("unknown-thing", { node = "a" }) end)
      assert(mallory:ping())
      task.sleep(0.02)
    end)
    assert.equal(1, #warnings)
    assert.matches("ignored a pubsub notification from " .. mallory.jid .. " that could not be read",
      warnings[1], 1, true)
    notify(function(e) e:tag("delete", { node = "a" }):tag("redirect", { uri = "xmpp:svc?;node=b" }) end)
    assert(mallory:ping())

    local ev = assert(events:get(5))
    assert.equal("configuration", ev.type)
    assert.same({ max_items = 7, persist_items = false, children = { "x", "y" } }, ev.config)
    ev = assert(events:get(5))
    assert.equal("subscription", ev.type)
    assert.same({ bob.jid, "sub-42", "subscribed" }, { ev.jid, ev.subid, ev.state })
    ev = assert(events:get(5))
    assert.equal("items", ev.type)
    assert.same({ "i1" }, ids(ev.items))
    assert.equal("p", ev.items[1].payload.attr.host)
    assert.same({ "sub-42", "sub-43" }, ev.subids)
    assert.equal("2024-05-01T10:00:00Z", ev.delay)
    ev = assert(events:get(5))
    assert.equal("items", ev.type)
    assert.same({ "i2" }, ids(ev.items))
    assert.is_nil(ev.items[1].payload)
    assert.same({ "i1" }, ev.retracts)
    ev = assert(events:get(5))
    assert.equal("delete", ev.type)
    assert.equal("xmpp:svc?;node=b", ev.redirect)
    -- a stream of every node does not end on one node's delete
    assert.is_false(events.closed)
    assert.equal(1, pubsub.stats(bob).malformed)
    events:close()
    local none, closed = events:get()
    assert.is_nil(none)
    assert.equal("closed", closed.condition)
  end)

  it("closes a stream left by break in a for loop, and drops events beyond its limit", function()
    assert(svc:create("looped", { persist_items = false }))
    assert(bob_svc:subscribe("looped"))
    local publisher = task.spawn(function()
      for i = 1, 3 do assert(svc:publish("looped", "l" .. i, posture("l", i))) end
    end)
    -- what `for ev in bob_svc:events("looped") do` receives, kept to look at afterwards
    local f, s, c, closing = bob_svc:events("looped")
    local got = {}
    for ev in f, s, c, closing do
      got[#got + 1] = ev.items[1].id
      if #got == 2 then break end
    end
    assert.same({ "l1", "l2" }, got)
    assert.is_true(f.closed)
    publisher:await()
    assert(bob:ping())

    local stream = bob_svc:events("looped", { limit = 2 })
    local warnings = capture_warnings(function()
      for i = 4, 8 do assert(svc:publish("looped", "l" .. i, posture("l", i))) end
      assert(bob:ping())
      task.sleep(0.05)
    end)
    assert.same({ "events of pubsub.localhost node 'looped': the consumer is 2 events behind; dropped 1 so far" },
      warnings)
    assert.equal(2, #stream)
    assert.equal(3, stream.dropped)
    assert.same({ "l4" }, ids(assert(stream:get(1)).items))
    assert.same({ "l5" }, ids(assert(stream:get(1)).items))
    local none, err = stream:get(0.05)
    assert.is_nil(none)
    assert.equal("timeout", err.condition)
    stream:close()
    assert.is_true(svc:delete("looped"))
  end)
end)

-- Within a describe: a server on which owner may create nodes, with owner and bob connected;
-- the returned table holds server, owner and bob from setup on.
local function owner_and_bob()
  local env = {}
  setup(function()
    env.server = prosody.start({ admins = { "owner" }, users = { owner = "pw-owner", bob = "pw-bob" } })
    env.owner = connect(env.server, "owner", "pw-owner")
    env.bob = connect(env.server, "bob", "pw-bob")
  end)
  teardown(function()
    for _, c in ipairs({ env.owner, env.bob }) do if c then c:close() end end
    if env.server then env.server:stop() end
  end)
  return env
end

describe("sacm.xmpp.pubsub throughput against Prosody #e2e", function()
  local env = owner_and_bob()

  -- Publishes `count` items with `window` publishes in flight and waits until the subscriber got
  -- them all; returns seconds and what arrived.
  local function run(node, count, window)
    local server, owner, bob = env.server, env.owner, env.bob
    local svc, bob_svc = pubsub.service(owner, server.pubsub), pubsub.service(bob, server.pubsub)
    assert(svc:create(node, { persist_items = false, max_items = 1 }))
    local events = bob_svc:events(node)
    assert(bob_svc:subscribe(node))
    local payload = xml.element("posture", { xmlns = NS_POSTURE, host = "web1" }):text(("x"):rep(150))
    local started = time.monotonic()
    local next_seq, returned = 0, {}
    local workers = {}
    for w = 1, window do
      workers[w] = task.spawn(function()
        while next_seq < count do
          next_seq = next_seq + 1
          local n = next_seq
          local p = payload:clone()
          p.attr.seq = tostring(n)
          returned[n] = assert(svc:publish(node, ("item-%03d"):format(n), p))
        end
      end)
    end
    local arrived = {}
    for _ = 1, count do
      local ev = assert(events:get(10))
      arrived[#arrived + 1] = { id = ev.items[1].id, seq = tonumber(ev.items[1].payload.attr.seq) }
    end
    local elapsed = time.monotonic() - started
    for _, r in ipairs(task.all(workers, 10)) do assert(r.ok, r.err) end
    events:close()
    assert.is_true(svc:delete(node))
    return elapsed, arrived, returned
  end

  it("delivers 200 items published with 16 in flight, in order", function()
    local elapsed, arrived, returned = run("bulk", 200, 16)
    assert.equal(200, #arrived)
    for n = 1, 200 do
      assert.equal(("item-%03d"):format(n), arrived[n].id)
      assert.equal(n, arrived[n].seq)
      assert.equal(arrived[n].id, returned[n])
    end
    local serial = run("serial", 200, 1)
    io.stderr:write(("\n[pubsub] 200 items to a subscriber: %.0f ms with 16 in flight (%.0f items/s), "
      .. "%.0f ms with 1 in flight (%.0f items/s)\n"):format(
      elapsed * 1000, 200 / elapsed, serial * 1000, 200 / serial))
    assert.is_true(elapsed < 10)
  end)
end)

describe("sacm.xmpp.pubsub across a server restart #e2e", function()
  local env = owner_and_bob()

  it("keeps nodes, items and subscriptions; a publish with an id made during the outage is resent", function()
    local server, owner, bob = env.server, env.owner, env.bob
    local sync = require "sacm.sync"
    local svc = pubsub.service(owner, server.pubsub, { resend = true, timeout = 20 })
    local bob_svc = pubsub.service(bob, server.pubsub)
    assert(svc:create("durable", { persist_items = true, max_items = 10 }))
    local events = bob_svc:events("durable")
    assert(bob_svc:subscribe("durable"))
    assert(svc:publish("durable", "before", posture("web1", 1)))
    assert.same({ "before" }, ids(assert(events:get(5)).items))

    local owner_down, owner_up, bob_up = sync.event(), sync.event(), sync.event()
    local h1 = owner:on("status", function(event)
      if event == "disconnected" then owner_down:set() elseif event == "reconnected" then owner_up:set() end
    end)
    local h2 = bob:on("status", function(event) if event == "reconnected" then bob_up:set() end end)

    -- the server hangs with two publishes in flight, then crashes
    assert.is_true(assert(require("sacm.proc").run({ "kill", "-STOP", tostring(server.pid) })).ok)
    local plain = pubsub.service(owner, server.pubsub)
    local during = task.spawn(function() return svc:publish("durable", "during", posture("web2", 2)) end)
    local lost = task.spawn(function() return plain:publish("durable", "lost", posture("x", 0)) end)
    task.sleep(0.05)
    server:kill()
    assert.is_true(owner_down:wait(5))
    -- the one without resend fails at once; the other waits for the server to come back
    local none, err = lost:await(5)
    assert.is_nil(none)
    assert.equal("connection-lost", err.condition)
    assert.matches("publish to node 'durable' at pubsub.localhost", err.text, 1, true)
    assert.is_false(during:done())
    server:restart()
    assert.equal("during", during:await(15))
    assert.is_true(owner_up:wait(10))
    assert.is_true(bob_up:wait(10))

    -- the node, its items and bob's subscription survived; bob's stream goes on
    assert.same({ "before", "during" }, ids(assert(svc:items("durable"))))
    assert.same({ { node = "durable", jid = bob.jid, state = "subscribed" } },
      assert(svc:node_subscriptions("durable")))
    assert(svc:publish("durable", "after", posture("web3", 3)))
    local ev = assert(events:get(5))
    if ev.items[1].id == "during" then ev = assert(events:get(5)) end -- if bob was back in time for it
    assert.same({ "after" }, ids(ev.items))
    h1.remove()
    h2.remove()
    events:close()
    assert.is_true(svc:delete("durable"))
  end)
end)
