-- sacm.grid.payload: the posture, result and status formats of docs/protocol.md, both ways, and
-- what the decoders refuse.
local payload = require "sacm.grid.payload"
local proto = require "sacm.grid.protocol"
local xml = require "sacm.xml"

describe("sacm.grid.payload", function()
  local collected = 1795000000.25

  it("round-trips posture with typed attributes and records through XML text", function()
    local p = {
      id = "p-1", kind = "sockets", endpoint = "e1", hostname = "web1", collected = collected,
      collector = "collector@grid.example/web1", correlation = "c-9", module_version = 2,
      data = {
        attributes = { count = 2, source = "proc", ratio = 0.5, complete = true },
        items = { { proto = "tcp", port = 22, address = "0.0.0.0" },
                  { proto = "udp", port = 53, address = "::1", note = "<&'\">" } },
      },
    }
    local text = tostring(payload.posture(p))
    local back = assert(payload.parse_posture(assert(xml.parse(text))))
    assert.same(p.data, back.data)
    assert.equal(math.type(back.data.items[1].port), "integer")
    assert.equal("c-9", back.correlation)
    assert.equal(2, back.module_version)
    assert.near(collected, back.collected, 0.001)
  end)

  it("carries a failed collection as an error, not as empty posture", function()
    local el = payload.posture({ id = "p-2", kind = "sshd", endpoint = "e1",
      error = { condition = "timeout", text = "sshd -T did not finish in 20 s" } })
    local back = assert(payload.parse_posture(assert(xml.parse(tostring(el)))))
    assert.same({ condition = "timeout", text = "sshd -T did not finish in 20 s" }, back.error)
    assert.is_nil(back.data)
  end)

  it("refuses posture that does not follow the format, without raising", function()
    local function refuse(text, pattern)
      local p, err = payload.parse_posture(assert(xml.parse(text)))
      assert.is_nil(p)
      assert.equal("bad-request", err.condition)
      assert.matches(pattern, err.text)
    end
    local ns = proto.NS_POSTURE
    refuse("<posture xmlns='urn:other'/>", "not a posture")
    refuse(("<posture xmlns='%s' kind='os' endpoint='e' collected='2026-01-01T00:00:00Z'/>"):format(ns), "without id")
    refuse(("<posture xmlns='%s' id='1' kind='../x' endpoint='e' collected='2026-01-01T00:00:00Z'/>"):format(ns),
      "not a name")
    refuse(("<posture xmlns='%s' id='1' kind='os' endpoint='e' collected='yesterday'/>"):format(ns), "date%-time")
    refuse(("<posture xmlns='%s' id='1' kind='os' endpoint='e' collected='2026-01-01T00:00:00Z'>"
      .. "<attr name='n' type='int'>1e9</attr></posture>"):format(ns), "not an integer")
    refuse(("<posture xmlns='%s' id='1' kind='os' endpoint='e' collected='2026-01-01T00:00:00Z'>"
      .. "<item><attr type='bool'>true</attr></item></posture>"):format(ns), "without a name")
  end)

  it("round-trips results and bounds the evidence", function()
    local evidence = {}
    for i = 1, payload.MAX_EVIDENCE + 5 do evidence[i] = "line " .. i end
    evidence[1] = string.rep("x", payload.MAX_TEXT + 100)
    local r = { id = "r-1", endpoint = "e1", hostname = "web1", rule_id = "ssh-root-login", policy_id = "ssh",
      policy_version = string.rep("ab", 32), result = "fail", severity = "high", title = "No root login over SSH",
      evaluated = collected, evaluator = "evaluator@grid.example/e", correlation = "c-9",
      posture_ids = { "p-1", "p-3" }, evidence = evidence }
    local back = assert(payload.parse_result(assert(xml.parse(tostring(payload.result(r))))))
    assert.equal("fail", back.result)
    assert.same({ "p-1", "p-3" }, back.posture_ids)
    assert.equal(payload.MAX_EVIDENCE, #back.evidence)
    assert.equal(payload.MAX_TEXT, #back.evidence[1])
    assert.equal("line 2", back.evidence[2])
    assert.has_error(function() payload.result({ result = "maybe" }) end)
    local bad = tostring(payload.result(r)):gsub("result=\"fail\"", "result=\"maybe\"")
    local none, err = payload.parse_result(assert(xml.parse(bad)))
    assert.is_nil(none)
    assert.matches("not an XCCDF result", err.text)
  end)

  it("round-trips status notifications", function()
    local el = payload.status({ type = "policy-rejected", component = "evaluator@grid.example/e",
      role = "evaluator", text = "policies/ssh.lua:3: unexpected symbol", fields = { file = "ssh.lua" } })
    local back = assert(payload.parse_status(assert(xml.parse(tostring(el)))))
    assert.equal("policy-rejected", back.type)
    assert.equal("ssh.lua", back.fields.file)
    assert.matches("unexpected symbol", back.text)
  end)

  local DIGEST = ("ab"):rep(32)
  local function posture_el(id, extra)
    local p = { id = id, kind = "os", endpoint = "e1", hostname = "web1", collected = 1795000000,
      collector = "c@grid.example/x", data = { attributes = { hostname = "web1" }, items = {} } }
    for k, v in pairs(extra or {}) do p[k] = v end
    return payload.posture(p)
  end

  it("announces large posture by reference, and refuses references that are not https, sized and hashed", function()
    local el = posture_el("p1", { data = false, ref = { href = "https://repo.example:8443/grid/content/p1?key=k",
      size = 1234567, digest = DIGEST } })
    local back = assert(payload.parse_posture(assert(xml.parse(xml.serialize(el)))))
    assert.same({ href = "https://repo.example:8443/grid/content/p1?key=k", size = 1234567, digest = DIGEST }, back.ref)
    assert.is_nil(back.data)
    local text = xml.serialize(el)
    for _, case in ipairs {
      { text:gsub("https://", "http://"), "is not an https URL" },
      { text:gsub('size="1234567"', 'size="lots"'), "is not a byte count" },
      { text:gsub("sha%-256:", "md5:"), "is not sha%-256:<64 hex digits>" },
    } do
      local none, err = payload.parse_posture(assert(xml.parse(case[1])))
      assert.is_nil(none)
      assert.matches(case[2], err.text)
    end
  end)

  it("round-trips posture sets and refuses postures of another endpoint in them", function()
    local set = payload.posture_set({ id = "s1", endpoint = "e1", hostname = "web1", collector = "c@grid.example/x",
      postures = { posture_el("p1"), posture_el("p2") } })
    local back = assert(payload.parse_posture_set(assert(xml.parse(xml.serialize(set)))))
    assert.equal(2, #back.postures)
    assert.equal("p2", back.postures[2].id)
    local mixed = payload.posture_set({ id = "s2", endpoint = "e1", collector = "c@grid.example/x",
      postures = { posture_el("p1"), posture_el("p3", { endpoint = "e2" }) } })
    local none, err = payload.parse_posture_set(assert(xml.parse(xml.serialize(mixed))))
    assert.is_nil(none)
    assert.matches("posture p3 is of another endpoint %(e2%)", err.text)
    none, err = payload.parse_posture_set(assert(xml.parse(xml.serialize(payload.posture_set({ id = "s3",
      endpoint = "e1", postures = {} })))))
    assert.is_nil(none)
    assert.matches("holds no posture", err.text)
  end)

  it("round-trips result sets, checks their totals, and reads a pending set announced by its totals", function()
    local function result_el(id)
      return payload.result({ id = id, endpoint = "e1", rule_id = "r-" .. id, policy_id = "p", policy_version = "v",
        result = "pass", evaluated = 1795000000, evaluator = "ev@grid.example/e", posture_collected = 1794999000 })
    end
    local set = payload.result_set({ id = "rs1", endpoint = "e1", evaluator = "ev@grid.example/e", evaluated = 1795000000,
      totals = { total = 2, pass = 2 }, results = { result_el("a"), result_el("b") } })
    local back = assert(payload.parse_result_set(assert(xml.parse(xml.serialize(set)))))
    assert.equal(2, #back.results)
    assert.equal(1794999000, back.results[1].posture_collected)
    local wrong = xml.serialize(set):gsub('total="2"', 'total="3"')
    local none, err = payload.parse_result_set(assert(xml.parse(wrong)))
    assert.is_nil(none)
    assert.matches("total='3' but it holds 2 results", err.text)
    local pending = payload.result_set({ id = "rs2", endpoint = "e1", evaluator = "ev@grid.example/e",
      evaluated = 1795000000, totals = { total = 5, fail = 5 } })
    pending.attr.delivery = "pending"
    back = assert(payload.parse_result_set(assert(xml.parse(xml.serialize(pending)))))
    assert.is_true(back.pending)
    assert.is_nil(back.results)
    assert.equal(5, back.totals.fail)
  end)

  it("cuts long text on a UTF-8 character boundary", function()
    local s = ("é"):rep(3000) -- 6000 bytes of two-byte characters
    local cut = payload.clip(s)
    assert.is_true(#cut <= payload.MAX_TEXT)
    assert.truthy(utf8.len(cut), "the cut text must stay valid UTF-8")
    assert.matches("%.%.%.$", cut)
  end)

  it("writes text XML cannot carry visibly escaped in results, and posture values exactly, as base64", function()
    assert.equal("a\\x00b \\x1B[0m caf\\xE9 x\\uFFFEy ok", payload.wire_text("a\0b \27[0m caf\233 x\239\191\190y ok"))
    assert.equal("tab\tand\nlines", payload.wire_text("tab\tand\nlines"))
    local r = { id = "r-1", endpoint = "e1", rule_id = "x", policy_id = "p", policy_version = "v", result = "fail",
      title = "t\255", evidence = { "\0", ("\233"):rep(5000) }, evaluated = collected }
    local back = assert(payload.parse_result(assert(xml.parse(xml.serialize(payload.result(r))))))
    assert.equal("t\\xFF", back.title)
    assert.equal("\\x00", back.evidence[1])
    assert.is_true(#back.evidence[2] <= payload.MAX_TEXT)
    assert.matches("^\\xE9\\xE9.*%.%.%.$", back.evidence[2])
    -- posture is evidence: a value with such bytes comes back byte for byte
    local odd = "caf\233 \0 \27 \255 ok"
    local p = { id = "p-9", kind = "files", endpoint = "e1", collected = collected,
      data = { attributes = { motd = odd, plain = "plain" }, items = { { name = "\200" }, { ["k\255"] = "v" } } } }
    local el = payload.posture(p)
    local text = xml.serialize(el)
    assert.matches('type="base64"', text)
    local got = assert(payload.parse_posture(assert(xml.parse(text))))
    assert.same(p.data.attributes, got.data.attributes)
    assert.same(p.data.items[1], got.data.items[1])
    assert.same({ ["k\\xFF"] = "v" }, got.data.items[2]) -- a name is escaped, visibly
    local bad = assert(xml.parse("<posture xmlns='urn:sacmrun:posture:1' id='p' kind='k' endpoint='e' "
      .. "collected='2026-01-01T00:00:00Z'><attr name='a' type='base64'>!!</attr></posture>"))
    assert.matches("attr 'a': not base64", tostring(select(2, payload.parse_posture(bad))))
  end)
end)

