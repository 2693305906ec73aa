--- sacm._handlers: lists of registered callbacks whose handles take themselves out.
local M = {}

--- add(list, h) -> h, appended to list, with h.remove() (also h:remove()) removing it; removing
-- twice is harmless. Callers iterate over a copy if a callback may remove handles.
function M.add(list, h)
  list[#list + 1] = h
  function h.remove()
    for i = #list, 1, -1 do
      if list[i] == h then table.remove(list, i) end
    end
  end
  return h
end

return M
