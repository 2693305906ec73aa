-- `make demo`'s script: a real grid of separate sacmrun processes against this host, through a
-- private Prosody, ending with the totals; and nothing it started is left running.
local proc = require "sacm.proc"

describe("examples/demo.lua #e2e", function()
  it("runs a grid, prints the report with the totals last, and stops everything it started", function()
    local bin = os.getenv("SACMRUN_BIN") or "./sacmrun"
    local json = os.tmpname()
    local r = assert(proc.run({ bin, "examples/demo.lua", json }, { timeout = 240 }))
    assert.equal(0, r.code, r.stderr)
    assert.matches("found collector collector@localhost/demo", r.stderr)
    assert.matches("found evaluator evaluator@localhost/demo", r.stderr)
    assert.matches("collector collector@localhost/demo: done", r.stdout)
    local last = r.stdout:match("([^\n]+)\n*$")
    local pass, fail, err, na, nc = last:match(
      "^totals: pass=(%d+) fail=(%d+) error=(%d+) notapplicable=(%d+) notchecked=(%d+)$")
    assert.is_not_nil(pass, last)
    -- every starter rule gave a result, and none of them broke
    local rules = 0
    for _ in r.stdout:gmatch("\n  %u+%s+%l+%s+[%w%-]+%s") do rules = rules + 1 end
    assert.equal(tonumber(pass) + tonumber(fail) + tonumber(err) + tonumber(na) + tonumber(nc), rules)
    assert.is_true(rules >= 12)
    assert.equal("0", err)
    local written = assert(io.open(json)):read("a")
    os.remove(json)
    assert.matches('"totals"', written)
    -- its Prosody and roles are gone: every one of them had the demo's directory on its command line
    local dir = assert(r.stderr:match("files in (%S+)"))
    local left = assert(proc.run({ "pgrep", "-af", dir }))
    assert.equal("", left.stdout)
  end)
end)
