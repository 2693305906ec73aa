-- Runs the busted specs inside sacmrun, as the script's own task, so a spec can wait (sleep,
-- await, processes, I/O) exactly as a playbook does and tests exercise the real C core.
-- usage: sacmrun spec/run.lua [busted options] [spec files or dirs]
local loop = require "sacm._loop"
local compat = require "busted.compatibility"

local function leftover_handles()
  local open = {}
  for _, h in ipairs(loop.handles()) do
    if h.active and h.ref then open[#open + 1] = h.type end
  end
  return open
end

local exit_code
compat.exit = function(code)
  exit_code = exit_code or code
  error("busted requested exit " .. tostring(code), 0)
end

local args = { "--output=spec/support/output.lua", "--pattern=_spec", "--lpath=spec/?.lua" }
for i = 1, #arg do args[#args + 1] = arg[i] end
if #arg == 0 or arg[#arg]:sub(1, 1) == "-" then args[#args + 1] = "spec" end
_G.arg = args

local ok, err = pcall(require("busted.runner"), { standalone = false })
if not ok and exit_code == nil then
  io.stderr:write("busted: ", tostring(err), "\n")
  exit_code = 1
end

-- Like luv's own test runner: a suite that leaves timers, processes or watchers running fails.
sacm.sleep(0)
local open = leftover_handles()
if #open > 0 then
  io.stderr:write("spec run left handles open: ", table.concat(open, ", "), "\n")
  exit_code = (exit_code and exit_code ~= 0) and exit_code or 1
end
sacm.exit(exit_code or 0)
