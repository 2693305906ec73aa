--- sacm.http.pool: the HTTPS client's idle connections, kept for keep-alive (internal).
--
--   local conn = pool.take(key)            -- an idle connection for key, or nil
--   pool.put(key, conn, seconds)           -- parks conn for its next request
--
-- A key names everything a connection was made with that a request must match to use it:
-- scheme, host, port and the TLS options (sacm.http.client makes it). The connections are the
-- C userdata of sacm._http_client; a parked one reads in C to notice the server closing it, and
-- then closes itself, so a dead entry here is only dropped when it is next looked at. Nothing
-- here keeps the loop alive: parked sockets and the expiry timer are unreferenced.
local loop = require "sacm._loop"
local new_timer = require("sacm._timer").new

local M = {}

-- Connections kept idle per key and in all. A grid evaluator talks to one repository, a few
-- tasks at a time; more idle sockets would only hold the server's connection slots.
M.MAX_IDLE_PER_KEY = 4
M.MAX_IDLE = 32
-- Seconds a connection stays idle at most; a server's Keep-Alive: timeout= can shorten it.
M.IDLE_TIMEOUT = 30

-- key -> list of {conn, expires (loop ms)}, the most recently parked last
local idle = {}
local total = 0
local counters = { reused = 0, opened = 0 }
local sweeper

local function close_entry(entry)
  entry.conn:close()
  total = total - 1
end

-- Closes the expired and dead connections; returns the earliest expiry of those left.
local function sweep(now)
  local next_due
  for key, list in pairs(idle) do
    for i = #list, 1, -1 do
      local e = list[i]
      if e.expires <= now or not e.conn:alive() then
        close_entry(e)
        table.remove(list, i)
      elseif not next_due or e.expires < next_due then
        next_due = e.expires
      end
    end
    if #list == 0 then idle[key] = nil end
  end
  return next_due
end

local function schedule(due)
  if not sweeper then
    sweeper = new_timer()
    sweeper:unref() -- idle connections never keep a finished script running
  end
  if sweeper:active() and sweeper:due_in() <= due - loop.now() then return end
  sweeper:start(math.max(0, due - loop.now()), 0, function()
    local next_due = sweep(loop.now())
    if next_due then schedule(next_due) end
  end)
end

-- Closes the connection that has been idle longest (they are the likeliest to be closed by the
-- server anyway), across all keys.
local function evict_oldest()
  local oldest_key, oldest
  for key, list in pairs(idle) do
    if list[1] and (not oldest or list[1].parked < oldest.parked) then oldest_key, oldest = key, list[1] end
  end
  if oldest then
    close_entry(table.remove(idle[oldest_key], 1))
    if #idle[oldest_key] == 0 then idle[oldest_key] = nil end
  end
end

--- take(key) -> an open idle connection for key (now no longer in the pool), or nil.
-- The most recently used comes first: it is the likeliest to be still open, and the others
-- can time out when traffic drops.
---@param key string where the connection goes and with which TLS options
---@return userdata? conn
function M.take(key)
  local list = idle[key]
  if not list then return nil end
  local now = loop.now()
  while #list > 0 do
    local e = table.remove(list)
    total = total - 1
    if e.expires > now and e.conn:alive() then
      if #list == 0 then idle[key] = nil end
      counters.reused = counters.reused + 1
      return e.conn
    end
    e.conn:close()
  end
  idle[key] = nil
  return nil
end

--- put(key, conn, seconds): parks conn for up to `seconds`, or closes it if it cannot be parked.
---@param key string
---@param conn userdata an open connection
---@param seconds number
function M.put(key, conn, seconds)
  if seconds <= 0 or not conn:park() then
    conn:close()
    return
  end
  local list = idle[key]
  if not list then
    list = {}
    idle[key] = list
  end
  if #list >= M.MAX_IDLE_PER_KEY then
    close_entry(table.remove(list, 1))
  end
  if total >= M.MAX_IDLE then evict_oldest() end
  local now = loop.now()
  local entry = { conn = conn, parked = now, expires = now + math.ceil(seconds * 1000) }
  list[#list + 1] = entry
  total = total + 1
  schedule(entry.expires)
end

--- drop(key): closes key's idle connections (after one of them turned out closed by the
-- server: the others were most likely closed at the same time, by a restart or its idle timer).
---@param key string
function M.drop(key)
  for _, e in ipairs(idle[key] or {}) do close_entry(e) end
  idle[key] = nil
end

--- opened(): counts a new connection (for stats).
---(no parameters, no results)
function M.opened()
  counters.opened = counters.opened + 1
end

--- close_idle(): closes every idle connection (the counters stay).
---(no parameters, no results)
function M.close_idle()
  for key in pairs(idle) do M.drop(key) end
  if sweeper then sweeper:stop() end
end

--- stats() -> {idle = open idle connections now, reused = requests sent on a pooled connection,
-- opened = connections opened}, the counters since the program started.
---@return {idle: integer, reused: integer, opened: integer}
function M.stats()
  local due = sweep(loop.now())
  if sweeper and not due then sweeper:stop() end
  return { idle = total, reused = counters.reused, opened = counters.opened }
end

return M
