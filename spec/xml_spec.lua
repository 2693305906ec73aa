local xml = require "sacm.xml"

local DISCO = "http://jabber.org/protocol/disco#info"

-- parse that must succeed
local function P(s, opts)
  local el, err = xml.parse(s, opts)
  assert(el, err and tostring(err))
  return el
end

local function roundtrip(el)
  local s = xml.serialize(el)
  local again, err = xml.parse(s)
  assert.is_nil(err, s)
  return again, s
end

local function raises(pattern, fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error matching " .. pattern)
  assert.matches(pattern, tostring(err))
end

describe("sacm.xml", function()
  describe("parse", function()
    local doc = table.concat {
      '<?xml version="1.0" encoding="UTF-8"?>\n',
      '<!-- a comment -->\n',
      '<iq xmlns="jabber:client" xmlns:x="urn:x" type="result" xml:lang="en" x:flag="a&amp;b">',
      '<query xmlns="', DISCO, '">',
      '<identity category="client" type="pc" name="&lt;Psi&gt; &quot;0.15&quot;"/>',
      '<feature var="urn:xmpp:ping"/>',
      '</query>',
      '<x:data>caf&#xE9; &#65;&#x42; <![CDATA[<raw> & ]]> tail<?pi ignored?></x:data>',
      '<plain xmlns="">text</plain>',
      '</iq>',
    }

    it("builds elements with effective namespaces, attributes and merged text", function()
      local iq = P(doc)
      assert.is_true(xml.is_element(iq))
      assert.equal("iq", iq.name)
      assert.equal("jabber:client", iq.ns)
      assert.same({ type = "result", ["xml:lang"] = "en", ["urn:x flag"] = "a&b" }, iq.attr)
      assert.equal(3, #iq)

      local query = iq[1]
      assert.equal("query", query.name)
      assert.equal(DISCO, query.ns)
      assert.equal(DISCO, query[1].ns, "ns is stored on every element, not only where declared")
      assert.equal('<Psi> "0.15"', query[1].attr.name)
      assert.is_true(xml.is_element(query[2]))

      local data = iq[2]
      assert.equal("urn:x", data.ns)
      -- entities, character references and CDATA merge into one string; the PI is dropped
      assert.same({ "café AB <raw> &  tail" }, { table.unpack(data) })

      assert.is_nil(iq[3].ns)
      assert.same({ "text" }, { table.unpack(iq[3]) })
    end)

    it("survives parse -> serialize -> parse unchanged", function()
      local first = P(doc)
      local second, s = roundtrip(first)
      assert.is_true(xml.equal(first, second), s)
      -- and a third time gives the same text: serialization is deterministic
      assert.equal(s, xml.serialize(second))
      assert.matches('xml:lang="en"', s, 1, true)
    end)

    it("keeps whitespace text and drops comments between text pieces", function()
      local el = P("<a>\n  x<!-- c -->y\n  <b/> </a>")
      assert.same({ "\n  xy\n  ", "<b/>", " " },
        { el[1], xml.serialize(el[2]), el[3] })
    end)

    it("reports syntax errors as not-well-formed with line and column", function()
      local el, err = xml.parse("<a>\n<b>\n  </c></a>")
      assert.is_nil(el)
      assert.equal("not-well-formed", err.condition)
      assert.equal(3, err.line)
      assert.equal(5, err.column) -- 1-based: the 'c' of "</c>"
      assert.equal("not-well-formed: mismatched tag at line 3, column 5", tostring(err))

      -- columns count characters, not bytes
      local _, err2 = xml.parse("<a>héllo<b></a>")
      assert.equal(1, err2.line)
      assert.equal(14, err2.column)

      for _, bad in ipairs { "", "<a>", "<a></a><b/>", "<a>&nbsp;</a>", "<a x='1' x='2'/>",
        "<p:a/>", "<a>&#0;</a>", "<a>\1</a>", "<a>\xff</a>", "text" } do
        local r, e = xml.parse(bad)
        assert.is_nil(r, bad)
        assert.equal("not-well-formed", e.condition, bad)
        assert.is_number(e.line)
        assert.is_number(e.column)
      end
    end)

    it("refuses 10,000 levels of nesting with policy-violation and keeps working", function()
      local deep = string.rep("<a>", 10000) .. string.rep("</a>", 10000)
      local el, err = xml.parse(deep)
      assert.is_nil(el)
      assert.equal("policy-violation", err.condition)
      assert.matches("256", err.text)
      -- the same when the document is not even well-formed past the limit
      assert.equal("policy-violation", select(2, xml.parse(string.rep("<a>", 10000))).condition)
      collectgarbage()
      assert.equal("b", P("<a><b/></a>")[1].name)
    end)

    it("applies max_depth", function()
      assert.is_not_nil(xml.parse("<a><b><c/></b></a>", { max_depth = 3 }))
      local _, err = xml.parse("<a><b><c/></b></a>", { max_depth = 2 })
      assert.equal("policy-violation", err.condition)
      assert.has_error(function() xml.parse("<a/>", { max_depth = 0 }) end)
    end)

    it("applies max_bytes", function()
      local s = "<a>" .. string.rep("x", 100) .. "</a>"
      assert.is_not_nil(xml.parse(s, { max_bytes = #s }))
      local el, err = xml.parse(s, { max_bytes = #s - 1 })
      assert.is_nil(el)
      assert.equal("policy-violation", err.condition)
      -- the default limit is 16 MiB
      local big = "<a>" .. string.rep("x", 16 * 1024 * 1024) .. "</a>"
      assert.equal("policy-violation", select(2, xml.parse(big)).condition)
      assert.is_not_nil(xml.parse(big, { max_bytes = #big }))
    end)

    it("refuses any DOCTYPE with restricted-xml (billion laughs, XXE)", function()
      local laughs = [[<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<lolz>&lol4;</lolz>]]
      local xxe = '<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>'
      for _, s in ipairs { laughs, xxe, '<!DOCTYPE a SYSTEM "http://example.com/a.dtd"><a/>',
        "<!DOCTYPE a><a/>" } do
        local el, err = xml.parse(s)
        assert.is_nil(el)
        assert.equal("restricted-xml", err.condition)
      end
    end)
  end)

  describe("serialize", function()
    it("escapes hostile text and attribute values so they survive a round trip", function()
      local hostile = "a\"b'c<d>e&f]]>g\r\nh\ti\rj\n  "
      local el = xml.element("m", { v = hostile, ["xml:lang"] = "de" }):text(hostile)
      local again, s = roundtrip(el)
      assert.is_true(xml.equal(el, again), s)
      assert.equal(hostile, again.attr.v)
      assert.equal(hostile, again[1])
      assert.is_nil(s:find("]]>", 1, true))
      assert.equal(
        '<m v="a&quot;b\'c&lt;d&gt;e&amp;f]]&gt;g&#13;&#10;h&#9;i&#13;j&#10;  " xml:lang="de">'
          .. "a\"b'c&lt;d&gt;e&amp;f]]&gt;g&#13;\nh\ti&#13;j\n  </m>", s)
    end)

    it("declares namespaces where they change and prefixes namespaced attributes", function()
      local el = xml.element("a", { xmlns = "urn:a", ["urn:p x"] = "1", ["urn:p y"] = "2",
        ["urn:q z"] = "3", plain = "4" })
      el:tag("b"):up()
      el:tag("c", { xmlns = "" }):tag("d"):up():up()
      el:tag("e", { xmlns = "urn:e" })
      local s = xml.serialize(el)
      assert.equal('<a xmlns="urn:a" plain="4" xmlns:ns1="urn:p" ns1:x="1" ns1:y="2"'
        .. ' xmlns:ns2="urn:q" ns2:z="3"><b/><c xmlns=""><d/></c><e xmlns="urn:e"/></a>', s)
      local again = P(s)
      assert.is_true(xml.equal(el, again))
      assert.is_nil(again[2][1].ns)
      -- a sub-element serialized alone declares its own namespace
      assert.equal('<b xmlns="urn:a"/>', xml.serialize(el[1]))
      assert.equal(s, tostring(el))
    end)

    it("accepts plain tables and numbers", function()
      assert.equal('<a n="5">1</a>', xml.serialize { name = "a", attr = { n = 5 }, 1 })
      assert.equal("<a></a>", xml.serialize { name = "a", "" })
    end)

    it("raises on invalid names, naming the problem and the element", function()
      raises("invalid element name 'a b'", xml.serialize, { name = "a b" })
      raises("invalid element name ''", xml.serialize, { name = "" })
      raises("invalid element name '1a'", xml.serialize, { name = "1a" })
      raises("invalid element name 'p:a'", xml.serialize, { name = "p:a" })
      raises("invalid element name 'x<y'.*child 1 of <root>", xml.serialize,
        { name = "root", { name = "x<y" } })
      raises("element without a string name", xml.serialize, { name = "r", { "x" } })
      for _, bad in ipairs { 'a"b', "a=b", "", "a/", "<a", "a&", "-a" } do
        raises("invalid name in attribute .* of <e>", xml.serialize, { name = "e", attr = { [bad] = "v" } })
      end
      raises("attribute 'xmlns' of <e>", xml.serialize, { name = "e", attr = { xmlns = "urn:x" } })
      raises("attribute 'p:x'", xml.serialize, { name = "e", attr = { ["p:x"] = "v" } })
      raises("attribute key of type number", xml.serialize, { name = "e", attr = { [1] = "v" } })
      raises("value of type boolean in attribute 'x'", xml.serialize,
        { name = "e", attr = { x = true } })
    end)

    it("raises on invalid characters and invalid UTF-8", function()
      raises("U%+0001 not allowed in XML in text of <body>", xml.serialize, { name = "body", "a\1b" })
      raises("U%+0000 .* in attribute 'to' of <m>", xml.serialize, { name = "m", attr = { to = "a\0" } })
      raises("invalid UTF%-8 at byte 2 in text of <t>", xml.serialize, { name = "t", "a\xff" })
      raises("invalid UTF%-8", xml.serialize, { name = "t", "\xC0\xAF" })        -- overlong '/'
      raises("invalid UTF%-8", xml.serialize, { name = "t", "\xED\xA0\x80" })    -- surrogate
      raises("invalid UTF%-8", xml.serialize, { name = "t", "\xE2\x82" })        -- truncated
      raises("U%+FFFE not allowed", xml.serialize, { name = "t", "\xEF\xBF\xBE" })
      raises("child 1 of <t> is a boolean", xml.serialize, { name = "t", true })
      raises("namespace of <t>", xml.serialize, { name = "t", ns = "urn:a b" })
      -- valid multi-byte text passes untouched
      assert.equal("<t>é€😀</t>", xml.serialize { name = "t", "é€😀" })
    end)

    it("raises on cyclic or absurdly deep tables instead of overflowing", function()
      local t = { name = "a" }
      t[1] = t
      raises("nesting too deep or cyclic", xml.serialize, t)
      local root = { name = "a" }
      local cur = root
      for _ = 1, 5000 do
        local c = { name = "a" }
        cur[1] = c
        cur = c
      end
      raises("nesting too deep or cyclic", xml.serialize, root)
      assert.equal("<a/>", xml.serialize { name = "a" })
    end)

    it("pretty-prints element content and leaves mixed content exactly as it is", function()
      local el = P('<r><a>\n   <b>some <i>mixed</i> text <j><k/></j></b><c><d/></c></a><e>  </e></r>')
      local s = el:pretty()
      assert.equal(table.concat({
        "<r>",
        "  <a>",
        "    <b>some <i>mixed</i> text <j><k/></j></b>",
        "    <c>",
        "      <d/>",
        "    </c>",
        "  </a>",
        "  <e>  </e>",
        "</r>" }, "\n"), s)
      local again = P(s)
      assert.is_true(xml.equal(el:find("a/b"), again:find("a/b")))
      assert.equal("  ", again:find("e#"))
      -- pretty-printing pretty output changes nothing
      assert.equal(s, again:pretty())
      assert.equal(s, (xml.serialize(el, { indent = "\t" }):gsub("\t", "  ")))
      assert.has_error(function() xml.serialize(el, { indent = "x" }) end)
    end)
  end)

  describe("builder", function()
    it("builds with a cursor, inheriting the namespace", function()
      local msg = xml.element("message", { xmlns = "jabber:client", to = "a@b", type = "chat" })
        :tag("body"):text("hi "):text("there"):up()
        :tag("x", { xmlns = "jabber:x:data", type = "form" })
          :tag("field", { var = "n" }):tag("value"):text(42):up():up()
        :up()
        :tag("plain", { xmlns = "" }):tag("inner")
      assert.same({ to = "a@b", type = "chat" }, msg.attr)
      assert.equal("jabber:client", msg.ns)
      assert.equal("jabber:client", msg[1].ns)
      assert.same({ "hi there" }, { table.unpack(msg[1]) }, "adjacent text merges")
      assert.equal("jabber:x:data", msg[2].ns)
      assert.equal("jabber:x:data", msg[2][1][1].ns, "inherited two levels down")
      assert.equal("42", msg:find("x/field/value#"))
      assert.is_nil(msg[3].ns)
      assert.is_nil(msg[3][1].ns)

      msg:reset():tag("thread"):text("t1")
      assert.equal("thread", msg[4].name)
      assert.equal("jabber:client", msg[4].ns)
      msg:reset()
      assert.has_error(function() msg:up() end)

      local again = roundtrip(msg)
      assert.is_true(xml.equal(msg, again))
    end)

    it("keeps elements plain data", function()
      local el = xml.element("a"):tag("b"):text("x")
      local keys = {}
      for k in pairs(el) do keys[#keys + 1] = tostring(k) end
      table.sort(keys)
      assert.same({ "1", "attr", "name" }, keys)
      assert.is_true(xml.equal(el, P("<a><b>x</b></a>")))
    end)

    it("adds existing elements and strings at the cursor", function()
      local item = xml.element("item", { jid = "a@b" })
      local q = xml.element("query", { xmlns = "jabber:iq:roster" }):tag("group")
        :add("one"):add(" two"):up():add(item)
      assert.equal("one two", q[1][1])
      assert.equal(item, q[2])
      assert.is_nil(item.ns, "add() does not rewrite the added element")
      assert.has_error(function() q:add(true) end)
      assert.has_error(function() q:text({}) end)
      assert.has_error(function() xml.element(1) end)
      assert.has_error(function() xml.element("a", { x = true }) end)
    end)
  end)

  describe("navigation", function()
    local iq = P(table.concat {
      '<iq xmlns="jabber:client" type="result" id="1">',
      '<query xmlns="', DISCO, '" node="n">',
      '<identity category="pubsub" type="service"/>',
      '<identity category="client" type="pc" xml:lang="en"/>',
      '<feature var="a"/><feature var="b"/>',
      '<x xmlns="jabber:x:data" type="result"><field var="FORM_TYPE"><value>urn:f</value></field></x>',
      '</query>',
      '<query xmlns="urn:other"><item>second</item></query>',
      '</iq>' })

    it("finds children by name and namespace", function()
      assert.equal(DISCO, iq:child("query").ns)
      assert.equal(DISCO, iq:child("query", DISCO).ns)
      assert.equal("urn:other", iq:child("query", "urn:other").ns)
      assert.is_nil(iq:child("query", "urn:none"))
      assert.is_nil(iq:child("nothing"))
      local vars = {}
      for f in iq:child("query"):children("feature") do vars[#vars + 1] = f.attr.var end
      assert.same({ "a", "b" }, vars)
      local n = 0
      for _ in iq:child("query"):children() do n = n + 1 end
      assert.equal(5, n)
      n = 0
      for _ in iq:child("query"):children(nil, "jabber:x:data") do n = n + 1 end
      assert.equal(1, n)
    end)

    it("finds by path with namespaces, attributes and text", function()
      assert.equal("pubsub", iq:find("{" .. DISCO .. "}query/identity@category"))
      assert.equal("n", iq:find("query@node"))
      assert.equal("result", iq:find("@type"))
      assert.equal("en", iq:find("query/identity@xml:lang"), "the first identity that has one")
      assert.equal("urn:f", iq:find("query/{jabber:x:data}x/field/value#"))
      assert.equal("second", iq:find("{urn:other}query/item#"), "backtracks to the second query")
      assert.equal("second", iq:find("query/item#"))
      assert.equal("field", iq:find("query/*/field").name)
      assert.equal("x", iq:find("{" .. DISCO .. "}query/{jabber:x:data}x").name)
      assert.is_nil(iq:find("{urn:none}query"))
      assert.is_nil(iq:find("query/nothing"))
      assert.is_nil(iq:find("query@missing"))
      assert.is_true(xml.is_element(iq:find("query/feature")))
      for _, bad in ipairs { "", "a/", "{urn:x", "a/#/b", "a//b" } do
        assert.has_error(function() iq:find(bad) end, nil, bad)
      end
    end)

    it("reads text, clones and compares", function()
      local el = P("<a>one<b>two</b>three</a>")
      assert.equal("onethree", el:get_text())
      assert.equal("", P("<c/>"):get_text())

      local copy = iq:clone()
      assert.is_true(xml.equal(iq, copy))
      assert.is_true(xml.is_element(copy[1][1]))
      copy[1][1].attr.category = "changed"
      assert.equal("pubsub", iq[1][1].attr.category)
      assert.is_false(xml.equal(iq, copy))

      assert.is_false(xml.equal(P("<a/>"), P("<a xmlns='x'/>")))
      assert.is_false(xml.equal(P("<a/>"), P("<a b=''/>")))
      assert.is_false(xml.equal(P("<a>x</a>"), P("<a>y</a>")))
      assert.is_false(xml.equal(P("<a>x</a>"), P("<a>x<b/></a>")))
      assert.is_true(xml.equal(P("<a x='1' y='2'/>"), P("<a y='2' x='1'/>")))
      assert.is_false(xml.is_element({ name = "a" }))
      assert.is_false(xml.is_element("a"))
    end)
  end)

  describe("bounds", function()
    it("caps max_depth at 1000, so a huge setting still returns an error, never raises", function()
      local n = 2000000
      local deep = ("<a>"):rep(n) .. ("</a>"):rep(n)
      local ok, el, err = pcall(xml.parse, deep, { max_depth = 1e6 })
      assert.is_true(ok, tostring(el))
      assert.is_nil(el)
      assert.equal("policy-violation", err.condition)
      assert.matches("1000", err.text)
      -- 1000 levels parse with a high enough max_depth, and serialize back the same
      local thousand = ("<a>"):rep(1000) .. ("</a>"):rep(1000)
      local t = P(thousand, { max_depth = 5000 })
      assert.equal(thousand:gsub("<a></a>", "<a/>"), xml.serialize(t))
      assert.equal("policy-violation", select(2, xml.parse("<a>" .. thousand .. "</a>", { max_depth = 5000 })).condition)
    end)

    it("refuses a tree that would cost more than 8x its document's size plus 1 MiB", function()
      local mem = require "sacm._mem"
      local doc = "<a>" .. ("<b/>"):rep(4 * 1024 * 1024 - 2) .. "</a>" -- 16 MiB of <b/>
      collectgarbage()
      -- Allow a little more than the bound: going past it would raise "not enough memory".
      local before = mem.limit()
      mem.set_limit(mem.usage() + 8 * #doc + 4 * 1024 * 1024)
      local ok, el, err = pcall(xml.parse, doc)
      mem.set_limit(before)
      assert.is_true(ok, tostring(el))
      assert.is_nil(el)
      assert.equal("policy-violation", err.condition)
      assert.matches("max_memory", err.text)
      el = nil -- luacheck: ignore 311 (drops the reference before collecting)
      collectgarbage()
      -- ordinary documents are inside the bound; max_memory sets it per call
      local results = "<r xmlns='urn:x'>" .. ("<result rule='r-0001' status='pass'><evidence>ok</evidence></result>"):rep(50000) .. "</r>"
      assert.is_not_nil(xml.parse(results))
      local form = "<x xmlns='jabber:x:data'>" .. ("<field var='k'><value>os</value></field>"):rep(2000) .. "</x>"
      assert.is_not_nil(xml.parse(form))
      assert.equal("policy-violation", select(2, xml.parse(form, { max_memory = 100000 })).condition)
      assert.is_not_nil(xml.parse(doc:sub(1, 4003) .. "</a>", { max_memory = 10 * 1024 * 1024 }))
    end)
  end)

  describe("symmetry", function()
    local XML_NS = "http://www.w3.org/XML/1998/namespace"

    it("writes elements in the XML namespace with the xml prefix, as parse gives them", function()
      for _, s in ipairs {
        "<xml:e/>",
        '<a xmlns="u"><xml:e v="1" xml:lang="en"><f/></xml:e><g/></a>',
        '<xml:e><f xmlns="u"><xml:g/></f></xml:e>',
      } do
        local t = P(s)
        assert.equal(s, xml.serialize(t))
      end
      assert.equal(XML_NS, P("<xml:e/>").ns)
      assert.equal("u", P('<a xmlns="u"><xml:e><f/></xml:e></a>')[1][1].ns)
      -- no element can be in the xmlns namespace: parse refuses it, serialize too
      assert.equal("not-well-formed", select(2, xml.parse("<xmlns:e/>")).condition)
      raises("xmlns namespace", xml.serialize, { name = "e", ns = "http://www.w3.org/2000/xmlns/" })
    end)

    it("refuses names expat would not read back", function()
      -- XML 1.0 fifth edition allows these, expat's (fourth edition) tables do not
      for _, n in ipairs { "\u{10000}", "\u{2070}", "a\u{203F}", "\u{F900}" } do
        assert.is_nil(xml.parse("<" .. n .. "/>"))
        raises("invalid element name", xml.serialize, { name = n })
        raises("invalid name", xml.serialize, { name = "a", attr = { [n] = "v" } })
      end
      for _, n in ipairs { "é", "日本", "a·b", "Ωmega" } do
        assert.equal("<" .. n .. "/>", xml.serialize(P("<" .. n .. "/>")))
      end
    end)

    it("refuses names with ª µ º, which expat lets through only in ISO-8859-1 documents", function()
      -- found by fuzz/xml_roundtrip: parse accepted <a\xBA/> from a Latin-1 document, serialize
      -- then refused the name
      local latin1 = '<?xml version="1.0" encoding="ISO-8859-1"?>'
      for byte, shown in pairs { [0xAA] = "U+00AA", [0xB5] = "U+00B5", [0xBA] = "U+00BA" } do
        local c = string.char(byte)
        for _, doc in ipairs { "<a" .. c .. "/>", "<a><b" .. c .. "c/></a>", "<a x" .. c .. '="1"/>',
                               '<a xmlns:p="urn:p" p:x' .. c .. '="1"/>' } do
          local t, err = xml.parse(latin1 .. doc)
          assert.is_nil(t, doc)
          assert.equal("not-well-formed", err.condition)
          assert.matches("holds " .. shown .. ", which XML 1.0 allows in no name", err.text, 1, true)
        end
        -- in text, attribute values and namespace names the characters are fine
        local t = P(latin1 .. '<a xmlns="urn:' .. c .. '" v="' .. c .. '">' .. c .. "</a>")
        local u = utf8.char(byte)
        assert.equal("urn:" .. u, t.ns)
        assert.equal(u, t.attr.v)
        assert.equal(u, t[1])
        assert.is_true(xml.equal(t, P(xml.serialize(t))))
      end
      -- Latin-1 letters that are name characters still parse and write back
      assert.equal("<\u{E9}t\u{E9}/>", xml.serialize(P(latin1 .. "<\xE9t\xE9/>")))
    end)

    -- Random documents: trees of names, namespaces, attributes and text over the whole range of
    -- XML characters. Deterministic per seed; a failure names its seed.
    local rand
    local function pick(list) return list[rand(#list)] end
    local NAME_START = { "a", "b", "Z", "_", "é", "ß", "Ω", "日", "ж" }
    local NAME_REST = { "a", "z", "0", "9", "-", ".", "_", "é", "·", "本" }
    local URIS = { "urn:a", "urn:b", "http://example.com/x?y=1&z='\"<>", "urn:é\u{10000}", "urn:c" }
    local CHARS = { "a", "Z", "0", " ", "&", "<", ">", "\"", "'", "]]>", "]", "\r", "\n", "\t", "\r\n",
                    "é", "€", "\u{7FF}", "\u{D7FF}", "\u{E000}", "\u{FFFD}", "\u{10000}", "\u{1F600}",
                    "\u{10FFFF}", "&amp;", "<![CDATA[", "--", "?>" }
    local function name()
      local t = { pick(NAME_START) }
      for i = 2, rand(0, 5) + 1 do t[i] = pick(NAME_REST) end
      return table.concat(t)
    end
    local function text(maxlen)
      local t = {}
      for i = 1, rand(1, maxlen) do t[i] = pick(CHARS) end
      return table.concat(t)
    end
    local function tree(depth, ns)
      local r = rand(10)
      if r <= 2 then ns = pick(URIS) elseif r == 3 then ns = nil elseif r == 4 then ns = XML_NS end
      local el = xml.element(name())
      el.ns = ns
      for _ = 1, rand(0, 3) do
        local k = rand(6)
        local key = k == 1 and ("xml:" .. pick { "lang", "space", "x" })
                 or k == 2 and (pick(URIS) .. " " .. name()) or name()
        el.attr[key] = rand(4) == 1 and "" or text(6)
      end
      local last_text = false
      for _ = 1, depth > 0 and rand(0, 4) or 0 do
        if not last_text and rand(3) == 1 then
          el[#el + 1] = text(8)
          last_text = true
        else
          el[#el + 1] = tree(depth - 1, ns ~= XML_NS and ns or nil)
          last_text = false
        end
      end
      return el
    end

    -- Writes el in one of the many equivalent spellings XML allows: prefixes or default
    -- declarations, either quote, character references, CDATA sections, comments.
    local prefix_seq = 0
    local function fresh_prefix()
      prefix_seq = prefix_seq + 1
      return "p" .. prefix_seq
    end
    local function charref(c) return rand(2) == 1 and ("&#%d;"):format(utf8.codepoint(c)) or ("&#x%X;"):format(utf8.codepoint(c)) end
    local function escape_chars(s, q)
      return (s:gsub(utf8.charpattern, function(c)
        if c == "&" then return rand(2) == 1 and "&amp;" or "&#38;" end
        if c == "<" then return "&lt;" end
        if c == ">" then return "&gt;" end
        if c == q then return q == '"' and "&quot;" or "&apos;" end
        if c == "\r" then return "&#13;" end
        if q and (c == "\t" or c == "\n") then return charref(c) end
        if rand(8) == 1 then return charref(c) end
        return c
      end))
    end
    local function write_text(out, s)
      while #s > 0 do
        local cut = rand(#s)
        while cut < #s and s:byte(cut + 1) >= 0x80 and s:byte(cut + 1) < 0xC0 do cut = cut + 1 end
        local piece = s:sub(1, cut)
        s = s:sub(cut + 1)
        if rand(3) == 1 and not piece:find("]]>", 1, true) and not piece:find("\r", 1, true)
           and piece:sub(-1) ~= "]" then
          out[#out + 1] = "<![CDATA[" .. piece .. "]]>"
        else
          out[#out + 1] = escape_chars(piece)
        end
        if rand(4) == 1 then out[#out + 1] = "<!-- c -->" end
      end
    end
    local function write(out, el, default_ns)
      local tag, decls, child_default = el.name, {}, default_ns
      if el.ns == XML_NS then
        tag = "xml:" .. el.name
      elseif el.ns and rand(2) == 1 then
        local p = fresh_prefix()
        tag = p .. ":" .. el.name
        decls[#decls + 1] = { "xmlns:" .. p, el.ns }
      elseif el.ns ~= default_ns then
        decls[#decls + 1] = { "xmlns", el.ns or "" }
        child_default = el.ns
      end
      local uri_prefix = {}
      for k, v in pairs(el.attr) do
        local uri, lname = k:match("^(.-) (.+)$")
        if uri then
          if not uri_prefix[uri] then
            uri_prefix[uri] = fresh_prefix()
            decls[#decls + 1] = { "xmlns:" .. uri_prefix[uri], uri }
          end
          decls[#decls + 1] = { uri_prefix[uri] .. ":" .. lname, v }
        else
          decls[#decls + 1] = { k, v }
        end
      end
      out[#out + 1] = "<" .. tag
      for _, d in ipairs(decls) do
        local q = rand(2) == 1 and '"' or "'"
        out[#out + 1] = (rand(4) == 1 and "\n\t" or " ") .. d[1] .. (rand(4) == 1 and " = " or "=") .. q .. escape_chars(d[2], q) .. q
      end
      if #el == 0 and rand(2) == 1 then
        out[#out + 1] = (rand(3) == 1 and " " or "") .. "/>"
        return
      end
      out[#out + 1] = ">"
      for _, c in ipairs(el) do
        if type(c) == "string" then write_text(out, c) else write(out, c, child_default) end
      end
      out[#out + 1] = "</" .. tag .. (rand(4) == 1 and " " or "") .. ">"
    end

    it("parse(serialize(t)) == t and serialize(parse(s)) is stable, over 400 generated documents", function()
      local seed = tonumber(os.getenv("SACMRUN_XML_SEED")) or 18
      for i = 1, 400 do
        math.randomseed(seed, i)
        rand = math.random
        local t = tree(rand(0, 5), nil)
        local where = ("seed %d, case %d"):format(seed, i)
        local s = xml.serialize(t)
        local back, err = xml.parse(s)
        assert(back, where .. ": serialize wrote what parse refuses: " .. tostring(err) .. "\n" .. s)
        assert(xml.equal(t, back), where .. ": the tree changed in a round trip\n" .. s)
        assert.equal(s, xml.serialize(back), where)
        -- the same tree written any other way XML allows parses to the same tree
        local out = {}
        if rand(2) == 1 then out[1] = "<?xml version='1.0' encoding='UTF-8'?>\n<!-- lead -->" end
        write(out, t, nil)
        local w = table.concat(out)
        local from_w, werr = xml.parse(w)
        assert(from_w, where .. ": " .. tostring(werr) .. "\n" .. w)
        assert(xml.equal(t, from_w), where .. ": the other spelling parsed differently\n" .. w .. "\n" .. s)
        assert.equal(s, xml.serialize(from_w), where)
        -- pretty output parses too
        assert.is_not_nil(xml.parse(xml.serialize(t, { indent = "  " })), where)
      end
    end)
  end)

  describe("clean_text", function()
    it("passes clean text through unchanged", function()
      local s = "plain \t\r\n text é € \u{10000} ]]> <&>"
      local out, replaced, cut = xml.clean_text(s)
      assert.equal(s, out)
      assert.equal(0, replaced)
      assert.is_false(cut)
      assert.equal("42", xml.clean_text(42))
    end)

    it("replaces NUL, ESC, other controls and non-characters with U+FFFD", function()
      local out, replaced = xml.clean_text("a\0b\27c\1d\u{FFFE}e\u{FFFF}f\127g")
      assert.equal("a\u{FFFD}b\u{FFFD}c\u{FFFD}d\u{FFFD}e\u{FFFD}f\127g", out)
      assert.equal(5, replaced)
      assert.is_not_nil(xml.parse("<e>" .. xml.serialize(xml.element("e"):text(out)) .. "</e>"))
    end)

    it("replaces each byte that is not UTF-8 (Latin-1, surrogates, overlong, cut sequences)", function()
      assert.equal("caf\u{FFFD}", (xml.clean_text("caf\233")))
      assert.equal("\u{FFFD}\u{FFFD}", (xml.clean_text("\255\254")))
      assert.equal("\u{FFFD}\u{FFFD}x", (xml.clean_text("\xC0\xAFx")))          -- overlong '/'
      assert.equal("\u{FFFD}\u{FFFD}\u{FFFD}", (xml.clean_text("\xED\xA0\x80"))) -- U+D800
      assert.equal("\u{FFFD}\u{FFFD}", (xml.clean_text("\xE2\x82")))           -- cut short
      assert.equal("\u{FFFD}€", (xml.clean_text("\xE2€")))
    end)

    it("cuts to max_bytes on a character boundary", function()
      local long = ("é"):rep(2500) -- 5000 bytes of non-ASCII text
      local out, replaced, cut = xml.clean_text(long, 1024)
      assert.equal(1024, #out)
      assert.equal(("é"):rep(512), out)
      assert.equal(0, replaced)
      assert.is_true(cut)
      out = xml.clean_text("a" .. long, 1024)
      assert.equal(1023, #out)
      assert.is_true(utf8.len(out) ~= nil)
      out = xml.clean_text("ab\0", 4) -- the replacement does not fit whole
      assert.equal("ab", out)
      assert.equal("", (xml.clean_text("\u{10000}", 3)))
      assert.equal(long, (xml.clean_text(long, 5000)))
      -- every result serializes, whatever went in
      for _, s in ipairs { long, "\0\27\255" .. long, ("\255"):rep(5000) } do
        local c = xml.clean_text(s, 1024)
        assert.is_true(#c <= 1024)
        assert.is_not_nil(xml.parse(xml.serialize(xml.element("e"):text(c))))
      end
      assert.has_error(function() xml.clean_text("a", -1) end)
      assert.has_error(function() xml.clean_text(nil) end)
    end)
  end)
end)
