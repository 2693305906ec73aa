-- sacm.proc against real processes: output, exit codes, signals, timeouts that kill whole process
-- groups, cancellation, limits on output, and many runs at once.
local proc = require "sacm.proc"
local loop = require "sacm._loop"

local function now() return loop.hrtime() / 1e9 end

local seq = 0
local function marker()
  seq = seq + 1
  return ("sacm-proc-spec-%d-%d-%d"):format(loop.hrtime() % 1000000007, math.random(1, 1e9), seq)
end

-- Live processes (zombies excluded: an orphan's zombie lingers where PID 1 does not reap, as in
-- some containers, but it runs nothing) as {pid =, pgid =, args =}.
local function live_processes()
  local r = assert(proc.run({ "ps", "-e", "-o", "pid=,pgid=,stat=,args=" }))
  local list = {}
  for line in r.stdout:gmatch("[^\n]+") do
    local pid, pgid, stat, args = line:match("^%s*(%d+)%s+(%d+)%s+(%S+)%s+(.*)$")
    if pid and stat:sub(1, 1) ~= "Z" then
      list[#list + 1] = { pid = tonumber(pid), pgid = tonumber(pgid), args = args }
    end
  end
  return list
end

-- pids of live processes whose command line contains the marker
local function pids_matching(mark)
  local pids = {}
  for _, p in ipairs(live_processes()) do
    if p.args:find(mark, 1, true) and not p.args:find("^ps ") then pids[#pids + 1] = p.pid end
  end
  return pids
end

local function pids_in_group(pgid)
  local pids = {}
  for _, p in ipairs(live_processes()) do
    if p.pgid == pgid then pids[#pids + 1] = p.pid end
  end
  return pids
end

-- Waits (briefly) until nothing matches; returns what is still there.
local function wait_gone(mark, seconds)
  local deadline = now() + (seconds or 2)
  local left
  repeat
    left = pids_matching(mark)
    if #left == 0 then return left end
    sacm.sleep(0.05)
  until now() > deadline
  return left
end

-- Kills the process groups these processes lead (by id: only what a test started itself).
local function kill_groups(pids)
  for _, pid in ipairs(pids) do proc.run({ "kill", "-9", "--", "-" .. pid }) end
end

describe("sacm.proc", function()
  it("captures stdout, stderr and a non-zero exit code as a result", function()
    local r, err = proc.run({ "/bin/sh", "-c", "echo out; echo err >&2; exit 3" })
    assert.is_nil(err)
    assert.equal(3, r.code)
    assert.is_false(r.ok)
    assert.is_nil(r.signal)
    assert.equal("out\n", r.stdout)
    assert.equal("err\n", r.stderr)
    assert.same({ stdout = false, stderr = false }, r.truncated)
    assert.is_true(math.type(r.pid) == "integer" and r.pid > 0)
    assert.is_true(r.duration >= 0 and r.duration < 5)
  end)

  it("runs a shell command with proc.shell and finds programs in PATH", function()
    local r = assert(proc.shell("printf '%s' \"$((6 * 7))\""))
    assert.equal(0, r.code)
    assert.is_true(r.ok)
    assert.equal("42", r.stdout)
    r = assert(proc.run({ "echo", "a b", "c" }))
    assert.equal("a b c\n", r.stdout) -- arguments pass through without a shell
  end)

  it("returns ENOENT for a missing program, naming it", function()
    local r, err = proc.run({ "sacm-no-such-program-xyz", "arg" })
    assert.is_nil(r)
    assert.equal("ENOENT", err.condition)
    assert.matches("sacm%-no%-such%-program%-xyz", tostring(err))
    r, err = proc.run({ "/nonexistent/dir/prog" })
    assert.is_nil(r)
    assert.equal("ENOENT", err.condition)
  end)

  it("returns EACCES for a file that is not executable", function()
    local path = os.tmpname() -- created 0600
    local r, err = proc.run({ path })
    os.remove(path)
    assert.is_nil(r)
    assert.equal("EACCES", err.condition)
  end)

  it("reports the name of the signal that killed the process", function()
    local r = assert(proc.shell("kill -TERM $$; sleep 5"))
    assert.equal("SIGTERM", r.signal)
    assert.is_nil(r.code)
    assert.is_false(r.ok)
    r = assert(proc.shell("kill -9 $$"))
    assert.equal("SIGKILL", r.signal)
  end)

  it("honours env (merged, false unsets), clear_env, cwd and stdin", function()
    local r = assert(proc.run({ "/bin/sh", "-c", 'printf "%s|%s|%s" "$SACM_A" "${HOME-unset}" "$PATH"' },
      { env = { SACM_A = "one two", HOME = false } }))
    assert.equal("one two|unset|" .. os.getenv("PATH"), r.stdout)

    r = assert(proc.run({ "/usr/bin/env" }, { clear_env = true, env = { ONLY = "1" } }))
    assert.equal("ONLY=1\n", r.stdout)

    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. dir))
    r = assert(proc.run({ "pwd" }, { cwd = dir }))
    assert.equal(dir .. "\n", r.stdout)
    os.execute("rmdir " .. dir)
    local missing, err = proc.run({ "pwd" }, { cwd = dir })
    assert.is_nil(missing)
    assert.equal("ENOENT", err.condition)

    local input = ("line %d\n"):rep(1) .. string.rep("x", 200000) .. "\0tail"
    r = assert(proc.run({ "cat" }, { stdin = input }))
    assert.equal(input, r.stdout)
    r = assert(proc.run({ "wc", "-c" }, { stdin = "" }))
    assert.equal("0", r.stdout:match("%d+"))
    -- without stdin the child reads /dev/null and does not wait for a terminal
    r = assert(proc.run({ "cat" }, { timeout = 5 }))
    assert.equal("", r.stdout)
  end)

  it("keeps max_output bytes per stream, drains the rest and flags truncation", function()
    local r = assert(proc.shell("printf 0123456789; printf abcdefghij >&2", { max_output = 4 }))
    assert.equal("0123", r.stdout)
    assert.equal("abcd", r.stderr)
    assert.same({ stdout = true, stderr = true }, r.truncated)

    -- 10 MB on stdout: the child is never blocked on a full pipe
    local started = now()
    r = assert(proc.run({ "head", "-c", "10000000", "/dev/zero" }, { timeout = 20 }))
    assert.equal(0, r.code)
    assert.equal(proc.DEFAULT_MAX_OUTPUT, #r.stdout)
    assert.is_true(r.truncated.stdout)
    assert.is_false(r.truncated.stderr)
    assert.is_true(now() - started < 10)

    r = assert(proc.run({ "head", "-c", "3000000", "/dev/zero" }, { max_output = 4000000 }))
    assert.equal(3000000, #r.stdout)
    assert.is_false(r.truncated.stdout)
  end)

  it("times out promptly and leaves no process behind", function()
    local mark = marker()
    local started = loop.hrtime()
    local r, err = proc.run({ "sh", "-c", "echo started; sleep 10; : " .. mark }, { timeout = 0.2 })
    local elapsed = (loop.hrtime() - started) / 1e9
    assert.is_nil(r)
    assert.equal("timeout", err.condition)
    assert.is_true(elapsed < 5, "took " .. elapsed .. " s") -- cut short: the script would take 10 s
    assert.is_true(elapsed >= 0.19, "took " .. elapsed .. " s")
    assert.equal("started\n", err.result.stdout) -- partial output is kept
    assert.equal("SIGTERM", err.result.signal)
    assert.same({}, wait_gone(mark))
    assert.same({}, pids_in_group(err.result.pid))
  end)

  it("kills grandchildren in the process group on timeout", function()
    local mark = marker()
    local started = now()
    -- both sleeps run in a shell that carries the marker, so pgrep can see every one of them
    local script = ('sh -c "sleep 30; : %s-bg" & sh -c "sleep 30; : %s-fg"; : %s'):format(mark, mark, mark)
    local r, err = proc.run({ "sh", "-c", script }, { timeout = 0.3 })
    assert.is_nil(r)
    assert.equal("timeout", err.condition)
    assert.is_true(now() - started < 5) -- cut short: the sleeps would take 30 s
    assert.same({}, wait_gone(mark))
    assert.same({}, pids_in_group(err.result.pid))
  end)

  it("uses SIGKILL when SIGTERM is ignored, after kill_grace", function()
    local mark = marker()
    local started = now()
    local r, err = proc.run({ "sh", "-c", "trap '' TERM; sleep 10; : " .. mark },
      { timeout = 0.1, kill_grace = 0.2 })
    local elapsed = now() - started
    assert.is_nil(r)
    assert.equal("timeout", err.condition)
    assert.equal("SIGKILL", err.result.signal)
    assert.is_true(elapsed >= 0.29 and elapsed < 5, "took " .. elapsed .. " s") -- the sleep would take 10 s
    assert.same({}, wait_gone(mark))
    assert.same({}, pids_in_group(err.result.pid)) -- the sleep ignored SIGTERM too
  end)

  it("returns on timeout even when an escaped grandchild holds the pipes open", function()
    local mark = marker()
    local started = now()
    -- setsid puts the grandchild in a session of its own, out of reach of the group kill
    local script = ('setsid sh -c "sleep 8; : %s" & sleep 8'):format(mark)
    local r, err = proc.run({ "sh", "-c", script }, { timeout = 0.2, kill_grace = 0.2 })
    local elapsed = now() - started
    assert.is_nil(r)
    assert.equal("timeout", err.condition)
    assert.is_true(elapsed < 5, "took " .. elapsed .. " s") -- the escapee holds the pipes for 8 s
    -- clean up the escapee this test made: setsid made it the leader of its own group
    local escaped = pids_matching(mark)
    assert.equal(1, #escaped)
    kill_groups(escaped)
    assert.same({}, wait_gone(mark))
    assert.same({}, pids_in_group(escaped[1]))
  end)

  it("kills the process group when the waiting task is cancelled", function()
    local mark = marker()
    local t = sacm.spawn(function()
      return proc.run({ "sh", "-c", "sleep 30 & sleep 30; : " .. mark })
    end)
    local deadline = now() + 2
    while #pids_matching(mark) == 0 and now() < deadline do sacm.sleep(0.02) end
    assert.equal(1, #pids_matching(mark))
    assert.is_true(t:cancel())
    local r, err = t:await(2)
    assert.is_nil(r)
    assert.equal("cancelled", err.condition)
    assert.same({}, wait_gone(mark))
  end)

  it("runs 50 processes concurrently", function()
    local tasks = {}
    for i = 1, 50 do
      tasks[i] = sacm.spawn(function()
        return proc.shell(("sleep 0.1; echo %d; echo e%d >&2"):format(i, i), { timeout = 20 })
      end)
    end
    local started = now()
    local results = sacm.all(tasks, 30)
    for i, res in ipairs(results) do
      assert.is_true(res.ok, tostring(res.err))
      assert.equal(i .. "\n", res.value.stdout)
      assert.equal("e" .. i .. "\n", res.value.stderr)
      assert.equal(0, res.value.code)
    end
    assert.is_true(now() - started < 10)
  end)

  it("kills a running child when the runtime exits", function()
    local bin = os.getenv("SACMRUN_BIN") or "./sacmrun"
    local mark = marker()
    local script = ([[
      sacm.spawn(function() sacm.proc.run({ "sh", "-c", "sleep 30; : %s" }) end)
      sacm.sleep(0.3)
      sacm.exit(0)
    ]]):format(mark)
    local r = assert(proc.run({ bin, "-e", script }, { timeout = 20 }))
    assert.equal(0, r.code, r.stderr)
    assert.same({}, wait_gone(mark))
  end)

  it("raises on bad arguments", function()
    assert.has_error(function() proc.run("ls") end, "proc.run: argv must be a table of strings, got string")
    assert.has_error(function() proc.run({}) end)
    assert.has_error(function() proc.run({ "ls", {} }) end)
    assert.has_error(function() proc.run({ "ls" }, { timeout = -1 }) end)
    assert.has_error(function() proc.run({ "ls" }, { env = { A = {} } }) end)
    assert.has_error(function() proc.run({ "ls" }, { max_output = 1.5 }) end)
    assert.has_error(function() proc.run({ "ls" }, { stdin = 5 }) end)
    assert.has_error(function() proc.run({ "l\0s" }) end)
    assert.has_error(function() proc.shell(nil) end)
  end)

  it("must be called inside a task", function()
    local co = coroutine.create(function() return proc.run({ "true" }) end)
    local ok, err = coroutine.resume(co)
    assert.is_false(ok)
    assert.matches("coroutine nested inside a task", err)
  end)

  it("exposes the process primitive with kill, pid and close", function()
    local core = require "sacm._proc"
    local me = sacm.current()
    local got
    local p = assert(core.spawn({ file = "sleep", args = { "sleep", "10" } }, function(result)
      got = result
      require("sacm.task").wake(me)
    end))
    assert.is_true(p:pid() > 0)
    assert.is_true(p:kill("TERM"))
    require("sacm.task").suspend()
    assert.equal(15, got.signal)
    assert.is_nil(got.code)
    assert.has_error(function() p:kill("SIGNOPE") end)
    local ok, err = p:kill(0) -- exited and reaped: nothing left to signal
    assert.is_nil(ok)
    assert.equal("ESRCH", err.condition)
    p:close()
    p:close() -- idempotent
    assert.has_error(function() p:pid() end, "attempt to use a closed process")
  end)

  describe("spawn", function()
    it("runs a program alongside the caller; wait gives its result", function()
      local p = assert(proc.spawn({ "/bin/sh", "-c", "echo started; exit 5" }))
      assert.is_true(math.type(p.pid) == "integer" and p.pid > 0)
      local r = assert(p:wait(10))
      assert.equal(5, r.code)
      assert.equal("started\n", r.stdout)
      assert.is_false(p:kill()) -- nothing left to signal
    end)

    it("stops a program that ignores SIGTERM with SIGKILL after the grace period", function()
      local p = assert(proc.spawn({ "/bin/sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done" }))
      local none, err = p:wait(0.2)
      assert.is_nil(none)
      assert.equal("timeout", err.condition)
      local r = assert(p:stop(0.3))
      assert.equal("SIGKILL", r.signal)
      -- the whole group is gone (zombies waiting for init to reap them do not count)
      local left = assert(proc.run({ "ps", "-o", "stat=", "-g", tostring(p.pid) }))
      assert.is_nil(left.stdout:match("^[^Z]") or left.stdout:match("\n[^Z]"), left.stdout)
    end)

    it("reports a program that cannot start", function()
      local p, err = proc.spawn({ "/nonexistent/program" })
      assert.is_nil(p)
      assert.equal("ENOENT", err.condition)
    end)
  end)
end)

