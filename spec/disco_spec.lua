-- sacm.xmpp.disco (XEP-0030, XEP-0128) against a real Prosody: asking the server and its pubsub
-- component, and our own provider answering another connection.
local prosody = require "support.prosody"
local xmpp = require "sacm.xmpp"
local disco = require "sacm.xmpp.disco"
local xml = require "sacm.xml"
local st = require "sacm.xmpp.stanza"

local function connect(server, user, resource)
  return assert(xmpp.connect({
    jid = server:jid(user) .. "/" .. resource, password = "pw-" .. user,
    host = server.host, port = server.port, cafile = server.ca_file, reconnect = false,
  }))
end

local function names(list, field)
  local out = {}
  for i, v in ipairs(list) do out[i] = v[field] end
  table.sort(out)
  return out
end

describe("sacm.xmpp.disco #e2e", function()
  local server, alice, bob

  lazy_setup(function()
    server = prosody.start({ users = { alice = "pw-alice", bob = "pw-bob" } })
    alice = connect(server, "alice", "collector")
    bob = connect(server, "bob", "orchestrator")
  end)

  lazy_teardown(function()
    if alice then alice:close() end
    if bob then bob:close() end
    if server then server:stop() end
  end)

  describe("asking others", function()
    it("gets the server's identities and features", function()
      local info = assert(disco.info(bob, server.domain))
      assert.same({ { category = "server", type = "im", name = "Prosody" } }, info.identities)
      for _, f in ipairs({ disco.NS_INFO, disco.NS_ITEMS, "urn:xmpp:ping", "jabber:iq:roster" }) do
        assert.is_true(disco.has_feature(info, f), f)
        assert.is_true(info.features[f], f)
      end
      assert.is_false(disco.has_feature(info, "urn:example:nothing"))
      -- the features also come as a list, in the order the server sent them
      assert.is_true(#info.features >= 4)
      for _, f in ipairs(info.features) do assert.is_true(info.features[f]) end
      assert.same({}, info.forms)
      assert.is_nil(info.node)
    end)

    it("lists the server's items: the pubsub component is there", function()
      local items = assert(disco.items(bob, server.domain))
      assert.same({ server.pubsub }, names(items, "jid"))
      local info = assert(disco.info(bob, server.pubsub))
      assert.equal("pubsub", info.identities[1].category)
      assert.equal("service", info.identities[1].type)
      assert.is_true(disco.has_feature(info, "http://jabber.org/protocol/pubsub"))
    end)

    it("returns the error of an unknown node or an absent entity", function()
      local info, err = disco.info(bob, server.domain, "no-such-node")
      assert.is_nil(info)
      assert.equal("item-not-found", err.condition)
      info, err = disco.info(bob, server:jid("alice") .. "/nobody-here")
      assert.is_nil(info)
      assert.equal("service-unavailable", err.condition)
      local items
      items, err = disco.items(bob, "unknown.invalid")
      assert.is_nil(items)
      assert.is_truthy(err.condition)
    end)

    it("times out with remote-server-timeout", function()
      -- alice's answer for this node waits longer than bob does
      local p = disco.provider(alice)
      local gate = require("sacm.sync").event()
      p:add_node("slow", { info = function() gate:wait(1); return { identities = {}, features = {} } end })
      local info, err = disco.info(bob, alice.jid, "slow", 0.1)
      assert.is_nil(info)
      assert.equal("remote-server-timeout", err.condition)
      gate:set()
      p:remove_node("slow")
    end)

    it("rejects bad arguments", function()
      assert.has_error(function() disco.info(bob) end)
      assert.has_error(function() disco.info({}, "x") end)
      assert.has_error(function() disco.items(bob, "x", 42) end)
    end)
  end)

  describe("answering others (provider)", function()
    local p

    lazy_setup(function()
      p = disco.provider(alice)
    end)

    it("is one provider per connection", function()
      assert.equal(p, disco.provider(alice))
      assert.are_not.equal(p, disco.provider(bob))
      assert.equal(p, disco.existing(alice))
    end)

    it("answers the default identity and the mandatory features", function()
      local info = assert(disco.info(bob, alice.jid))
      assert.same({ { category = "client", type = "bot", name = "sacmrun" } }, info.identities)
      assert.same({ disco.NS_INFO, disco.NS_ITEMS, "urn:xmpp:ping" }, { table.unpack(info.features) })
      local items = assert(disco.items(bob, alice.jid))
      assert.same({}, items)
    end)

    it("answers the identities and features it was given, and sees changes on the next query", function()
      local calls = {}
      local h = p:on_change(function(_, what) calls[#calls + 1] = what end)
      p:add_identity("client", "bot", "SACM collector")
      p:add_identity("client", "bot", "SACM-Kollektor", "de")
      p:add_feature("urn:example:sacm:collector")
      p:add_feature("urn:example:sacm:collector") -- again: no change
      local info = assert(disco.info(bob, alice.jid))
      assert.same({
        { category = "client", type = "bot", name = "SACM collector" },
        { category = "client", type = "bot", name = "SACM-Kollektor", lang = "de" },
      }, info.identities)
      assert.is_true(disco.has_feature(info, "urn:example:sacm:collector"))
      assert.same({ "identity", "identity", "feature" }, calls)

      assert.is_true(p:remove_feature("urn:example:sacm:collector"))
      assert.is_false(p:remove_feature("urn:example:sacm:collector"))
      p:add_feature("urn:example:sacm:evaluator")
      info = assert(disco.info(bob, alice.jid))
      assert.is_false(disco.has_feature(info, "urn:example:sacm:collector"))
      assert.is_true(disco.has_feature(info, "urn:example:sacm:evaluator"))
      assert.same({ "identity", "identity", "feature", "feature", "feature" }, calls)
      h.remove()
      p:remove_feature("urn:example:sacm:evaluator")
      assert.equal(5, #calls)
      -- the disco features cannot be removed
      assert.has_error(function() p:remove_feature(disco.NS_INFO) end)
    end)

    it("answers nodes with their own info and items, item-not-found for others", function()
      p:add_node("http://jabber.org/protocol/commands", {
        name = "Commands",
        items = function(req)
          assert.equal(bob.jid, req.attr.from)
          return { { node = "collect", name = "Collect posture" }, { node = "status", name = "Status" } }
        end,
      })
      p:add_node("collect", {
        info = function()
          return {
            identities = { { category = "automation", type = "command-node", name = "Collect posture" } },
            features = { "http://jabber.org/protocol/commands", "jabber:x:data" },
          }
        end,
      })
      local items = assert(disco.items(bob, alice.jid, "http://jabber.org/protocol/commands"))
      assert.same({
        { jid = alice.jid, node = "collect", name = "Collect posture" },
        { jid = alice.jid, node = "status", name = "Status" },
      }, items)
      local info = assert(disco.info(bob, alice.jid, "collect"))
      assert.equal("collect", info.node)
      assert.same({ { category = "automation", type = "command-node", name = "Collect posture" } }, info.identities)
      assert.is_true(disco.has_feature(info, "jabber:x:data"))
      assert.is_false(disco.has_feature(info, disco.NS_INFO) and disco.has_feature(info, "urn:xmpp:ping"))
      -- a node without info: a hierarchy branch
      info = assert(disco.info(bob, alice.jid, "http://jabber.org/protocol/commands"))
      assert.same({ { category = "hierarchy", type = "branch", name = "Commands" } }, info.identities)
      -- unknown nodes
      local none, err = disco.info(bob, alice.jid, "nope")
      assert.is_nil(none)
      assert.equal("item-not-found", err.condition)
      none, err = disco.items(bob, alice.jid, "nope")
      assert.is_nil(none)
      assert.equal("item-not-found", err.condition)
      -- a node function can refuse
      p:add_node("secret", { info = function() return nil, require("sacm.error").new("forbidden", "not for you") end })
      none, err = disco.info(bob, alice.jid, "secret")
      assert.is_nil(none)
      assert.equal("forbidden", err.condition)
      assert.equal("not for you", err.text)
      -- and removing a node makes it unknown
      assert.is_true(p:remove_node("collect"))
      none, err = disco.info(bob, alice.jid, "collect")
      assert.is_nil(none)
      assert.equal("item-not-found", err.condition)
      p:remove_node("secret")
      p:remove_node("http://jabber.org/protocol/commands")
    end)

    it("answers its own items", function()
      p:add_item({ node = "urn:example:inventory", name = "Inventory" })
      p:add_item({ jid = server.pubsub, node = "posture", name = "Posture" })
      local items = assert(disco.items(bob, alice.jid))
      assert.same({
        { jid = alice.jid, node = "urn:example:inventory", name = "Inventory" },
        { jid = server.pubsub, node = "posture", name = "Posture" },
      }, items)
      assert.is_true(p:remove_item(alice.jid, "urn:example:inventory"))
      assert.is_true(p:remove_item(server.pubsub, "posture"))
      assert.same({}, assert(disco.items(bob, alice.jid)))
    end)

    it("answers XEP-0128 extension forms", function()
      local form = xml.element("x", { xmlns = disco.NS_DATA, type = "result" })
        :tag("field", { var = "FORM_TYPE", type = "hidden" }):tag("value"):text("urn:xmpp:dataforms:softwareinfo"):up():up()
        :tag("field", { var = "software" }):tag("value"):text("sacmrun"):up():up()
        :tag("field", { var = "os" }):tag("value"):text("Debian"):up():up()
      p:add_extension(form)
      p:add_extension({ form_type = "urn:example:sacm:role", fields = { role = "collector", tags = { "linux", "dmz" } } })
      local info = assert(disco.info(bob, alice.jid))
      assert.equal(2, #info.forms)
      local sw = assert(disco.extension(info, "urn:xmpp:dataforms:softwareinfo"))
      assert.same({ FORM_TYPE = { "urn:xmpp:dataforms:softwareinfo" }, software = { "sacmrun" }, os = { "Debian" } },
        disco.form_values(sw))
      local role = assert(disco.extension(info, "urn:example:sacm:role"))
      assert.same({ "linux", "dmz" }, disco.form_values(role).tags)
      -- same FORM_TYPE replaces
      p:add_extension({ form_type = "urn:example:sacm:role", fields = { role = "evaluator" } })
      info = assert(disco.info(bob, alice.jid))
      assert.equal(2, #info.forms)
      assert.same({ "evaluator" }, disco.form_values(disco.extension(info, "urn:example:sacm:role")).role)
      assert.is_true(p:remove_extension("urn:example:sacm:role"))
      assert.is_true(p:remove_extension("urn:xmpp:dataforms:softwareinfo"))
      assert.same({}, assert(disco.info(bob, alice.jid)).forms)
      -- forms XEP-0115 could not hash are refused
      assert.has_error(function() p:add_extension(xml.element("x", { xmlns = disco.NS_DATA })) end)
      assert.has_error(function()
        p:add_extension(xml.element("x", { xmlns = disco.NS_DATA }):tag("field", { var = "FORM_TYPE" }):tag("value"):text("u"))
      end)
    end)

    it("answers aliases exactly like the entity", function()
      p:add_alias("https://sacmrun.example/caps#abc")
      local info = assert(disco.info(bob, alice.jid, "https://sacmrun.example/caps#abc"))
      local root = assert(disco.info(bob, alice.jid))
      assert.equal("https://sacmrun.example/caps#abc", info.node)
      assert.same(root.identities, info.identities)
      assert.same(root.features, info.features)
      p:remove_node("https://sacmrun.example/caps#abc")
    end)

    it("puts the node attribute on answers for a node", function()
      p:add_node("n1", { info = { identities = { { category = "hierarchy", type = "leaf" } }, features = { "f" } } })
      local reply = assert(bob:iq(st.iq({ type = "get", to = alice.jid })
        :tag("query", { xmlns = disco.NS_INFO, node = "n1" }):up()))
      assert.equal("n1", reply:find("query@node"))
      p:remove_node("n1")
    end)

    it("can restrict who may ask", function()
      p:set_access(function(from, node, kind)
        return from ~= bob.jid or kind == "items"
      end)
      local info, err = disco.info(bob, alice.jid)
      assert.is_nil(info)
      assert.equal("service-unavailable", err.condition)
      assert.truthy(disco.items(bob, alice.jid))
      p:set_access(nil)
      assert.truthy(disco.info(bob, alice.jid))
    end)

    it("counts requests, and close() stops answering", function()
      local before = p.stats.info
      assert.truthy(disco.info(bob, alice.jid))
      assert.equal(before + 1, p.stats.info)
      p:close()
      local info, err = disco.info(bob, alice.jid)
      assert.is_nil(info)
      assert.equal("service-unavailable", err.condition)
      assert.is_nil(disco.existing(alice))
      local fresh = disco.provider(alice)
      assert.are_not.equal(p, fresh)
      assert.truthy(disco.info(bob, alice.jid))
    end)
  end)
end)
