-- An evaluator: sacmrun examples/grid/evaluator.lua grid.conf
-- Judges posture with the policies directory of the config (hot-reloaded) until SIGINT/SIGTERM.
local config = require "sacm.grid.config"
local evaluator = require "sacm.roles.evaluator"

local cfg = assert(config.load(assert(arg[1], "usage: evaluator.lua GRID-CONFIG")))
config.log_level(cfg, "evaluator")
local e = assert(evaluator.start(config.role_options(cfg, "evaluator")))
sacm.on_shutdown(function() e:close() end)
