-- The command line, exit status, signals and shutdown, tested on the real binary in a child process.
local proc = require "sacm.proc"
local fs = require "sacm.fs"
local task = require "sacm.task"
local loop = require "sacm._loop"
local tmp = require "support.tmp"

local BIN = os.getenv("SACMRUN_BIN") or "./sacmrun"

local function run(args, opts)
  local argv = { BIN }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  opts = opts or {}
  opts.timeout = opts.timeout or 20
  local r, err = proc.run(argv, opts)
  assert(r, tostring(err))
  return r
end

local tmpdir
local function script(name, text)
  local path = tmpdir .. "/" .. name
  assert(fs.write(path, text))
  return path
end

describe("sacmrun command line", function()
  before_each(function()
    tmpdir = tmp.dir("cli")
  end)
  after_each(function()
    tmp.remove(tmpdir)
  end)

  it("-e runs a statement", function()
    local r = run({ "-e", "print(1+1)" })
    assert.equal(0, r.code)
    assert.equal("2\n", r.stdout)
  end)

  it("gives the script arg and ... as lua.c does", function()
    local path = script("t.lua", "print(arg[0], arg[1], arg[2], select('#', ...), ...)\nprint(arg[-1])")
    local r = run({ "-W", path, "a", "b" })
    assert.equal(0, r.code)
    assert.equal(path .. "\ta\tb\t2\ta\tb\n-W\n", r.stdout)
  end)

  it("exits non-zero with file:line and a traceback when the script raises", function()
    local path = script("t.lua", "local function f()\n  error('boom')\nend\nf()\n")
    local r = run({ path })
    assert.equal(1, r.code)
    assert.matches("t%.lua:2: boom", r.stderr)
    assert.matches("stack traceback:", r.stderr)
    assert.matches("t%.lua:4: in main chunk", r.stderr)
    assert.not_matches("sacm/_boot", r.stderr)
  end)

  it("prints the message and a traceback of error(msg, 2) from a tail-called function, as lua5.4 does", function()
    local path = script("level.lua", 'local function f() error("x", 2) end; return f()\n')
    local r = run({ path })
    assert.equal(1, r.code)
    assert.matches("^sacmrun: x\nstack traceback:\n", r.stderr)
    assert.matches("level%.lua:1: in function <", r.stderr)
    assert.matches("%(%.%.%.tail calls%.%.%.%)", r.stderr)
    assert.not_matches("sacm/_boot", r.stderr)
  end)

  it("prints why -l could not load a module, with the search path", function()
    local r = run({ "-l", "nosuch.mod" })
    assert.equal(1, r.code)
    assert.matches("^sacmrun: module 'nosuch.mod' not found:\n", r.stderr)
    assert.matches("no file '[^']*nosuch/mod%.lua'", r.stderr)
    assert.matches("stack traceback:\n%s*%[C%]: in function 'require'", r.stderr)
  end)

  it("prints non-string error objects as lua5.4 does: __tostring, else their type", function()
    local cases = {
      { 'error(setmetatable({}, { __tostring = function() return "custom failure" end }))', "^sacmrun: custom failure\n" },
      { "error({ code = 1 })", "^sacmrun: %(error object is a table value%)\n" },
      { "error(nil)", "^sacmrun: %(error object is a nil value%)\n" },
      { "error(42)", "^sacmrun: 42\n" },
      { 'error(setmetatable({}, { __tostring = function() error("bad") end }))', "^sacmrun: %(error object is a table value%)\n" },
    }
    for _, case in ipairs(cases) do
      local r = run({ script("obj.lua", case[1] .. "\n") })
      assert.equal(1, r.code)
      assert.matches(case[2], r.stderr)
      assert.matches("obj%.lua:1: in main chunk", r.stderr)
    end
  end)

  it("reports a syntax error without a runtime traceback", function()
    local path = script("bad.lua", "local x = = 1\n")
    local r = run({ path })
    assert.equal(1, r.code)
    assert.matches("bad%.lua:1:", r.stderr)
    assert.not_matches("traceback", r.stderr)
  end)

  it("runs -l, -e and the script in order, and - reads stdin", function()
    local r = run({ "-l", "s=string", "-e", "x = s.rep('ab', 2)", "-", "q" }, { stdin = "print(x, ...)" })
    assert.equal(0, r.code)
    assert.equal("abab\tq\n", r.stdout)
    r = run({ "-" }, { stdin = "print('from stdin')" })
    assert.equal("from stdin\n", r.stdout)
  end)

  it("-- ends options, -v prints the version, --help the usage, bad options fail", function()
    local path = script("v.lua", "print(...)")
    assert.equal("-x\n", run({ "--", path, "-x" }).stdout)
    assert.matches("^sacmrun %d+%.%d+%.%d+ %(Lua 5%.4", run({ "-v" }).stdout)
    assert.matches("usage: sacmrun", run({ "--help" }).stdout)
    local r = run({ "-Z" })
    assert.equal(1, r.code)
    assert.matches("unrecognized option '%-Z'", r.stderr)
    r = run({ "-e" })
    assert.equal(1, r.code)
    assert.matches("needs argument", r.stderr)
    r = run({ "--log-level", "loud", "-e", "" })
    assert.equal(1, r.code)
  end)

  it("sacm.exit(code) sets the exit status after shutdown handlers ran", function()
    local r = run({ "-e", "sacm.on_shutdown(function() sacm.sleep(0.01) print('bye') end) sacm.exit(7) print('not reached')" })
    assert.equal(7, r.code)
    assert.equal("bye\n", r.stdout)
  end)

  it("keeps running after an error in a spawned task, and exits 0", function()
    local r = run({ "-e", "sacm.spawn(function() error('task broke') end) sacm.sleep(0.01) print('alive')" })
    assert.equal(0, r.code)
    assert.equal("alive\n", r.stdout)
    assert.matches("task broke", r.stderr)
    assert.matches("stack traceback", r.stderr)
  end)

  it("runs until the last timer is done, then exits", function()
    local r = run({ "-e", "sacm.timer.after(0.05, function() print('late') end) print('early')" })
    assert.equal(0, r.code)
    assert.equal("early\nlate\n", r.stdout)
  end)

  it("says so and exits 1 when the script waits for something that can never happen", function()
    local r = run({ "-e", "sacm.sync.event():wait()" })
    assert.equal(1, r.code)
    assert.matches("still waiting", r.stderr)
  end)

  it("the posture check collects real posture and ends with the totals line", function()
    local r = run({ "examples/posture-check.lua" }, { timeout = 60 })
    assert.equal(0, r.code, r.stderr)
    assert.matches("posture of .+: %d+ attributes from 5 collectors", r.stdout)
    local last = r.stdout:match("([^\n]+)\n$")
    assert.matches("^totals: pass=%d+ fail=%d+ error=0$", last)
  end)

  it("SIGTERM runs shutdown handlers and exits 143", function()
    local path = script("svc.lua", [[
      sacm.on_shutdown(function(reason) print("shutdown: " .. reason) end)
      print("ready"); io.stdout:flush()
      sacm.timer.every(0.01, function() end)
    ]])
    local child = task.spawn(run, { path })
    task.sleep(0.3)
    local pids = proc.run({ "pgrep", "-f", path })
    assert.equal(0, pids.code)
    for pid in pids.stdout:gmatch("%d+") do proc.run({ "kill", "-TERM", pid }) end
    local r = child:await(10)
    assert.equal(143, r.code)
    assert.equal("ready\nshutdown: SIGTERM\n", r.stdout)
  end)

  it("a second SIGINT exits at once even when shutdown handlers hang", function()
    local path = script("stuck.lua", [[
      sacm.on_shutdown(function() sacm.sleep(60) end)
      print("ready"); io.stdout:flush()
      sacm.sleep(60)
    ]])
    local child = task.spawn(run, { path })
    task.sleep(0.3)
    local start = loop.hrtime()
    local pids = proc.run({ "pgrep", "-f", path })
    for pid in pids.stdout:gmatch("%d+") do proc.run({ "kill", "-INT", pid }) end
    task.sleep(0.1)
    for pid in pids.stdout:gmatch("%d+") do proc.run({ "kill", "-INT", pid }) end
    local r = child:await(10)
    assert.equal(130, r.code)
    assert.is_true((loop.hrtime() - start) / 1e9 < 5)
  end)
end)
