--- sacm.rolie.cache: finished responses of the ROLIE provider (sacm.rolie.server), kept until
-- the store they were read from changes.
--
--   local c = cache.new(4 * 1024 * 1024)
--   local hit = c:get(key, store:version())        -- nil: render, then
--   c:put(key, { body = body, ... }, a, b)          -- a, b as store:version() returned them
--
-- An entry is valid only while the store's version is the one it was rendered under, so a page
-- requested after a write committed is rendered again, never served from before it. The version
-- must be read before the query that renders the entry: a write landing after that read makes
-- the entry unreachable at once, whatever the query saw. A store that gives no version
-- (PostgreSQL, shared by several processes) is not cached at all.
--
-- Memory is bounded by bytes of body, in two generations: when the newer one holds `limit`
-- bytes the older one is dropped, so at most about twice `limit` is kept and what is being
-- requested survives.
local M = {}

local Cache = {}
Cache.__index = Cache

--- new(limit) -> cache holding up to about 2 * limit bytes of bodies.
function M.new(limit)
  return setmetatable({ limit = limit, new = {}, old = {}, bytes = 0 }, Cache)
end

--- cache:get(key, a, b) -> entry | nil: the entry put under this key at version (a, b).
function Cache:get(key, a, b)
  if a == nil then return nil end
  local e = self.new[key]
  if e then
    if e.a == a and e.b == b then return e end
    return nil
  end
  e = self.old[key]
  if e and e.a == a and e.b == b then
    self:put(key, e, a, b) -- in use: keep it through the next generation change
    return e
  end
  return nil
end

--- cache:put(key, entry, a, b) -> entry. entry.body (a string) is what is counted against the
-- limit. Does nothing without a version (a == nil).
function Cache:put(key, e, a, b)
  if a == nil then return e end
  e.a, e.b = a, b
  local size = #e.body
  local prev = self.new[key]
  if prev then self.bytes = self.bytes - #prev.body end
  if self.bytes + size > self.limit and self.bytes > 0 then
    self.old, self.new, self.bytes = self.new, {}, 0
  end
  self.new[key] = e
  self.bytes = self.bytes + size
  return e
end

--- cache:clear(): forgets every entry.
function Cache:clear()
  self.new, self.old, self.bytes = {}, {}, 0
end

return M
