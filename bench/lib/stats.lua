-- Order statistics the benchmarks report, on a sorted copy (the caller's list keeps its order).
local M = {}

local function sorted_copy(list)
  local s = table.move(list, 1, #list, 1, {})
  table.sort(s)
  return s
end

--- median(list) -> the lower median (the middle value; of two, the smaller).
function M.median(list)
  local s = sorted_copy(list)
  return s[math.max(1, (#s + 1) // 2)]
end

--- percentile(list, p) -> the nearest-rank p-th percentile (0 < p <= 1), or nil for an empty list.
function M.percentile(list, p)
  local s = sorted_copy(list)
  return s[math.max(1, math.ceil(p * #s))]
end

--- max(list) -> the largest value.
function M.max(list)
  return math.max(table.unpack(list))
end

return M
