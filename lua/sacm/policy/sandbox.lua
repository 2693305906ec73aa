--- sacm.policy.sandbox: running untrusted Lua (policy files and their checks) with no access to the
-- runtime and within budgets.
--
--   local env = sandbox.new_env({ version_lt = helpers.version_lt })
--   local chunk = assert(load(text, "@" .. path, "t", env))
--   local runner = sandbox.runner({ instructions = 1e6, memory = 16 * 2^20 })
--   local ok, a, b = runner:run(chunk)      -- false, kind, message when it failed
--
-- What makes it hold:
-- - each environment is a fresh table of copies of the safe functions; nothing in it leads back to
--   the runtime (no io, os, require, load, debug, collectgarbage, rawset, string.dump);
-- - setmetatable/getmetatable work on tables only, and refuse __gc (a finaliser would run later,
--   outside every budget);
-- - while sandboxed code runs, the string metatable's __index is a read-only copy of `string`
--   without dump, with pattern functions that charge their work to the budget (Lua patterns
--   backtrack, so one `find` can run for hours inside C, where no instruction hook reaches);
-- - data handed in is a read-only view (`freeze`): one check cannot change what the next sees;
-- - the code runs in a coroutine with a count hook: when the budget is spent the hook raises, and
--   from then on raises at every instruction, so a `pcall` in the sandboxed code cannot swallow it;
-- - the state's allocator refuses to grow past usage + the memory budget while it runs.
local mem = require "sacm._mem"

local M = {}

local type, next, select, error, pairs = type, next, select, error, pairs
local setmetatable, getmetatable, rawequal, rawlen, rawget = setmetatable, getmetatable, rawequal,
  rawlen, rawget
local tostring = tostring
local dgetmetatable, sethook = debug.getmetatable, debug.sethook
local co_create, co_resume, co_yield = coroutine.create, coroutine.resume, coroutine.yield
local usage, set_limit = mem.usage, mem.set_limit
local s_find, s_match, s_gmatch, s_gsub, s_byte = string.find, string.match, string.gmatch,
  string.gsub, string.byte

M.DEFAULT_INSTRUCTIONS = 1000000
M.DEFAULT_MEMORY = 16 * 1024 * 1024

local BUDGET_MESSAGE = "instruction budget exceeded"
-- What Lua raises when an allocation fails (the allocator refused it).
local MEMORY_MESSAGE = "not enough memory"

local active -- the runner whose code is running, while one is

---------------------------------------------------------------------------- read-only views

local function deny_write()
  error("posture is read-only", 2)
end

local function view_len(p)
  return #dgetmetatable(p).__index
end

local function view_next(p, k)
  return next(dgetmetatable(p).__index, k)
end

local function view_pairs(p)
  return view_next, p, nil
end

local function is_data(v)
  local t = type(v)
  return t == "string" or t == "number" or t == "boolean"
end

-- Metatables hold the data in __index, which sandboxed code cannot reach (__metatable hides
-- it), so a read is one table lookup at C speed. __len only where there is a sequence: four
-- fields fit a smaller hash part, and most posture tables are items without one.
local function view_of(backing, sequence)
  if not sequence then
    return setmetatable({}, { __index = backing, __newindex = deny_write, __pairs = view_pairs,
      __metatable = "read-only" })
  end
  return setmetatable({}, { __index = backing, __newindex = deny_write, __pairs = view_pairs,
    __len = view_len, __metatable = "read-only" })
end

local function freeze_table(t, seen)
  local view = seen[t]
  if view then return view end
  local mt = dgetmetatable(t)
  if mt and mt.__newindex == deny_write then return t end -- already a view
  -- A table of scalars (a posture item, say) is its own backing: nothing in it leads further.
  -- This loop runs for every item of every list, so it is written out rather than calling is_data.
  local flat = true
  for k, v in next, t do
    local tv = type(v)
    if (tv ~= "string" and tv ~= "number" and tv ~= "boolean") or type(k) == "table" then
      flat = false
      break
    end
  end
  if flat then
    view = view_of(t, rawget(t, 1) ~= nil)
    seen[t] = view
    return view
  end
  local copy = {}
  view = view_of(copy, rawget(t, 1) ~= nil)
  seen[t] = view -- before the recursion, so a cycle ends here
  for k, v in next, t do
    if is_data(k) then
      if type(v) == "table" then
        copy[k] = freeze_table(v, seen)
      elseif is_data(v) then
        copy[k] = v
      end
    end
  end
  return view
