-- An error raised in the scope of a to-be-closed variable is the error people see: the close
-- handler's own failure never replaces it (Lua 5.4 would let it), and shipped close handlers
-- close without waiting, instead of raising, where nothing may wait.
local proc = require "sacm.proc"
local fs = require "sacm.fs"
local task = require "sacm.task"
local errors = require "sacm.error"
local tmp = require "support.tmp"
local prosody = require "support.prosody"

local BIN = os.getenv("SACMRUN_BIN") or "./sacmrun"

-- A small closable object as a library would write one: its close says goodbye and waits for
-- it when it may wait, and closes without the goodbye otherwise.
local OBJECT = [[
local task = require "sacm.task"
local errors = require "sacm.error"
local Obj = {}
Obj.__index = Obj
function Obj:close()
  if task.can_wait() then
    task.sleep(0.05) -- the goodbye, waiting for its answer
    print("closed after waiting")
  else
    print("closed without waiting")
  end
end
Obj.__close = errors.closer(Obj.close)
local function open() return setmetatable({}, Obj) end
]]

describe("errors in the scope of a <close> variable", function()
  local dir
  before_each(function() dir = tmp.dir("close") end)
  after_each(function() tmp.remove(dir) end)

  local function run_script(text, args)
    local path = dir .. "/script.lua"
    assert(fs.write(path, text))
    local argv = { BIN }
    for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
    argv[#argv + 1] = path
    local r = assert(proc.run(argv, { timeout = 30 }))
    return r
  end

  it("the script's error is reported, and the close that waits still runs inside the task", function()
    local r = run_script(OBJECT .. [[
local o <close> = open()
local function discover() error("timeout: grid components not found in time: collector 0/5", 2) end
discover()
]])
    assert.equal(1, r.code)
    assert.matches("^sacmrun: [^\n]*script%.lua:%d+: timeout: grid components not found in time: collector 0/5\n", r.stderr)
    assert.matches("stack traceback:", r.stderr)
    assert.not_matches("must be called inside a task", r.stderr)
    assert.equal("closed after waiting\n", r.stdout)
  end)

  it("keeps the original error when a close handler raises while it propagates, and logs the close failure",
    function()
      local r = run_script([[
local bad <close> = setmetatable({}, { __close = function() error("iq must be called inside a task") end })
assert(nil, "the real error")
]])
      assert.equal(1, r.code)
      assert.matches("\nsacmrun: [^\n]*script%.lua:2: the real error\n", "\n" .. r.stderr)
      assert.not_matches("sacmrun: [^\n]*iq must be called", r.stderr)
      assert.matches("WARN  %[task%] task main: a to%-be%-closed variable failed to close while an error "
        .. "propagated %(the original error is kept%): [^\n]*iq must be called inside a task", r.stderr)
    end)

  it("a close outside any task closes without waiting and never hides the error", function()
    local r = run_script(OBJECT .. [[
-- a coroutine of the script's own: nothing may wait there
coroutine.wrap(function()
  local o <close> = open()
  error("failed inside a plain coroutine")
end)()
]])
    assert.equal(1, r.code)
    assert.matches("sacmrun: [^\n]*script%.lua:%d+: failed inside a plain coroutine", r.stderr)
    assert.equal("closed without waiting\n", r.stdout)
  end)

  it("errors.closer raises the close failure on a normal exit, and logs it while an error propagates", function()
    local closer = errors.closer(function() error("cannot close", 0) end)
    assert.has_error(function() closer({}, nil) end, "cannot close")
    assert.has_no_error(function() closer({}, "the original") end)
  end)

  it("a task's failure is the original error when its close handler raises", function()
    local t = task.spawn({ silent = true }, function()
      local _x <close> = setmetatable({}, { __close = function() error("close failed", 0) end })
      error("original", 0)
    end)
    local ok, err = pcall(t.await, t)
    assert.is_false(ok)
    assert.equal("original", err)
    assert.equal("failed", t.status)
  end)

  describe("with a grid member (orchestrator) on a real Prosody #e2e", function()
    local server, repo, dir
    lazy_setup(function()
      server = prosody.start({ users = { orchestrator = "pw", repository = "pw" }, shipped = true })
      -- the repository makes the grid's nodes and admits the orchestrator
      dir = require("support.tmp").dir("close-grid")
      local g = require("support.grid").new(server, dir)
      repo = assert(require("sacm.roles.repository").start(g:options("repository", { database = dir .. "/grid.db" })))
    end)
    lazy_teardown(function()
      if repo then repo:close() end
      if server then server:stop() end
      if dir then require("support.tmp").remove(dir) end
    end)

    it("the documented <close> pattern reports discover's timeout, not the close handler's error", function()
      local r = run_script(([[
local orchestrator = require "sacm.roles.orchestrator"
local o <close> = assert(orchestrator.start{ jid = %q, password = "pw", host = %q, port = %d,
  cafile = %q, heartbeat = false, repository = %q })
assert(o:discover{ collectors = 5, timeout = 0.5 })
]]):format(server:jid("orchestrator") .. "/close", server.host, server.port, server.ca_file,
        server:jid("repository")))
      assert.equal(1, r.code)
      assert.matches("sacmrun: [^\n]*timeout: grid components not found in time: collector 0/5", r.stderr)
      assert.not_matches("must be called inside a task", r.stderr)
    end)

    it("an orchestrator prints as one line in the REPL, without its password", function()
      local pretty = require "sacm.pretty"
      local orchestrator = require "sacm.roles.orchestrator"
      local o <close> = assert(orchestrator.start{ jid = server:jid("orchestrator") .. "/print", password = "pw",
        host = server.host, port = server.port, cafile = server.ca_file, heartbeat = false,
        repository = server:jid("repository") })
      local s = pretty.format(o)
      assert.matches("^<object 0x%x+ %(methods: [%w_, ]+[^\n]*%)>$", s)
      assert.matches("discover", s)
      assert.not_matches("pw\"", pretty.format({ o = o, opts = { password = "pw" } }))
    end)
  end)
end)
