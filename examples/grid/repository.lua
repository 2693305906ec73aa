-- A repository: sacmrun examples/grid/repository.lua grid.conf
-- Stores posture and results in the config's SQLite database until SIGINT/SIGTERM, and serves
-- them as ROLIE feeds when the config has a rolie section (docs/rolie.md).
local config = require "sacm.grid.config"
local repository = require "sacm.roles.repository"

local cfg = assert(config.load(assert(arg[1], "usage: repository.lua GRID-CONFIG")))
config.log_level(cfg, "repository")
local opts = config.role_options(cfg, "repository")
-- the config's rolie section (listen, access, users, ...) serves the store as ROLIE feeds; its
-- policies collection shows the evaluator's directory unless the section names another
opts.rolie = opts.rolie or cfg.rolie
if opts.rolie and opts.rolie.policies_dir == nil and cfg.evaluator and cfg.evaluator.policies then
  opts.rolie.policies_dir = cfg.evaluator.policies
end
local r = assert(repository.start(opts))
sacm.on_shutdown(function() r:close() end)
