--- sacm.log: leveled logging to the process's one log sink (stderr).
-- local log = require("sacm.log").new("collector"); log.info("collected %d packages", n)
local core = require "sacm._log"

---@class sacm.Logger
---@field area string
---@field error fun(fmt: any, ...: any) at level error: string.format(fmt, ...)
---@field warn fun(fmt: any, ...: any)
---@field info fun(fmt: any, ...: any)
---@field debug fun(fmt: any, ...: any)
---@field trace fun(fmt: any, ...: any)
---@field enabled fun(level: string): boolean

local M = {}
local levels = { "error", "warn", "info", "debug", "trace" }

local function emit(level, area, fmt, ...)
  if not core.enabled(level) then return end
  local msg
  if select("#", ...) > 0 then
    local ok, s = pcall(string.format, fmt, ...)
    msg = ok and s or (tostring(fmt) .. " (bad log format: " .. tostring(s) .. ")")
  else
    msg = tostring(fmt)
  end
  core.write(level, area, msg)
end

--- new(area) -> logger with error/warn/info/debug/trace(fmt, ...) functions.
---@param area string shown with every message ("collector")
---@return sacm.Logger
function M.new(area)
  local logger = { area = area }
  for _, level in ipairs(levels) do
    ---@param fmt any a string.format format (or any value, shown with tostring)
    ---@param ... any
    logger[level] = function(fmt, ...) emit(level, area, fmt, ...) end
  end
  function logger.enabled(level) return core.enabled(level) end
  return logger
end

--- level([name]) -> the current level's name; with a name, sets it first.
---@type fun(name?: string): string
M.level = core.level
---@type fun(level: string): boolean
M.enabled = core.enabled

local default = M.new("lua")
for _, level in ipairs(levels) do M[level] = default[level] end

return M
