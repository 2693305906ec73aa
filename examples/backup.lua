-- sacmrun examples/backup.lua GRID-CONFIG DEST: an online backup of the repository's database
-- (installed as sacm-backup; docs/deploy.md, "Backup and restore"). The repository keeps running.
local config = require "sacm.grid.config"
local store = require "sacm.grid.store"

local cfg = assert(config.load(assert(arg[1], "usage: backup.lua GRID-CONFIG DEST")))
local dest = assert(arg[2], "usage: backup.lua GRID-CONFIG DEST")
local db = cfg.repository and cfg.repository.database
if not db then
  io.stderr:write(("backup: %s has no repository.database to back up\n"):format(arg[1]))
  sacm.exit(2)
end
local ok, err = store.backup(db, dest)
if not ok then
  io.stderr:write(("backup: %s\n"):format(tostring(err)))
  sacm.exit(1)
end
io.stderr:write(("backup: %s copied to %s\n"):format(db, dest))
