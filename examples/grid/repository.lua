-- A repository: sacmrun examples/grid/repository.lua grid.conf
-- Stores posture and results in the config's SQLite database until SIGINT/SIGTERM.
local config = require "sacm.grid.config"
local repository = require "sacm.roles.repository"

local cfg = assert(config.load(assert(arg[1], "usage: repository.lua GRID-CONFIG")))
local r = assert(repository.start(config.role_options(cfg, "repository")))
sacm.on_shutdown(function() r:close() end)
