-- fuzz/compare.lua: describes the first difference between two values (element trees, decoded
-- payloads, forms), for the targets that check a round trip. nil when they are equal.
local M = {}

local function describe(v)
  if type(v) == "string" then return ("%q"):format(#v > 80 and v:sub(1, 80) .. "..." or v) end
  return tostring(v)
end

local function diff(a, b, path, seen)
  if a == b then return nil end
  if type(a) ~= "table" or type(b) ~= "table" then
    -- NaN is the one value unequal to itself: the same NaN on both sides is no difference
    if type(a) == "number" and type(b) == "number" and a ~= a and b ~= b then return nil end
    return ("%s: %s ~= %s"):format(path, describe(a), describe(b))
  end
  if seen[a] == b then return nil end
  seen[a] = b
  for k, v in pairs(a) do
    local d = diff(v, b[k], path .. "." .. tostring(k), seen)
    if d then return d end
  end
  for k, v in pairs(b) do
    if a[k] == nil then return ("%s.%s: nil ~= %s"):format(path, tostring(k), describe(v)) end
  end
  return nil
end

--- difference(a, b [, name]) -> text naming the first place where a and b differ, or nil.
function M.difference(a, b, name)
  return diff(a, b, name or "", {})
end

return M
