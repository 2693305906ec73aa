-- The interactive REPL: value printing and completion in this process, then the real binary on a
-- pseudo-terminal (tmux) typed at as a person would, and on a pipe.
local proc = require "sacm.proc"
local fs = require "sacm.fs"
local xml = require "sacm.xml"
local errors = require "sacm.error"
local pretty = require "sacm.pretty"
local complete = require("sacm._complete").complete
local repl = require "sacm.repl"
local terminal = require "support.terminal"
local tmp = require "support.tmp"

local BIN = os.getenv("SACMRUN_BIN") or "./sacmrun"

-- completion of the word at the end of line
local function names(line, env)
  local word = line:match("[%w_]*$")
  local found, append = complete(line, #line - #word, #line, env)
  return table.concat(found, " "), append
end

describe("sacm.pretty", function()
  it("prints scalars as Lua literals", function()
    assert.equal('"a\\nb\\"c\\000"', pretty.format('a\nb"c\0'))
    assert.equal('"h\\233"', pretty.format("h\233"))
    assert.equal('"grüße"', pretty.format("grüße"))
    assert.equal("3", pretty.format(3))
    assert.equal("3.0", pretty.format(3.0))
    assert.equal("nil\t1\t\"x\"", pretty.format_values(nil, 1, "x"))
  end)

  it("nests tables to a depth limit, sorted, and marks cycles", function()
    local t = { 1, 2, b = { c = { d = { e = { f = 1 } } } }, a = true, [10] = "ten" }
    t.me = t
    local s = pretty.format(t)
    assert.matches('^{\n  1, 2, %[10%] = "ten", a = true, b = { c = { d = { e = {%.%.%.} %(1 entry%) } } },\n'
      .. '  me = <cycle: table: 0x%x+>\n}$', s)
    assert.equal("{ x = { y = 1 } }", pretty.format({ x = { y = 1 } }))
    assert.equal("{ {...} (1 entry) }", pretty.format({ { y = 1 } }, { depth = 1 }))
    -- the same table twice is not a cycle
    local shared = { 1 }
    assert.equal("{ { 1 }, { 1 } }", pretty.format({ shared, shared }))
  end)

  it("limits the entries shown and wraps long tables", function()
    local big = {}
    for i = 1, 200 do big[i] = i end
    local s = pretty.format(big)
    assert.matches("%.%.%. %(150 more%)\n}$", s)
    for line in s:gmatch("[^\n]+") do assert.is_true(#line <= 80, line) end
  end)

  it("prints stanzas as indented XML and errors with their condition", function()
    local iq = xml.element("iq", { xmlns = "jabber:client", type = "result", id = "a1" })
      :tag("query", { xmlns = "http://jabber.org/protocol/disco#info" })
      :tag("feature", { var = "urn:xmpp:ping" }):up():up()
    local s = pretty.format(iq)
    assert.equal(xml.serialize(iq, { indent = "  " }):gsub("\n$", ""), s)
    assert.matches('^<iq[^\n]*>\n  <query[^\n]*>\n    <feature var="urn:xmpp:ping"/>\n  </query>\n</iq>$', s)
    local err = errors.new("item-not-found", "no such node", { type = "cancel" })
    assert.equal('<error item-not-found: no such node (type="cancel")>', pretty.format(err))
    -- inside a table, the XML is indented with its entry
    assert.matches('{\n  result = <iq[^\n]*>\n    <query', pretty.format({ result = iq }))
  end)

  it("prints an object without __tostring as one line with its methods, never its fields", function()
    local Class = {}
    Class.__index = Class
    function Class:discover() end
    function Class:close() end
    function Class:_internal() end
    local obj = setmetatable({ password = "hunter2", conn = { pending = {} }, handlers = { 1, 2, 3 } }, Class)
    local s = pretty.format(obj)
    assert.matches("^<object 0x%x+ %(methods: close, discover%)>$", s)
    assert.not_matches("hunter2", s)
  end)

  it("never prints the value of a password, secret, token or authorization field", function()
    local s = pretty.format({ jid = "a@example.org", password = "hunter2", tls = { key_passphrase = "p" },
      authorization = "Basic YTpi", api_token = "t0k", secure = true })
    assert.equal('{\n  api_token = <hidden>, authorization = <hidden>, jid = "a@example.org",\n'
      .. '  password = <hidden>, secure = true, tls = { key_passphrase = <hidden> }\n}', s)
  end)

  it("the library's objects print a one-line summary", function()
    local t = sacm.spawn(function() end)
    assert.matches("^task #%d+ %(ready%)$", pretty.format(t))
    t:await()
    local tm = sacm.timer.after(60, function() end, { name = "refresh" })
    assert.equal("timer refresh (active, fired 0 times)", pretty.format(tm))
    tm:cancel()
    assert.equal("queue (0 items of 4)", pretty.format(sacm.sync.queue(4)))
    assert.equal("event (not set, 0 waiting)", pretty.format(sacm.sync.event()))
    local dir = tmp.dir("pretty")
    local engine = require("sacm.policy").engine({ dir = dir })
    assert.equal("policy engine for " .. dir .. " (0 policies)", pretty.format(engine))
    tmp.remove(dir)
  end)

  it("uses __tostring, and says where a function was defined", function()
    local obj = setmetatable({}, { __tostring = function() return "obj!" end })
    assert.equal("obj!", pretty.format(obj))
    assert.matches("^function: repl_spec%.lua:%d+$", pretty.format(function() end))
    assert.matches("^function: 0x%x+ %(C%)$", pretty.format(print))
  end)
end)

describe("REPL completion", function()
  it("completes globals and keywords", function()
    local env = { print = print, pairs = pairs, price = 1 }
    assert.equal("price print", (names("pri", env)))
    assert.same({ "print", "(" }, { names("prin", env) })
    assert.equal("while", (names("x = 1 whi", env)))
  end)

  it("completes fields along a chain, with sacm's lazily loaded modules", function()
    assert.equal("format", (names("string.for")))
    assert.equal("spawn", (names("sacm.task.spa")))
    assert.equal("time timer", (names("sacm.ti")))
    assert.equal("task", (names("sacm.ta")))
    assert.equal("", (names("f().x")))
    assert.equal("", (names("nosuch.x")))
  end)

  it("completes methods through __index tables of objects and userdata", function()
    local t = sacm.spawn(function() end)
    local timer = require("sacm._timer").new()
    local env = { t = t, tm = timer }
    assert.equal("await cancel done result", (names("t:", env)))
    assert.matches("^active close", (names("tm:", env)))
    assert.equal("start stop", (names("tm:st", env)))
    timer:close()
    t:await()
  end)

  it("hides private names: a leading underscore, and the fields of an object its class does not list", function()
    local Class = { __fields = { jid = true } }
    Class.__index = Class
    function Class:close() end
    function Class:_stage() end
    local env = { obj = setmetatable({ jid = "a@b", pending = {}, options = { password = "x" } }, Class),
      plain = { visible = 1, _hidden = 2 }, _private_global = 1, public_global = 2 }
    assert.equal("close jid", (names("obj.", env)))
    assert.equal("close", (names("obj:", env)))
    assert.equal("_stage", (names("obj._", env)))
    assert.equal("visible", (names("plain.", env)))
    assert.equal("_hidden", (names("plain._", env)))
    assert.equal("public_global", (names("pu", env)))
    assert.equal("_private_global", (names("_pri", env)))
    -- a task offers its status, not the scheduler's bookkeeping
    local t = sacm.spawn(function() end)
    t:await()
    assert.equal("await cancel done id name result results status", (names("t.", { t = t })))
  end)

  it("hides metamethods unless asked for", function()
    local env = { obj = setmetatable({}, { __index = { go = print, __secret = 1 } }) }
    assert.equal("go", (names("obj.", env)))
    assert.equal("__secret", (names("obj.__", env)))
  end)
end)

describe("REPL input", function()
  it("compiles as lua.c: expressions first, <eof> means more input", function()
    assert.equal(3, repl.compile("1 + 2", true)())
    assert.is_nil(repl.compile("x = 1", true)())
    assert.same({ nil, "incomplete" }, { repl.compile("function f()", true) })
    local chunk, err = repl.compile("x = = 1", true)
    assert.is_nil(chunk)
    assert.matches("^stdin:1:", err)
    -- a continued buffer is a statement, as in lua.c
    assert.is_nil(repl.compile("1 +\n2", false))
  end)
end)

describe("sacmrun with stdin not a terminal", function()
  it("runs stdin as a script without -i, and reads lines with -i", function()
    local r = assert(proc.run({ BIN }, { stdin = "print('script', 6 * 7)", timeout = 20 }))
    assert.equal(0, r.code)
    assert.equal("script\t42\n", r.stdout)

    r = assert(proc.run({ BIN, "-i" }, {
      stdin = "x = 20\nx + 1\nerror('boom')\nfunction f(a)\n  return a * 2\nend\nf(x)\nsacm.sleep(0.01) return 'slept'\n",
      timeout = 20,
    }))
    assert.equal(0, r.code)
    assert.matches("^sacmrun %d+%.%d+%.%d+", r.stdout)
    assert.matches("\n?> > 21\n> ", r.stdout)
    assert.matches(">> >> > 40\n", r.stdout, 1, true)
    assert.matches('> "slept"\n> \n$', r.stdout)
    assert.matches("^stdin:1: boom\nstack traceback:\n.*stdin:1: in main chunk$", r.stderr:gsub("\n$", ""))
    assert.not_matches("sacm/", r.stderr)
  end)

  it("prints the error of an expression line that fails at run time (not a blank line)", function()
    local r = assert(proc.run({ BIN, "-i" }, {
      stdin = 'sacm.sleep("x")\nlocal function f() error("x", 2) end; return f()\n'
        .. 'error(setmetatable({}, { __tostring = function() return "custom" end }))\nerror(nil)\n',
      timeout = 20,
    }))
    assert.equal(0, r.code)
    assert.matches("^sleep duration must be a non%-negative number of seconds, got x\nstack traceback:\n"
      .. "%s*%[C%]: in function 'error'\n[^\n]*sacm/task%.lua:%d+: in [^\n]*\n[^\n]*in function 'sacm%.[%w.]*sleep'\n",
      r.stderr)
    assert.matches("\nx\nstack traceback:\n%s*%[C%]: in function 'error'\n%s*stdin:1: in function <stdin:1>", r.stderr)
    assert.matches("\ncustom\nstack traceback:", r.stderr)
    assert.matches("\n%(error object is a nil value%)\nstack traceback:", r.stderr)
    assert.not_matches("sacm/repl%.lua", r.stderr)
  end)

  it("-i runs the script first, then reads from a file", function()
    local dir = tmp.dir("repl")
    assert(fs.write(dir .. "/s.lua", "greeting = 'hello from the script'"))
    assert(fs.write(dir .. "/in.txt", "greeting\n"))
    local r = assert(proc.run({ "sh", "-c", '"$0" -i "$1" < "$2"', BIN, dir .. "/s.lua", dir .. "/in.txt" },
      { timeout = 20 }))
    tmp.remove(dir)
    assert.equal(0, r.code, r.stderr)
    assert.matches('> "hello from the script"\n', r.stdout)
  end)
end)

describe("the REPL on a terminal #e2e", function()
  local term, dir
  local function start(extra_env)
    local env = { XDG_STATE_HOME = dir .. "/state" }
    for k, v in pairs(extra_env or {}) do env[k] = v end
    term = terminal.open({ BIN }, { env = env })
    term:wait_for("\n>$")
  end
  local function enter(text)
    term:type(text)
    term:key("Enter")
  end
  -- Ctrl-D on an empty line: a clean exit (and, under ASan, no leak reports)
  local function finish()
    term:key("C-u", "C-d")
    assert.equal(0, term:wait_exit())
  end

  before_each(function() dir = tmp.dir("repl") end)
  after_each(function()
    if term then term:close() end
    term = nil
    tmp.remove(dir)
  end)

  it("prints expressions, takes a multi-line function, reports errors and goes on", function()
    start()
    enter("1 + 1")
    term:wait_for("> 1 %+ 1\n2\n>$")
    enter("function twice(a)")
    term:wait_for("\n>>$")
    enter("  return a * 2")
    enter("end")
    enter("twice(21)")
    term:wait_for(">>   return a %* 2\n>> end\n> twice%(21%)\n42\n>$")
    enter("error(sacm.error.new('item-not-found', 'no such node'))")
    term:wait_for("<error item%-not%-found: no such node>\nstack traceback:\n.*stdin:1: in main chunk\n>$")
    enter('sacm.sleep("x")')
    term:wait_for('> sacm%.sleep%("x"%)\nsleep duration must be a non%-negative number of seconds, got x\n'
      .. "stack traceback:\n.*\n>$")
    enter("{ a = 1, list = { 'x', 'y' } }")
    term:wait_for('{ a = 1, list = { "x", "y" } }\n>$')
    finish()
  end)

  it("completes names on Tab", function()
    start()
    term:type("sacm.tas")
    term:key("Tab")
    term:wait_for("\n> sacm%.task$")
    term:type(".sp")
    term:key("Tab")
    term:wait_for("\n> sacm%.task%.spawn%($")
    term:key("C-u")
    enter("tm = sacm.timer.after(60, function() end)")
    term:wait_for("\n>$")
    term:type("tm:")
    term:key("Tab", "Tab") -- a second Tab lists the candidates
    term:wait_for("\nactive +cancel\n> tm:$")
    term:key("C-u")
    enter("tm:cancel()")
    term:wait_for("\n>$")
    finish()
  end)

  it("Ctrl-C cancels the running line and returns to the prompt; at the prompt it clears the line", function()
    start()
    enter("sacm.sleep(30)")
    term:wait_for("sacm%.sleep%(30%)$")
    term:key("C-c")
    -- well before the 30 s sleep could have ended
    term:wait_for("\n%^C\ncancelled: interrupted\n>$", 10)
    term:type("this line is dropped")
    term:key("C-c")
    term:wait_for("dropped%^C\n>$")
    enter("6 * 7")
    term:wait_for("\n42\n>$")
    finish()
  end)

  it("keeps a half-typed line intact while output arrives", function()
    start()
    enter("function tick() n = n + 1; print('tick ' .. n); if n % 2 == 0 then sacm.log.warn('log %d', n) end end")
    enter("n = 0; t = sacm.timer.every(0.05, tick)")
    term:wait_for("tick 1\n")
    term:type("local half = 'typed'")
    local before = term:count("tick ")
    -- output goes on arriving while the line waits
    term:wait_for("tick " .. (before + 6) .. "\n")
    local screen = term:screen()
    -- every output line is whole, and the prompt with the typed text is the last line
    assert.matches("\n> local half = 'typed'$", screen)
    assert.matches("WARN  %[lua%] log %d+\n", screen)
    for line in screen:gmatch("[^\n]+") do
      if line:find("tick", 1, true) and line:sub(1, 1) ~= ">" then assert.matches("^tick %d+$", line) end
    end
    term:key("C-u")
    enter("t:cancel()")
    term:key("C-l")
    enter("'after ' .. n")
    term:wait_for('"after %d+"\n>$')
    finish()
  end)

  it("keeps history across runs and exits with 0 on Ctrl-D after the shutdown handlers", function()
    local marker = dir .. "/shutdown-ran"
    start()
    enter("history_marker = 4242")
    enter(" secret = 'not in the history'")
    enter(("sacm.on_shutdown(function() io.open(%q, 'w'):write('ran'):close() end)"):format(marker))
    term:wait_for("\n>$")
    term:key("C-d")
    assert.equal(0, term:wait_exit())
    assert.equal("ran", fs.read(marker))
    local file = dir .. "/state/sacmrun/history"
    local text = assert(fs.read(file))
    assert.matches("history_marker = 4242\n", text)
    assert.not_matches("secret", text)
    assert.equal(tonumber("600", 8), assert(fs.stat(file)).mode & tonumber("777", 8))
    term:close()

    start()
    term:key("Up", "Up")
    term:wait_for("\n> history_marker = 4242$")
    term:key("Enter")
    term:wait_for("\n>$")
    enter("history_marker + 1")
    term:wait_for("\n4243\n>$")
    finish()
  end)
end)

describe("the REPL on a terminal, connected to a grid #e2e", function()
  local prosody = require "support.prosody"
  local server, term, dir
  lazy_setup(function()
    server = prosody.start({ users = { engineer = "pw" } })
  end)
  lazy_teardown(function()
    if term then term:close() end
    if server then server:stop() end
    if dir then tmp.remove(dir) end
  end)

  it("connects, completes connection methods, and prints replies as they arrive", function()
    dir = tmp.dir("repl")
    term = terminal.open({ BIN }, { env = { SACMRUN_HISTORY = "" } })
    term:wait_for("\n>$")
    term:type(("c = require('sacm.xmpp').connect{ jid = 'engineer@%s', password = 'pw', host = %q, port = %d, cafile = %q }")
      :format(server.domain, server.host, server.port, server.ca_file))
    term:key("Enter")
    term:wait_for("\n>$")
    term:type("c:pi")
    term:key("Tab")
    term:wait_for("\n> c:ping%($")
    term:type(")")
    term:key("Enter")
    term:wait_for("\n> c:ping%(%)\n%d[%d.e-]*\n>$") -- the round trip in seconds
    term:type("c:iq(require('sacm.xmpp.stanza').iq{ type = 'get' }:tag('query', { xmlns = 'jabber:iq:roster' }))")
    term:key("Enter")
    local screen = term:wait_for("</iq>\n>$")
    assert.matches('<iq[^\n]*type="result"', screen)
    assert.matches('\n  <query xmlns="jabber:iq:roster"', screen)
    term:type("c:close()")
    term:key("Enter")
    term:wait_for("\n>$")
    term:key("C-d")
    assert.equal(0, term:wait_exit())
  end)
end)