end

--- freeze(value) -> a read-only view of value (tables deeply; scalars as they are). Reading,
-- ipairs, pairs and # work; writing raises; functions, userdata and threads inside are left out.
-- The view reads the original's scalars, so do not change the original while the view is used.
---@generic T
---@param value T
---@return T view read-only
function M.freeze(value)
  if type(value) ~= "table" then return value end
  return freeze_table(value, {})
end

--- is_frozen(value) -> true for a view made by freeze.
---@param value any
---@return boolean
function M.is_frozen(value)
  local mt = dgetmetatable(value)
  return type(value) == "table" and mt ~= nil and mt.__newindex == deny_write
end

---------------------------------------------------------------------------- budgets

-- Raises the budget error now and at every instruction from here on (see the module comment).
local function exhaust(runner)
  runner.exceeded = true
  sethook(runner.hook, "", 1)
  error(BUDGET_MESSAGE, 0)
end

-- Work done inside C by pattern functions, in rough "steps" of one character comparison, counted
-- against a budget of C_STEPS_PER_INSTRUCTION steps per instruction of the budget.
local C_STEPS_PER_INSTRUCTION = 100

local function charge(steps)
  local r = active
  if r == nil then return end
  local left = r.c_steps - steps
  r.c_steps = left
  if left < 0 then exhaust(r) end
end

-- How many quantifiers in a pattern can backtrack (*, +, - and ? after a single-character
-- class). Matching costs up to about len^(that + 1) steps. Cached: patterns are usually constants.
local backtracking_cache, cache_size = {}, 0
local QUANTIFIER = { [42] = true, [43] = true, [45] = true, [63] = true } -- * + - ?

local function backtracking(pattern)
  local n = backtracking_cache[pattern]
  if n then return n end
  n = 0
  local i, len = 1, #pattern
  if s_byte(pattern, 1) == 94 then i = 2 end -- ^
  while i <= len do
    local c = s_byte(pattern, i)
    local class_end
    if c == 37 then -- %x, %b, %f
      local e = s_byte(pattern, i + 1)
      if e == 98 then class_end = nil; i = i + 4 -- %bxy: linear
      elseif e == 102 then -- %f[set]
        local close = s_find(pattern, "]", i + 4, true)
        i = (close or len) + 1
      else class_end = i + 1 end
    elseif c == 91 then -- [set]
      local j = i + 1
      if s_byte(pattern, j) == 94 then j = j + 1 end
      j = j + 1 -- a ] first in the set is literal
      while j <= len and s_byte(pattern, j) ~= 93 do
        if s_byte(pattern, j) == 37 then j = j + 1 end
        j = j + 1
      end
      class_end = j
    else
      class_end = i
    end
    if class_end then
      if QUANTIFIER[s_byte(pattern, class_end + 1)] then
        n = n + 1
        i = class_end + 2
      else
        i = class_end + 1
      end
    end
  end
  if cache_size >= 1024 then backtracking_cache, cache_size = {}, 0 end
  backtracking_cache[pattern] = n
  cache_size = cache_size + 1
  return n
end

-- The steps one match may take, about (len + 1)^(backtracking quantifiers, + 1 when the match
-- may start anywhere) times the pattern's length.
local function pattern_cost(s, pattern, init, anchored_possible)
  local ts = type(s)
  if (ts ~= "string" and ts ~= "number") or type(pattern) ~= "string" then return 0 end -- raises on its own
  local len = ts == "string" and #s or 24
  if init and type(init) == "number" and init > 1 then len = len - init + 1 end
  if len < 1 then len = 1 end
  local exponent = backtracking(pattern)
  if not (anchored_possible and s_byte(pattern, 1) == 94) then exponent = exponent + 1 end
  if exponent == 1 then return (len + 1) * #pattern end
  return (len + 1) ^ exponent * #pattern
