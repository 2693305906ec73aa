--- sacm.log: leveled logging to the process's one log sink (stderr).
-- local log = require("sacm.log").new("collector"); log.info("collected %d packages", n)
local core = require "sacm._log"

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
function M.new(area)
  local logger = { area = area }
  for _, level in ipairs(levels) do
    logger[level] = function(fmt, ...) emit(level, area, fmt, ...) end
  end
  function logger.enabled(level) return core.enabled(level) end
  return logger
end

--- level([name]) -> the current level's name; with a name, sets it first.
M.level = core.level
M.enabled = core.enabled

local default = M.new("lua")
for _, level in ipairs(levels) do M[level] = default[level] end

return M
