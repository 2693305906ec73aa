-- sacm.xmpp.caps (XEP-0115): the verification string against the XEP's own examples, then advertising
-- and learning capabilities between real connections through a real Prosody.
local prosody = require "support.prosody"
local xmpp = require "sacm.xmpp"
local disco = require "sacm.xmpp.disco"
local caps = require "sacm.xmpp.caps"
local xml = require "sacm.xml"
local st = require "sacm.xmpp.stanza"
local task = require "sacm.task"

local COLLECTOR = "urn:example:sacm:collector"
local EVALUATOR = "urn:example:sacm:evaluator"
local REPOSITORY = "urn:example:sacm:repository"
local REMEDIATION = "urn:example:sacm:remediation"

-- XEP-0115 5.2, "Simple Generation Example"
local SIMPLE = [[
<query xmlns='http://jabber.org/protocol/disco#info'
       node='http://code.google.com/p/exodus#QgayPKawpkPSDYmwT/WM94uAlu0='>
  <identity category='client' name='Exodus 0.9.1' type='pc'/>
  <feature var='http://jabber.org/protocol/caps'/>
  <feature var='http://jabber.org/protocol/disco#info'/>
  <feature var='http://jabber.org/protocol/disco#items'/>
  <feature var='http://jabber.org/protocol/muc'/>
</query>]]
local SIMPLE_S = "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<"
  .. "http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<"

-- XEP-0115 5.3, "Complex Generation Example"
local COMPLEX = [[
<query xmlns='http://jabber.org/protocol/disco#info'
       node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>
  <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>
  <identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>
  <feature var='http://jabber.org/protocol/caps'/>
  <feature var='http://jabber.org/protocol/disco#info'/>
  <feature var='http://jabber.org/protocol/disco#items'/>
  <feature var='http://jabber.org/protocol/muc'/>
  <x xmlns='jabber:x:data' type='result'>
    <field var='FORM_TYPE' type='hidden'>
      <value>urn:xmpp:dataforms:softwareinfo</value>
    </field>
    <field var='ip_version' type='text-multi'>
      <value>ipv4</value>
      <value>ipv6</value>
    </field>
    <field var='os'>
      <value>Mac</value>
    </field>
    <field var='os_version'>
      <value>10.5.1</value>
    </field>
    <field var='software'>
      <value>Psi</value>
    </field>
    <field var='software_version'>
      <value>0.11</value>
    </field>
  </x>
</query>]]
local COMPLEX_S = "client/pc/el/Ψ 0.11<client/pc/en/Psi 0.11<http://jabber.org/protocol/caps<"
  .. "http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<"
  .. "urn:xmpp:dataforms:softwareinfo<ip_version<ipv4<ipv6<os<Mac<os_version<10.5.1<software<Psi<"
  .. "software_version<0.11<"

-- Expected warnings (a forged ver, a restart) would clutter the spec output.
local function quiet()
  local log = require "sacm.log"
  local level = log.level()
  log.level("error")
  finally(function() log.level(level) end)
end

local function connect(server, user, resource, opts)
  local o = {
    jid = server:jid(user) .. "/" .. resource, password = "pw",
    host = server.host, port = server.port, cafile = server.ca_file, reconnect = false,
  }
  for k, v in pairs(opts or {}) do o[k] = v end
  return assert(xmpp.connect(o))
end

