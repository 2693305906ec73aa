-- fuzz/xml_roundtrip.lua: the XML binding is symmetric. Whatever sacm.xml.parse accepts,
-- serialize writes (compact and indented), and parsing what it wrote gives the same tree.
-- A refusal must be an error object with a condition and a position, never a raise.
local xml = require "sacm.xml"
local compare = require "compare"

return function(data)
  local el, err = xml.parse(data)
  if not el then
    if type(err) ~= "table" or type(err.condition) ~= "string" or type(err.text) ~= "string" then
      error("parse refused without an error object: " .. tostring(err))
    end
    return
  end
  local text = xml.serialize(el) -- raising here is the finding: parse accepted it
  local again, err2 = xml.parse(text)
  if not again then
    error(("serialize wrote what parse refuses (%s):\n%s"):format(tostring(err2), text))
  end
  local d = compare.difference(el, again, "root")
  if d then error(("the tree changed in a round trip: %s\nwritten: %s"):format(d, text)) end
  if not xml.equal(el, again) then error("xml.equal disagrees with the comparison:\n" .. text) end
  -- indentation adds whitespace only between elements: the result parses, and serializes the
  -- same way again
  local pretty = xml.serialize(el, { indent = "  " })
  local reparsed, err3 = xml.parse(pretty)
  if not reparsed then
    error(("the indented form does not parse (%s):\n%s"):format(tostring(err3), pretty))
  end
  local pretty2 = xml.serialize(reparsed, { indent = "  " })
  if pretty2 ~= pretty then
    error(("indenting is not stable:\n%s\n---\n%s"):format(pretty, pretty2))
  end
end
