-- sacm.xmpp.forms: XEP-0004 data forms built, parsed, submitted and validated.
local forms = require "sacm.xmpp.forms"
local xml = require "sacm.xml"

local NS = "jabber:x:data"

local function P(s)
  local el, err = xml.parse(s)
  assert(el, err and tostring(err))
  return el
end

-- serialize and parse again, as a form crossing the network would
local function wire(el)
  return P(xml.serialize(el))
end

local function raises(pattern, fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error matching " .. pattern)
  assert.matches(pattern, tostring(err))
end

local DEF = {
  type = "form",
  title = "Collect posture",
  instructions = "Pick a target.\nThen pick what to collect.",
  form_type = "urn:example:sacm:collect",
  fields = {
    { type = "fixed", value = "Target" },
    { var = "target", type = "jid-single", label = "Endpoint", required = true, desc = "Who to ask" },
    { var = "deep", type = "boolean", label = "Deep scan", value = false },
    { var = "kinds", type = "list-multi", label = "Kinds", values = { "packages" },
      options = { { label = "Packages", value = "packages" }, "services", { label = "Users", value = "users" } } },
    { var = "mode", type = "list-single", options = { "fast", "full" }, value = "fast" },
    { var = "notify", type = "jid-multi" },
    { var = "comment", type = "text-multi", value = "line one\nline two" },
    { var = "token", type = "text-private" },
    { var = "state", type = "hidden", value = "s-1" },
    { var = "name" }, -- text-single by default
  },
}

describe("sacm.xmpp.forms", function()
  describe("new", function()
    it("builds an XEP-0004 form with FORM_TYPE, fields, options and defaults", function()
      local x = forms.new(DEF)
      assert.equal("x", x.name)
      assert.equal(NS, x.ns)
      assert.equal("form", x.attr.type)
      assert.equal("Collect posture", x:find("title#"))
      local ins = {}
      for i in x:children("instructions") do ins[#ins + 1] = i:get_text() end
      assert.same({ "Pick a target.", "Then pick what to collect." }, ins)
      local fields = {}
      for f in x:children("field") do fields[#fields + 1] = f end
      -- FORM_TYPE comes first, as a hidden field
      assert.same({ var = "FORM_TYPE", type = "hidden" }, fields[1].attr)
      assert.equal("urn:example:sacm:collect", fields[1]:find("value#"))
      assert.same({ type = "fixed" }, fields[2].attr)
      local target = fields[3]
      assert.same({ var = "target", type = "jid-single", label = "Endpoint" }, target.attr)
      assert.is_not_nil(target:child("required", NS))
      assert.equal("Who to ask", target:find("desc#"))
      assert.equal("0", fields[4]:find("value#"), "booleans go out as 0/1")
      local kinds = fields[5]
      local opts = {}
      for o in kinds:children("option") do opts[#opts + 1] = { o.attr.label, o:find("value#") } end
      assert.same({ { "Packages", "packages" }, { nil, "services" }, { "Users", "users" } }, opts)
      local comment = fields[8]
      local lines = {}
      for v in comment:children("value") do lines[#lines + 1] = v:get_text() end
      assert.same({ "line one", "line two" }, lines, "text-multi: one <value/> per line")
      assert.is_nil(fields[11].attr.type)
    end)

    it("writes submit forms with vars and values only", function()
      local x = forms.new { type = "submit", title = "ignored", fields = {
        { var = "a", type = "boolean", label = "A", value = true, required = true, options = { "x" } },
      } }
      assert.equal('<x xmlns="jabber:x:data" type="submit"><field var="a"><value>1</value></field></x>',
        xml.serialize(x))
      assert.equal('<x xmlns="jabber:x:data" type="cancel"/>', xml.serialize(forms.new { type = "cancel" }))
    end)

    it("writes multi-item results with reported fields", function()
      local x = forms.new { type = "result", title = "Endpoints",
        reported = { { var = "jid", type = "jid-single", label = "JID" }, { var = "ok", type = "boolean" },
          { var = "tags", type = "list-multi" } },
        items = { { jid = "a@grid", ok = true, tags = { "x", "y" } }, { jid = "b@grid", ok = false } } }
      local items = {}
      for item in x:children("item") do items[#items + 1] = item end
      assert.equal(2, #items)
      assert.equal("jid-single", x:find("reported/field@type"))
      local parsed = forms.parse(wire(x))
      assert.equal(3, #parsed.reported)
      assert.same({ { jid = "a@grid", ok = true, tags = { "x", "y" } }, { jid = "b@grid", ok = false, tags = {} } },
        parsed.items)
    end)

    it("raises on bad definitions", function()
      raises("unknown form type", forms.new, { type = "bogus" })
      raises("unknown field type 'numeric'", forms.new, { fields = { { var = "a", type = "numeric" } } })
      raises("only fixed fields may lack a var", forms.new, { fields = { { type = "text-single" } } })
      raises("duplicate var 'a'", forms.new, { fields = { { var = "a" }, { var = "a" } } })
      raises("FORM_TYPE", forms.new, { form_type = "urn:x", fields = { { var = "FORM_TYPE", type = "hidden" } } })
      raises("a text%-single field takes one value, got 2", forms.new,
        { fields = { { var = "a", value = { "x", "y" }, type = "text-single" } } })
      raises("a value must be a string", forms.new, { fields = { { var = "a", value = { {} } } } })
      raises("items need reported", forms.new, { type = "result", items = { {} } })
    end)
  end)

  describe("parse", function()
    it("round-trips a definition with typed values", function()
      local form = assert(forms.parse(wire(forms.new(DEF))))
      assert.equal("form", form.type)
      assert.equal("Collect posture", form.title)
      assert.equal("Pick a target.\nThen pick what to collect.", form.instructions)
      assert.equal("urn:example:sacm:collect", form.form_type)
      assert.equal(11, #form.fields)
      assert.is_nil(form.values.FORM_TYPE)
      assert.same({
        deep = false, kinds = { "packages" }, mode = "fast", notify = {}, comment = { "line one", "line two" },
        state = "s-1",
      }, form.values)
      local target = form.fields[3]
      assert.equal("target", target.var)
      assert.equal("jid-single", target.type)
      assert.equal("Endpoint", target.label)
      assert.equal("Who to ask", target.desc)
      assert.is_true(target.required)
      assert.same({ { label = "Packages", value = "packages" }, { value = "services" }, { label = "Users", value = "users" } },
        form.fields[5].options)
      assert.equal("text-single", form.fields[11].type, "an untyped field of a form is text-single")
    end)

    it("gives back a definition: a parsed form builds the same element again", function()
      local el = forms.new(DEF)
      local form = forms.parse(wire(el))
      local again = forms.new(form)
      assert.same(form, forms.parse(wire(again)))
      raises("give FORM_TYPE as form_type", forms.new,
        { form_type = "urn:a", fields = { { var = "FORM_TYPE", type = "hidden", value = "urn:b" } } })
    end)

    it("parses forms as other software writes them", function()
      local form = assert(forms.parse(P([[
        <x xmlns='jabber:x:data' type='result'>
          <field var='FORM_TYPE'><value>urn:x</value></field>
          <field var='flag' type='boolean'><value>true</value></field>
          <field var='off' type='boolean'><value>false</value></field>
          <field var='bad' type='boolean'><value>yes</value></field>
          <field var='many'><value>a</value><value>b</value></field>
          <field var='one'><value>only</value></field>
          <field var='weird' type='no-such-type'><value>v</value></field>
          <field var='empty' type='text-single'/>
          <other xmlns='urn:other'/>
        </x>]])))
      assert.equal("urn:x", form.form_type)
      assert.same({ flag = true, off = false, bad = "yes", many = { "a", "b" }, one = "only", weird = "v" }, form.values)
      assert.equal("not a boolean: 'yes'", form.fields[4].problem)
    end)

    it("types an untyped submission by the form it answers", function()
      local x = P("<x xmlns='jabber:x:data' type='submit'><field var='kinds'><value>services</value></field>"
        .. "<field var='deep'><value>1</value></field><field var='comment'><value>x</value></field></x>")
      local form = forms.parse(x, DEF)
      assert.same({ kinds = { "services" }, deep = true, comment = { "x" } }, form.values)
      assert.same({ kinds = "services", deep = "1", comment = "x" }, forms.parse(x).values)
    end)

    it("reads XEP-0122 integer datatypes as integers and flags text that is not one", function()
      local x = xml.parse([[<x xmlns='jabber:x:data' type='result'>
        <field var='n' type='text-single'><value> 42 </value>
          <validate xmlns='http://jabber.org/protocol/xdata-validate' datatype='xs:integer'/></field>
        <field var='bad'><value>4x</value></field>
        <field var='max'><value>max</value></field></x>]])
      local form = forms.parse(x, { fields = { { var = "bad", datatype = "xs:int" },
        { var = "max", datatype = "pubsub:integer-or-max" } } })
      assert.equal(42, form.values.n)
      assert.equal("xs:integer", form.fields[1].datatype)
      assert.equal("4x", form.values.bad)
      assert.matches("not an integer", form.fields[2].problem)
      assert.equal("max", form.values.max)
      assert.is_nil(form.fields[3].problem)
      -- and a definition with a datatype writes it back
      local again = forms.new({ fields = { { var = "n", type = "text-single", datatype = "xs:integer", value = 7.0 } } })
      assert.equal("xs:integer", again:child("field", forms.NS):child("validate", forms.NS_VALIDATE).attr.datatype)
      assert.equal("7", again:child("field", forms.NS):child("value", forms.NS):get_text())
    end)

    it("refuses what is not a data form, without raising", function()
      for _, bad in ipairs({ P("<x xmlns='urn:other'/>"), P("<y xmlns='jabber:x:data'/>"), "text", 42 }) do
        local form, err = forms.parse(bad)
        assert.is_nil(form)
        assert.equal("bad-request", err.condition)
      end
    end)

    it("finds a form in a payload, by FORM_TYPE", function()
      local cmd = xml.element("command", { xmlns = "http://jabber.org/protocol/commands" })
      cmd:add(forms.new { type = "result", form_type = "urn:a", fields = {} })
      cmd:add(forms.new { type = "result", form_type = "urn:b", fields = {} })
      assert.equal("urn:a", forms.parse(forms.find(cmd)).form_type)
      assert.equal("urn:b", forms.parse(forms.find(cmd, "urn:b")).form_type)
      assert.is_nil(forms.find(cmd, "urn:c"))
    end)
  end)

  describe("submit", function()
    it("answers a form with typed values, its FORM_TYPE and the defaults left alone", function()
      local form = forms.parse(wire(forms.new(DEF)))
      local x = forms.submit(form, {
        target = "host1@grid.example/agent", deep = true, kinds = { "packages", "users" },
        notify = { "a@grid", "b@grid" }, comment = "one\ntwo\nthree", unrelated = "not sent",
      })
      assert.equal("submit", x.attr.type)
      assert.is_nil(x:child("title"))
      local back = forms.parse(wire(x), DEF)
      assert.equal("urn:example:sacm:collect", back.form_type)
      assert.same({
        target = "host1@grid.example/agent", deep = true, kinds = { "packages", "users" }, mode = "fast",
        notify = { "a@grid", "b@grid" }, comment = { "one", "two", "three" }, state = "s-1",
      }, back.values)
      for f in x:children("field") do
        assert.is_nil(f.attr.type)
        assert.is_nil(f.attr.label)
        assert.is_nil(f:child("option"))
      end
    end)

    it("takes a definition or a plain field list, and no form at all", function()
      local x = forms.submit({ { var = "n", type = "text-single" }, { var = "b", type = "boolean" } }, { n = 5, b = false })
      assert.same({ n = "5", b = "0" }, forms.parse(x).values)
      x = forms.submit(nil, { z = "last", a = { "1", "2" }, m = true })
      local vars = {}
      for f in x:children("field") do vars[#vars + 1] = f.attr.var end
      assert.same({ "a", "m", "z" }, vars)
      assert.same({ z = "last", a = { "1", "2" }, m = "1" }, forms.parse(x).values)
    end)
  end)

  describe("validate", function()
    it("returns typed, clean values for a good submission", function()
      local sub = forms.parse(wire(forms.submit(DEF, { target = "h@grid", kinds = { "services" }, deep = "true" })))
      local values = assert(forms.validate(DEF, sub.values))
      assert.same({
        target = "h@grid", deep = true, kinds = { "services" }, mode = "fast", comment = { "line one", "line two" },
        state = "s-1",
      }, values)
      -- Lua values validate too; a missing boolean is false; unknown keys are dropped
      values = assert(forms.validate(DEF, { target = "h@grid", extra = 1, comment = { "a\nb", "c" } }))
      assert.is_false(values.deep)
      assert.is_nil(values.extra)
      assert.same({ "a", "b", "c" }, values.comment)
    end)

    it("lists every bad field with its reason", function()
      local ok, err = forms.validate(DEF, {
        target = "not a jid@", deep = "maybe", kinds = { "packages", "kernels" }, mode = "turbo",
        notify = { "ok@grid", "@bad" }, name = { "a", "b" },
      })
      assert.is_nil(ok)
      assert.equal("bad-request", err.condition)
      assert.same({
        target = "not a valid JID: 'not a jid@'",
        deep = "not a boolean: 'maybe'",
        kinds = "'kernels' is not one of the options",
        mode = "'turbo' is not one of the options",
        notify = "not a valid JID: '@bad'",
        name = "expects one value, got 2",
      }, err.fields)
      assert.matches("^bad%-request: invalid form: target: not a valid JID", tostring(err))
      assert.matches("deep: not a boolean: 'maybe'", err.text, 1, true)
    end)

    it("reports missing required fields, empty ones too", function()
      for _, v in ipairs({ {}, { target = "" }, { target = {} } }) do
        local ok, err = forms.validate(DEF, v)
        assert.is_nil(ok)
        assert.same({ target = "required" }, err.fields)
      end
      local ok, err = forms.validate({ fields = { { var = "tags", type = "list-multi", required = true } } }, { tags = {} })
      assert.is_nil(ok)
      assert.same({ tags = "required" }, err.fields)
    end)

    it("checks the FORM_TYPE of a submission", function()
      local ok, err = forms.validate(DEF, { FORM_TYPE = "urn:other", target = "h@grid" })
      assert.is_nil(ok)
      assert.same({ FORM_TYPE = "expected 'urn:example:sacm:collect'" }, err.fields)
      assert.is_truthy(forms.validate(DEF, { FORM_TYPE = "urn:example:sacm:collect", target = "h@grid" }))
    end)

    it("validates against a parsed form and an element", function()
      local el = forms.new(DEF)
      local form = forms.parse(wire(el))
      for _, def in ipairs({ el, form }) do
        local ok, err = forms.validate(def, { target = "h@grid", mode = "turbo" })
        assert.is_nil(ok)
        assert.same({ mode = "'turbo' is not one of the options" }, err.fields)
      end
    end)

    it("accepts any value for list fields without options", function()
      local def = { fields = { { var = "l", type = "list-single" }, { var = "m", type = "list-multi" } } }
      assert.same({ l = "anything", m = { "x" } }, forms.validate(def, { l = "anything", m = "x" }))
    end)
  end)
end)
