-- fuzz/payload.lua: the grid's payload codecs (lua/sacm/grid/payload.lua) on any element.
-- Decoders never raise and refuse with bad-request and a text; what one accepts, its encoder
-- writes, the written text parses, and decoding that gives a value that survives further round
-- trips unchanged (the first may round times to milliseconds and cut texts to MAX_TEXT).
local xml = require "sacm.xml"
local payload = require "sacm.grid.payload"
local compare = require "compare"

local function map(list, fn)
  local out = {}
  for i, v in ipairs(list or {}) do out[i] = fn(v) end
  return out
end

local ENCODE = {
  parse_posture = payload.posture,
  parse_posture_set = function(set)
    return payload.posture_set({ id = set.id, endpoint = set.endpoint, hostname = set.hostname,
      collector = set.collector, correlation = set.correlation, postures = map(set.postures, payload.posture) })
  end,
  parse_result = payload.result,
  parse_result_set = function(set)
    local el = payload.result_set({ id = set.id, endpoint = set.endpoint, hostname = set.hostname,
      evaluator = set.evaluator, evaluated = set.evaluated, correlation = set.correlation, totals = set.totals,
      ref = set.ref, results = set.results and map(set.results, payload.result) })
    -- as the evaluator announces a set the repository does not have yet (roles/evaluator.lua)
    if set.pending then el.attr.delivery = "pending" end
    return el
  end,
  parse_status = payload.status,
}
local DECODERS = { "parse_posture", "parse_posture_set", "parse_result", "parse_result_set", "parse_status" }

-- value -> its encoding, written out and read back, decoded again
local function round_trip(decoder, value, what)
  local text = xml.serialize(ENCODE[decoder](value))
  local el, err = xml.parse(text)
  if not el then error(("%s: the encoding of %s does not parse (%s):\n%s"):format(decoder, what, tostring(err), text)) end
  local again, derr = payload[decoder](el)
  if not again then
    error(("%s: the decoder refuses the encoding of %s: %s\n%s"):format(decoder, what, tostring(derr), text))
  end
  return again, text
end

return function(data)
  local el = xml.parse(data)
  if not el then return end
  for _, decoder in ipairs(DECODERS) do
    local value, err = payload[decoder](el)
    if not value then
      if type(err) ~= "table" or err.condition ~= "bad-request" or type(err.text) ~= "string" then
        error(("%s refused without a bad-request error: %s"):format(decoder, tostring(err)))
      end
    else
      local second = round_trip(decoder, value, "what it accepted")
      local third, text = round_trip(decoder, second, "its own output")
      local d = compare.difference(second, third, decoder)
      if d then error(("%s: a second round trip changes the value: %s\n%s"):format(decoder, d, text)) end
    end
  end
end