describe("sacm.xmpp.caps verification string", function()
  it("reproduces XEP-0115 5.2 (simple)", function()
    local q = assert(xml.parse(SIMPLE))
    assert.equal(SIMPLE_S, caps.string(q))
    assert.equal("QgayPKawpkPSDYmwT/WM94uAlu0=", caps.ver(q))
    assert.is_true(caps.verify(q, "QgayPKawpkPSDYmwT/WM94uAlu0="))
    -- the same from a plain info table, features in another order
    local info = {
      identities = { { category = "client", type = "pc", name = "Exodus 0.9.1" } },
      features = { "http://jabber.org/protocol/muc", "http://jabber.org/protocol/disco#items",
                   "http://jabber.org/protocol/caps", "http://jabber.org/protocol/disco#info" },
    }
    assert.equal("QgayPKawpkPSDYmwT/WM94uAlu0=", caps.ver(info))
    -- features as a set
    local set = { identities = info.identities, features = {} }
    for _, f in ipairs(info.features) do set.features[f] = true end
    assert.equal("QgayPKawpkPSDYmwT/WM94uAlu0=", caps.ver(set))
  end)

  it("reproduces XEP-0115 5.3 (complex, with an extension form)", function()
    local q = assert(xml.parse(COMPLEX))
    assert.equal(COMPLEX_S, caps.string(q))
    assert.equal("q07IKJEyjvHSyhy//CH0CxmKi8w=", caps.ver(q))
    -- built the other way: a provider-style table with the form made by the builder, fields and
    -- values out of order
    local form = xml.element("x", { xmlns = "jabber:x:data", type = "result" })
      :tag("field", { var = "software_version" }):tag("value"):text("0.11"):up():up()
      :tag("field", { var = "ip_version", type = "text-multi" })
        :tag("value"):text("ipv6"):up():tag("value"):text("ipv4"):up():up()
      :tag("field", { var = "os" }):tag("value"):text("Mac"):up():up()
      :tag("field", { var = "FORM_TYPE", type = "hidden" }):tag("value"):text("urn:xmpp:dataforms:softwareinfo"):up():up()
      :tag("field", { var = "software" }):tag("value"):text("Psi"):up():up()
      :tag("field", { var = "os_version" }):tag("value"):text("10.5.1"):up():up()
    local info = {
      identities = {
        { category = "client", type = "pc", lang = "en", name = "Psi 0.11" },
        { category = "client", type = "pc", lang = "el", name = "Ψ 0.11" },
      },
      features = { "http://jabber.org/protocol/muc", "http://jabber.org/protocol/caps",
                   "http://jabber.org/protocol/disco#items", "http://jabber.org/protocol/disco#info" },
      forms = { form },
    }
    assert.equal(COMPLEX_S, caps.string(info))
    assert.equal("q07IKJEyjvHSyhy//CH0CxmKi8w=", caps.ver(info))
    -- other hashes
    local crypto = require "sacm.crypto"
    assert.equal(crypto.base64_encode(crypto.sha256(COMPLEX_S)), caps.ver(q, "sha-256"))
    assert.has_error(function() caps.ver(q, "md5") end)
  end)

  it("sorts byte-wise, field by field", function()
    local info = {
      identities = {
        { category = "client", type = "pc-b", name = "x" },
        { category = "client", type = "pc", name = "z" },
        { category = "client", type = "pc", name = "Z" },
        { category = "client", type = "pc", lang = "en", name = "a" },
      },
      features = { "b", "a", "B", "a-b", "a/b", "ä" },
    }
    assert.equal("client/pc//Z<client/pc//z<client/pc/en/a<client/pc-b//x<B<a<a-b<a/b<b<ä<", caps.string(info))
  end)

  it("ignores forms without a hidden FORM_TYPE", function()
    local q = assert(xml.parse(SIMPLE))
    q:add(xml.element("x", { xmlns = "jabber:x:data", type = "result" })
      :tag("field", { var = "FORM_TYPE" }):tag("value"):text("urn:x"):up():up()
      :tag("field", { var = "a" }):tag("value"):text("1"))
    q:add(xml.element("x", { xmlns = "jabber:x:data", type = "result" })
      :tag("field", { var = "a" }):tag("value"):text("1"))
    assert.equal("QgayPKawpkPSDYmwT/WM94uAlu0=", caps.ver(q))
  end)

  it("refuses ill-formed answers and wrong vers", function()
    local q = assert(xml.parse(SIMPLE))
    assert.is_false(caps.verify(q, "AAAA"))
    local dup = assert(xml.parse(SIMPLE))
    dup:add(xml.element("feature", { xmlns = disco.NS_INFO, var = "http://jabber.org/protocol/muc" }))
    -- a duplicate feature does not change the set, yet the answer is refused (XEP-0115 5.4 3.4)
    local ok, why = caps.verify(dup, caps.ver(dup))
    assert.is_false(ok)
    assert.matches("duplicate feature", why)
    local two = assert(xml.parse(COMPLEX))
    two:add(two:child("x", "jabber:x:data"):clone())
    ok, why = caps.verify(two, caps.ver(two))
    assert.is_false(ok)
    assert.matches("two extension forms", why)
    local ids = assert(xml.parse(SIMPLE))
    ids:add(ids:child("identity"):clone())
    assert.is_false((caps.verify(ids, caps.ver(ids))))
    assert.is_false((caps.verify(q, caps.ver(q), "md5")))
  end)
end)

