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
end)
