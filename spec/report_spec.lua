-- sacm.report and sacm.json: what a person and a program read after an assessment.
local report = require "sacm.report"
local json = require "sacm.json"

local function result(endpoint, hostname, rule, value, severity, evidence)
  return { id = rule .. "@" .. endpoint, endpoint = endpoint, hostname = hostname, rule_id = rule, policy_id = "p",
    policy_version = "abc", result = value, severity = severity, title = "Title of " .. rule,
    evidence = evidence or {}, posture_ids = { "x" }, evaluated = 1795000000 }
end

describe("sacm.report", function()
  local a = { correlation = "c-1", results = {
    result("e2", "web2", "r-pass", "pass", "high"),
    result("e1", "web1", "r-low", "fail", "low", { "low evidence" }),
    result("e1", "web1", "r-high", "fail", "high", { "why 1", "why 2" }),
    result("e1", "web1", "r-err", "error", "medium", { "instruction budget exceeded" }),
    result("e1", "web1", "r-na", "notapplicable", "info"),
  } }

  it("groups by endpoint, puts failures first by severity, and ends with the totals", function()
    local text = report.text(a)
    local lines = {}
    for line in text:gmatch("[^\n]*") do lines[#lines + 1] = line end
    while lines[#lines] == "" do lines[#lines] = nil end
    assert.equal("totals: pass=1 fail=2 error=1 notapplicable=1 notchecked=0", lines[#lines])
    local web1, high, low, err, web2 = text:find("endpoint web1", 1, true), text:find("r-high", 1, true),
      text:find("r-low", 1, true), text:find("r-err", 1, true), text:find("endpoint web2", 1, true)
    assert.is_true(web1 < high and high < low and low < err and err < web2)
    assert.matches("why 2", text)
    assert.matches("endpoint web1 %[e1%]: 4 rules, 2 fail, 1 error", text)
  end)

  it("writes JSON with totals and every result", function()
    local text = report.json(a)
    assert.matches('"fail": 2', text)
    assert.matches('"rule_id": "r%-high"', text)
    assert.matches('"evidence": %[%]', text) -- empty evidence stays an array
  end)
end)

describe("sacm.json", function()
  it("encodes objects with sorted keys, arrays, escapes and numbers", function()
    assert.equal('{"a":[1,2.5,true],"b":"x\\"\\n\\u0001","c":{},"d":[]}',
      json.encode({ b = "x\"\n\1", a = { 1, 2.5, true }, c = {}, d = json.as_array({}) }))
    assert.equal('{\n  "k": [\n    1\n  ]\n}', json.encode({ k = { 1 } }, { indent = "  " }))
  end)

  it("refuses what JSON cannot hold", function()
    assert.has_error(function() json.encode(0 / 0) end)
    assert.has_error(function() json.encode({ [true] = 1 }) end)
    assert.has_error(function() json.encode("\xff") end)
    local t = {}
    t.self = t
    assert.has_error(function() json.encode(t) end)
  end)
end)