end

local function safe_find(s, pattern, init, plain)
  if not plain then charge(pattern_cost(s, pattern, init, true)) end
  return s_find(s, pattern, init, plain)
end

local function safe_match(s, pattern, init)
  charge(pattern_cost(s, pattern, init, true))
  return s_match(s, pattern, init)
end

local function safe_gmatch(s, pattern, init)
  charge(pattern_cost(s, pattern, init, false))
  return s_gmatch(s, pattern, init)
end

local function safe_gsub(s, pattern, repl, n)
  charge(pattern_cost(s, pattern, nil, true))
  return s_gsub(s, pattern, repl, n)
end

local function copy_of(t, except)
  local c = {}
  for k, v in pairs(t) do
    if not (except and except[k]) then c[k] = v end
  end
  return c
end

local function safe_string_table()
  local t = copy_of(string, { dump = true })
  t.find, t.match, t.gmatch, t.gsub = safe_find, safe_match, safe_gmatch, safe_gsub
  return t
end

-- What `("x"):method()` finds while sandboxed code runs: read-only, so no policy can change
-- string methods for another.
local string_methods = view_of(safe_string_table(), false)
local string_metatable = dgetmetatable("")
local string_library = string_metatable.__index -- put back after each run

local function safe_setmetatable(t, mt)
  if type(t) ~= "table" then
    error("bad argument #1 to 'setmetatable' (table expected, got " .. type(t) .. ")", 2)
  end
  if mt ~= nil and type(mt) ~= "table" then
    error("bad argument #2 to 'setmetatable' (nil or table expected)", 2)
  end
  if mt ~= nil then
    -- Lua reads __gc raw, so a raw look is the whole truth about finalisers
    if rawget(mt, "__gc") ~= nil then error("setmetatable: __gc is not allowed in policies", 2) end
  end
  return setmetatable(t, mt)
end

local function safe_getmetatable(v)
  if type(v) ~= "table" then return nil end
  return getmetatable(v)
end

--- new_env([extra]) -> a fresh environment for sandboxed code: the safe standard functions
-- (copies, so changing them affects only this environment) and the entries of extra.
---@param extra? table<string, any> more entries of the environment
---@return table env
function M.new_env(extra)
  local env = {
    _VERSION = _VERSION,
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs, pcall = pcall,
    select = select, tonumber = tonumber, tostring = tostring, type = type,
    rawequal = rawequal, rawlen = rawlen,
    setmetatable = safe_setmetatable, getmetatable = safe_getmetatable,
    string = safe_string_table(),
    table = copy_of(table),
    math = copy_of(math, { randomseed = true }), -- reseeding would change the runtime's generator
    utf8 = copy_of(utf8),
  }
  env._G = env
  if extra then
    for k, v in pairs(extra) do env[k] = v end
  end
  return env
end

---------------------------------------------------------------------------- the runner

---@class sacm.policy.Runner runs functions within instruction and memory budgets (sandbox.runner)
---@field used integer what the last run cost in instructions
local Runner = {}
Runner.__index = Runner

-- The body of a runner's coroutine: runs one function per resume and hands back its first two
-- results, so one coroutine serves many checks until one of them fails.
local DONE = setmetatable({}, { __name = "sacm.policy.sandbox.done" })
local function body(fn, a, b)
  while true do
    local r1, r2 = fn(a, b)
    fn, a, b = co_yield(DONE, r1, r2)
  end
end

-- The count hook fires every STEP instructions, so a run's use is known to within STEP: what a
-- run used is charged to the totals of sacm.policy (per policy file and per evaluation).
local STEP = 1000