describe("sacm.xmpp.caps over Prosody #e2e", function()
  local server
  local conns = {}
  local orch, cache, node

  local function open(user, resource)
    local c = connect(server, user, resource)
    conns[#conns + 1] = c
    return c
  end

  -- When c's ping to orch comes back, orch has handled everything c sent before it.
  local function settle(c)
    assert(c:ping(orch.jid, 5))
  end

  lazy_setup(function()
    local users = {}
    for _, u in ipairs({ "orchestrator", "collector", "evaluator", "repository", "mallory", "late" }) do users[u] = "pw" end
    server = prosody.start({ users = users })
    node = "https://sacmrun.example/caps"
    orch = open("orchestrator", "main")
    cache = caps.cache(orch)
    disco.provider(orch):add_identity("client", "bot", "SACM orchestrator")
  end)

  lazy_teardown(function()
    for _, c in ipairs(conns) do c:close() end
    if server then server:stop() end
  end)

  it("advertises in presence and answers disco#info for node#ver", function()
    local seen = {}
    local h = orch:on("presence", function(s) seen[#seen + 1] = s end)
    local adv = caps.advertise(orch, { node = node, status = "orchestrating" })
    assert.equal(adv, caps.advertise(orch))
    assert.equal(adv, caps.advertiser(orch))
    local p = disco.provider(orch)
    assert.is_true(p:has_feature(caps.NS))
    assert.equal(caps.ver(p:info()), adv.ver)
    -- our broadcast presence comes back to us (RFC 6121) carrying <c/>
    local mine = assert(cache:wait_for(orch.jid, 5))
    assert.is_true(disco.has_feature(mine, caps.NS))
    h.remove()
    local c = seen[1]:child("c", caps.NS)
    assert.same({ hash = "sha-1", node = node, ver = adv.ver }, c.attr)
    assert.equal("orchestrating", seen[1]:find("status#"))
    -- answering for ourselves cost no query
    assert.equal(0, cache.stats.queries)
    -- XEP-0115 6.2: node#ver answers what the entity answers
    local other = open("evaluator", "probe")
    local info = assert(disco.info(other, orch.jid, node .. "#" .. adv.ver))
    assert.equal(node .. "#" .. adv.ver, info.node)
    assert.is_true(caps.verify(info, adv.ver))
  end)

  local c1, c2, ev, adv1, adv2

  it("learns features through caps: one query per capability set, however many entities", function()
    c1 = open("collector", "host1")
    c2 = open("collector", "host2")
    for _, c in ipairs({ c1, c2 }) do
      local p = disco.provider(c)
      p:add_identity("client", "bot", "SACM collector")
      p:add_feature(COLLECTOR)
      p:add_extension({ form_type = "urn:example:sacm:collector-info", fields = { os = "Debian", version = "12" } })
    end
    -- both at once: the lookups are deduplicated while in flight
    adv1 = caps.advertise(c1, { node = node, to = orch.jid, broadcast = false })
    adv2 = caps.advertise(c2, { node = node, to = orch.jid, broadcast = false })
    assert.equal(adv1.ver, adv2.ver)
    local i1 = assert(cache:wait_for(c1.jid, 5))
    local i2 = assert(cache:wait_for(c2.jid, 5))
    assert.equal(i1, i2)
    assert.is_true(disco.has_feature(i1, COLLECTOR))
    assert.same({ "12" }, disco.form_values(disco.extension(i1, "urn:example:sacm:collector-info")).version)
    assert.equal(1, cache.stats.queries)
    assert.equal(1, disco.provider(c1).stats.info + disco.provider(c2).stats.info)
    -- presence again (same caps): nobody is asked again
    adv1:update()
    adv2:set_presence({ status = "idle" })
    settle(c1); settle(c2)
    assert.equal(1, cache.stats.queries)
    assert.equal(1, disco.provider(c1).stats.info + disco.provider(c2).stats.info)
    assert.equal(i1, cache:info_for(c2.jid))
    assert.equal("idle", adv2.status)
  end)

  it("finds the full JIDs that advertise a feature", function()
    ev = open("evaluator", "main")
    disco.provider(ev):add_feature(EVALUATOR)
    caps.advertise(ev, { node = node, to = orch.jid, broadcast = false })
    assert(cache:wait_for(ev.jid, 5))
    assert.same({ c1.jid, c2.jid }, cache:find(COLLECTOR))
    assert.same({ ev.jid }, cache:find(EVALUATOR))
    assert.same({}, cache:find(REPOSITORY))
    assert.same({ c1.jid, c2.jid, ev.jid, orch.jid }, cache:find(disco.NS_INFO))
    assert.same({ c1.jid, c2.jid, ev.jid, orch.jid }, cache:jids())
    assert.equal(2, cache.stats.queries)
  end)

  it("re-advertises when features change, and retires the old node#ver", function()
    local updates = {}
    local h = cache:on_update(function(jid, info) updates[#updates + 1] = { jid, info } end)
    local old = adv1.ver
    local asked = disco.provider(c1).stats.info + disco.provider(c2).stats.info
    local sent = adv1.sent
    local p = disco.provider(c1)
    p:add_feature(REMEDIATION)
    p:add_feature("urn:example:sacm:more") -- two changes, one presence (debounced)
    p:remove_feature("urn:example:sacm:more")
    local info = assert(cache:wait(function(c)
      local i = c:info_for(c1.jid)
      return i and i.features[REMEDIATION] and i
    end, 5))
    assert.are_not.equal(old, adv1.ver)
    assert.equal(caps.ver(p:info()), adv1.ver)
    assert.equal(adv1.ver, info.ver)
    assert.same({ c1.jid }, cache:find(REMEDIATION))
    assert.same({ c1.jid, c2.jid }, cache:find(COLLECTOR))
    assert.equal(asked + 1, disco.provider(c1).stats.info + disco.provider(c2).stats.info)
    local none, err = disco.info(ev, c1.jid, node .. "#" .. old)
    assert.is_nil(none)
    assert.equal("item-not-found", err.condition)
    assert.truthy(disco.info(ev, c1.jid, node .. "#" .. adv1.ver))
    task.sleep(0.05) -- update handlers run as tasks
    h.remove()
    assert.equal(c1.jid, updates[#updates][1])
    assert.equal(info, updates[#updates][2])
    assert.equal(sent + 1, adv1.sent) -- three changes, one presence
  end)

  it("rejects a forged ver and still learns it from an honest entity", function()
    quiet()
    local mallory = open("mallory", "x")
    local repo = open("repository", "main")
    local rp = disco.provider(repo)
    rp:add_identity("client", "bot", "SACM repository")
    rp:add_feature(REPOSITORY)
    rp:add_feature(caps.NS)
    local ver = caps.ver(rp:info())
    -- mallory claims the repository's ver but answers with its own (different) features
    local mp = disco.provider(mallory)
    mp:add_alias(node .. "#" .. ver)
    local forged = st.presence({ to = orch.jid }):add(caps.element(node, ver))
    assert(mallory:send(forged))
    settle(mallory)
    assert.is_true(cache:wait(function(c) return c.stats.rejected == 1 end, 5))
    assert.equal(1, mp.stats.info)
    assert.is_nil(cache:info_for(mallory.jid))
    assert.matches("advertised ver", cache:entity(mallory.jid).rejected)
    assert.same({}, cache:find(REPOSITORY))
    -- a ver nobody can answer for: a failed query, nothing cached
    assert(mallory:send(st.presence({ to = orch.jid }):add(caps.element(node, "bm90IGEgcmVhbCB2ZXI="))))
    assert.is_true(cache:wait(function(c) return c.stats.failed == 1 end, 5))
    assert.is_nil(cache:info_for(mallory.jid))
    -- the honest repository advertising that ver is asked (mallory's failure does not block it)
    assert(mallory:send(forged))
    caps.advertise(repo, { node = node, to = orch.jid, broadcast = false })
    local info = assert(cache:wait_for(repo.jid, 5))
    assert.is_true(disco.has_feature(info, REPOSITORY))
    assert.equal(1, rp.stats.info)
    assert.same({ repo.jid }, cache:find(REPOSITORY))
    -- mallory, proven to lie about this ver, does not get the repository's features
    settle(mallory)
    assert.is_nil(cache:info_for(mallory.jid))
  end)

  it("asks again after a failed lookup, with no new presence from the entity", function()
    quiet()
    cache.retry_after = 0.3
    local late = open("late", "x")
    local lp = disco.provider(late)
    lp:add_identity("client", "bot", "SACM collector")
    lp:add_feature(COLLECTOR)
    local ver = caps.ver(lp:info())
    -- its presence names a ver its disco provider does not answer for yet (a busy component)
    assert(late:send(st.presence({ to = orch.jid }):add(caps.element(node, ver))))
    assert.is_true(cache:wait(function(c) return c.stats.failed >= 1 end, 5))
    assert.is_nil(cache:info_for(late.jid))
    lp:add_alias(node .. "#" .. ver) -- now it answers; it sends no presence
    local info = assert(cache:wait_for(late.jid, 5))
    assert.is_true(disco.has_feature(info, COLLECTOR))
    cache.retry_after = 30
    late:close()
    assert.is_true(cache:wait(function(c) return c:info_for(late.jid) == nil end, 5))
  end)

  it("forgets entities that go unavailable", function()
    local gone = {}
    local h = cache:on_update(function(jid, info) if info == nil then gone[#gone + 1] = jid end end)
    adv2:remove_target(orch.jid) -- directed unavailable presence
    assert.is_true(cache:wait(function(c) return c:info_for(c2.jid) == nil end, 5))
    assert.same({ c1.jid }, cache:find(COLLECTOR))
    c1:close() -- the server tells everyone c1 had sent directed presence to
    assert.is_true(cache:wait(function(c) return c:info_for(c1.jid) == nil end, 5))
    assert.same({}, cache:find(COLLECTOR))
    assert.same({ ev.jid }, cache:find(EVALUATOR))
    task.sleep(0.05)
    h.remove()
    table.sort(gone)
    assert.same({ c1.jid, c2.jid }, gone)
  end)

  it("stops advertising", function()
    local p = disco.provider(ev)
    local adv = caps.advertiser(ev)
    local ver = adv.ver
    adv:stop({ unavailable = true })
    assert.is_nil(caps.advertiser(ev))
    assert.is_false(p:has_feature(caps.NS))
    assert.is_false(p:has_node(node .. "#" .. ver))
    assert.is_true(cache:wait(function(c) return c:info_for(ev.jid) == nil end, 5))
    p:add_feature("urn:example:after-stop")
    task.sleep(0.2)
    assert.is_nil(cache:entity(ev.jid))
  end)
end)

describe("sacm.xmpp.caps with roster subscriptions and reconnects #e2e", function()
  local server, orch, auditor

  lazy_setup(function()
    server = prosody.start({ users = { orchestrator = "pw", auditor = "pw" } })
    orch = connect(server, "orchestrator", "main", { reconnect = true, max_backoff = 0.5 })
    auditor = connect(server, "auditor", "a1", { reconnect = true, max_backoff = 0.5 })
  end)

  lazy_teardown(function()
    if orch then orch:close() end
    if auditor then auditor:close() end
    if server then server:stop() end
  end)

  it("learns caps from roster presence broadcasts and hears them again after a reconnect", function()
    quiet() -- the restart logs disconnects
    -- auditor approves every subscription request
    auditor:on("presence", { type = "subscribe" }, function(s, conn)
      conn:send(st.presence({ to = require("sacm.xmpp.jid").bare(s.attr.from), type = "subscribed" }))
    end)
    local cache = caps.cache(orch)
    caps.advertise(orch) -- initial presence: makes orch available to receive broadcasts
    disco.provider(auditor):add_feature(COLLECTOR)
    -- auditor's presence goes to nobody yet: it has no subscribers (a server holds subscription
    -- requests for an account until it is available)
    local adv = caps.advertise(auditor)
    local heard = 0
    orch:on("presence", function(s)
      if s.attr.from == auditor.jid and s:child("c", caps.NS) then heard = heard + 1 end
    end)
    assert(orch:send(st.presence({ to = server:jid("auditor"), type = "subscribe" })))
    -- once approved, the server sends orch auditor's current presence, caps included
    assert(cache:wait_for(auditor.jid, 5))
    assert.same({ auditor.jid }, cache:find(COLLECTOR))
    local before = heard
    assert.is_true(before >= 1)

    -- a server restart: both reconnect, both advertisers send presence again, and orch hears
    -- auditor's caps again (directly, or from the server's probe for orch's subscriptions)
    local sent = adv.sent
    server:restart()
    local deadline = require("sacm.time").monotonic() + 10
    while (heard == before or adv.sent == sent) and require("sacm.time").monotonic() < deadline do
      task.sleep(0.05)
    end
    assert.is_true(adv.sent > sent)
    assert.is_true(heard > before)
    assert.same({ auditor.jid }, cache:find(COLLECTOR))
  end)
end)
