--- sacm.ratelimit: per-peer token buckets, so no single peer can keep a role busy with expensive
-- requests (collect, evaluate, query) while others wait. See docs/api/ratelimit.md.
--
--   local limiter = ratelimit.new({ rate = 2, burst = 10 })
--   local ok, wait = limiter:take("orchestrator@grid.example")
--   if not ok then refuse(("try again in %.1f s"):format(wait)) end
--
-- Each key (a bare JID) holds up to `burst` tokens and regains `rate` tokens a second; a request
-- takes one. A key whose bucket is full again is forgotten, so memory stays bounded by the peers
-- that were busy in the last burst/rate seconds (and by max_keys in all).
local time = require "sacm.time"

local M = {}

-- The grid's defaults per command (docs/protocol.md 8): a burst for an assessment's worth of
-- requests at once, then a steady rate well above what one orchestrator needs.
M.COMMAND_LIMITS = {
  collect = { rate = 2, burst = 10 },
  evaluate = { rate = 2, burst = 10 },
  query = { rate = 10, burst = 30 },
  get = { rate = 10, burst = 30 },
}
M.MAX_KEYS = 10000

---@class sacm.ratelimit.Limiter token buckets per key (ratelimit.new)
---@field refused integer how many takes were refused
local Limiter = {}
Limiter.__index = Limiter

local function positive(v, what)
  if type(v) ~= "number" or v ~= v or v <= 0 or v == math.huge then
    error(("ratelimit: %s must be a positive finite number, got %s"):format(what, tostring(v)), 3)
  end
  return v
end

--- new({rate, burst [, max_keys] [, clock]}) -> limiter. rate: tokens regained per second;
-- burst: the most a key may hold (and take in a row); clock: a function giving seconds
-- (default sacm.time.monotonic).
---@param opts {rate: number, burst: number, max_keys?: integer, clock?: fun(): number}
---@return sacm.ratelimit.Limiter
function M.new(opts)
  if type(opts) ~= "table" then error("ratelimit.new({rate =, burst =})", 2) end
  return setmetatable({
    rate = positive(opts.rate, "rate"), burst = positive(opts.burst, "burst"),
    max_keys = opts.max_keys or M.MAX_KEYS, clock = opts.clock or time.monotonic,
    buckets = {}, count = 0, refused = 0,
  }, Limiter)
end

-- Forgets the keys whose buckets are full again (they would act exactly as new ones).
function Limiter:_prune(now)
  for key, b in pairs(self.buckets) do
    if b.tokens + (now - b.at) * self.rate >= self.burst then
      self.buckets[key] = nil
      self.count = self.count - 1
    end
  end
end

--- limiter:take(key) -> true | nil, seconds until a token is there again. With more than max_keys
-- busy keys at once a new key is refused too (the table of peers stays bounded).
---@param key any
---@return true? ok
---@return number? wait seconds until a token is there again
function Limiter:take(key)
  local now = self.clock()
  local b = self.buckets[key]
  if not b then
    if self.count >= self.max_keys then self:_prune(now) end
    if self.count >= self.max_keys then
      self.refused = self.refused + 1
      return nil, 1 / self.rate
    end
    b = { tokens = self.burst, at = now }
    self.buckets[key] = b
    self.count = self.count + 1
  end
  b.tokens = math.min(self.burst, b.tokens + (now - b.at) * self.rate)
  b.at = now
  if b.tokens < 1 then
    self.refused = self.refused + 1
    return nil, (1 - b.tokens) / self.rate
  end
  b.tokens = b.tokens - 1
  return true
end

--- limiter:describe() -> "2 a second, bursts of 10", for error texts.
---@return string
function Limiter:describe()
  return ("%g a second, bursts of %g"):format(self.rate, self.burst)
end

function Limiter:__tostring()
  return ("rate limit of %s (%d peers busy, %d refused)"):format(self:describe(), self.count, self.refused)
end

--- for_command(name [, overrides]) -> limiter | nil. The limiter of a grid command from
-- COMMAND_LIMITS, or from overrides[name] ({rate, burst}, or false for none), as role options
-- (rate_limits) give them.
---@param name string a grid command's name
---@param overrides? table<string, {rate: number, burst: number}|false>
---@return sacm.ratelimit.Limiter? limiter nil: no limit
function M.for_command(name, overrides)
  local limits = M.COMMAND_LIMITS[name]
  if overrides and overrides[name] ~= nil then limits = overrides[name] end
  if not limits then return nil end
  return M.new(limits)
end

return M
