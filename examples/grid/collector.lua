-- A collector for this host: sacmrun examples/grid/collector.lua grid.conf
-- Collects on the orchestrator's command (and every `interval` seconds if the config says so)
-- and runs until SIGINT/SIGTERM.
local config = require "sacm.grid.config"
local collector = require "sacm.roles.collector"

local cfg = assert(config.load(assert(arg[1], "usage: collector.lua GRID-CONFIG")))
config.log_level(cfg, "collector")
local c = assert(collector.start(config.role_options(cfg, "collector")))
sacm.on_shutdown(function() c:close() end)
