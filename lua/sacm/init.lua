--- sacm: the runtime's Lua library. Submodules load on first use, so a script pays only for
-- what it touches: sacm.task, sacm.timer, sacm.sync, sacm.proc, sacm.fs, sacm.xml, sacm.crypto,
-- sacm.time, sacm.log, sacm.error, sacm.shutdown, sacm.sqlite.
local build = require "sacm._build"
local task = require "sacm.task"
local shutdown = require "sacm.shutdown"

local sacm = {
  version = build.version,
  -- the most used calls, at the top level for playbooks
  spawn = task.spawn,
  sleep = task.sleep,
  current = task.current,
  all = task.all,
  with_timeout = task.with_timeout,
  exit = shutdown.exit,
  on_shutdown = shutdown.on_shutdown,
}

local submodules = {
  task = true, timer = true, sync = true, proc = true, fs = true, xml = true, crypto = true,
  time = true, log = true, error = true, shutdown = true, sqlite = true, http = true,
}

return setmetatable(sacm, {
  -- names __index serves, for the REPL's completion (docs/repl.md)
  __completion = submodules,
  __index = function(t, key)
    if submodules[key] then
      local mod = require("sacm." .. key)
      rawset(t, key, mod)
      return mod
    end
  end,
})