--- runner({instructions, memory}) -> runner. instructions: the count of Lua VM instructions one
-- run may take (default 1e6); memory: bytes the state may grow by during one run (default 16 MiB;
-- false for no cap).
---@param opts? {instructions?: integer, memory?: integer|false}
---@return sacm.policy.Runner
function M.runner(opts)
  opts = opts or {}
  local instructions = opts.instructions or M.DEFAULT_INSTRUCTIONS
  if math.type(instructions) ~= "integer" then
    instructions = math.tointeger(instructions) or error("instructions must be an integer", 2)
  end
  if instructions < 1 then error("instructions must be positive", 2) end
  local memory = opts.memory
  if memory == nil then memory = M.DEFAULT_MEMORY end
  if memory then
    memory = math.tointeger(memory) or error("memory must be an integer number of bytes", 2)
    if memory < 1 then error("memory must be positive", 2) end
  end
  local self = setmetatable({ instructions = instructions, memory = memory, used = 0 }, Runner)
  self.hook = function()
    local ticks = self.ticks + 1
    self.ticks = ticks
    if ticks * STEP >= self.limit then exhaust(self) end
  end
  return self
end

local function describe(v)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" or t == "boolean" or t == "nil" then return tostring(v) end
  -- never tostring a table here: its __tostring is sandboxed code, and this runs outside
  return ("(error object is a %s value)"):format(t)
end

--- runner:run(fn, a, b [, limit]) -> true, r1, r2 | false, kind, message.
-- Runs fn(a, b) in the sandbox's budgets and returns its first two results. kind says why it
-- failed: "instructions" (budget spent), "memory" (cap reached), "yield" (it tried to yield) or
-- "error" (it raised; message is the error as text, a non-string error described by its type).
-- limit: instructions for this run when fewer than the runner's (what is left of a larger
-- budget). Afterwards runner.used is what the run cost in instructions (counted in steps of
-- 1,000, pattern work included). Runs to completion without yielding; a run cannot start inside another.
---@param fn fun(a: any, b: any): any, any
---@param a any
---@param b any
---@param limit? integer instructions for this run, when fewer than the runner's
---@return boolean ok
---@return any r1 or kind: "instructions"|"memory"|"yield"|"error"
---@return any r2 or message
function Runner:run(fn, a, b, limit)
  if active then error("sandbox: a run cannot start while another is running", 2) end
  limit = math.min(limit or self.instructions, self.instructions)
  if limit < 1 then limit = 1 end
  local co = self.co
  if co == nil then
    co = co_create(body)
    self.co = co
  end
  self.exceeded = false
  self.limit, self.ticks = limit, 0
  local c_budget = limit * C_STEPS_PER_INSTRUCTION
  self.c_steps = c_budget
  sethook(co, self.hook, "", math.min(STEP, limit))
  active = self
  string_metatable.__index = string_methods
  local previous_limit
  if self.memory then previous_limit = set_limit(usage() + self.memory) end
  local ok, mark, r1, r2 = co_resume(co, fn, a, b)
  if self.memory then set_limit(previous_limit) end
  string_metatable.__index = string_library
  active = nil
  self.used = math.min(limit, self.ticks * STEP + (c_budget - math.max(self.c_steps, 0)) // C_STEPS_PER_INSTRUCTION)
  if self.exceeded then self.used = limit end
  if ok and mark == DONE then return true, r1, r2 end
  -- Failed or suspended mid-way: this coroutine is spent. It is left to the collector unclosed,
  -- so pending <close> handlers of the sandboxed code never run outside the budget.
  self.co = nil
  if ok then return false, "yield", "tried to yield (checks must run to completion)" end
  if self.exceeded then
    return false, "instructions", ("exceeded its instruction budget (%d instructions)"):format(limit)
  end
  if mark == MEMORY_MESSAGE then
    return false, "memory", ("exceeded its memory budget (%s)"):format(M.format_bytes(self.memory))
  end
  return false, "error", describe(mark)
end

---@param n integer bytes
---@return string text "16 MiB", "4 KiB", "100 bytes"
function M.format_bytes(n)
  if n >= 1024 * 1024 and n % (1024 * 1024) == 0 then return ("%d MiB"):format(n // (1024 * 1024)) end
  if n >= 1024 and n % 1024 == 0 then return ("%d KiB"):format(n // 1024) end
  return ("%d bytes"):format(n)
end

return M
