-- The public Lua API that `make check-docs` checks (tools/check-api-docs.lua: an entry in
-- docs/api/; tools/check-api-annotations.lua: LuaCATS annotations). Loaded with dofile.
local M = {}

-- module -> its page (docs/api/README.md's table)
M.PAGES = {
  ["sacm.task"] = "task.md", ["sacm.timer"] = "timer.md", ["sacm.sync"] = "sync.md",
  ["sacm.proc"] = "proc.md", ["sacm.fs"] = "fs.md", ["sacm.xml"] = "xml.md",
  ["sacm.crypto"] = "crypto.md", ["sacm.time"] = "time.md", ["sacm.log"] = "log.md",
  ["sacm.error"] = "error.md", ["sacm.shutdown"] = "shutdown.md", ["sacm.sqlite"] = "sqlite.md",
  ["sacm.pg"] = "pg.md", ["sacm.pretty"] = "pretty.md", ["sacm.collect"] = "collect.md",
  ["sacm.policy"] = "policy.md", ["sacm.xccdf"] = "xccdf.md", ["sacm.http"] = "http.md",
  ["sacm.http.client"] = "http.md", ["sacm.rolie"] = "rolie.md", ["sacm.xmpp"] = "xmpp.md",
  ["sacm.xmpp.stanza"] = "xmpp.md", ["sacm.xmpp.jid"] = "xmpp.md", ["sacm.xmpp.disco"] = "disco.md",
  ["sacm.xmpp.caps"] = "caps.md", ["sacm.xmpp.pubsub"] = "pubsub.md", ["sacm.xmpp.forms"] = "forms.md",
  ["sacm.xmpp.commands"] = "commands.md", ["sacm.xmpp.ccm2"] = "ccm2.md",
}

-- Objects whose methods are (partly) C functions: the annotation check finds their methods
-- through methods() and looks for a `---@field NAME fun(...)` line in the `---@class` block
-- named here, in the module's file. Their Lua methods are checked at their definitions.
M.CLASSES = {
  { module = "sacm.xml", class = "sacm.xml.Element",
    methods = function() return getmetatable(require("sacm.xml").element("a")).__index end },
  { module = "sacm.sqlite", class = "sacm.sqlite.Database",
    methods = function() return require("sacm._sqlite").Database end },
  { module = "sacm.sqlite", class = "sacm.sqlite.Statement",
    methods = function() return require("sacm._sqlite").Statement end },
  { module = "sacm.pg", class = "sacm.pg.Connection",
    methods = function() return require("sacm._pg").Connection end },
}

-- Files besides the modules' own whose top-level `function T.name(` / `function T:name(`
-- definitions are public API: the objects the modules return (ROLIE clients), and the modules of
-- docs/api/roles.md (roles, store, member, spool, delivery, report, json, ratelimit), the HTTP
-- pool and the policy sandbox, which have no page of their own.
M.FILES = {
  "lua/sacm/rolie/client.lua",
  "lua/sacm/grid/store.lua", "lua/sacm/grid/store_pg.lua",
  "lua/sacm/roles/collector.lua", "lua/sacm/roles/evaluator.lua", "lua/sacm/roles/orchestrator.lua",
  "lua/sacm/roles/repository.lua", "lua/sacm/grid/member.lua", "lua/sacm/http/pool.lua",
  "lua/sacm/ratelimit.lua", "lua/sacm/json.lua", "lua/sacm/grid/spool.lua", "lua/sacm/grid/delivery.lua",
  "lua/sacm/policy/sandbox.lua", "lua/sacm/report/init.lua", "lua/sacm/report/html.lua", "lua/sacm/report/junit.lua",
}

return M
