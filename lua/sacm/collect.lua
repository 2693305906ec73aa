--- sacm.collect: find, run and check the collection modules under sacm/collect/.
--
--   local data, err = collect.run("packages", { timeout = 30 })
--   for kind, r in pairs(collect.run_all(collect.kinds())) do ... r.data or r.error ... end
--
-- A kind is a file lua/sacm/collect/<kind>.lua on package.path (adding a kind is adding a
-- file). Each collection runs as its own task under a time budget; a module that hangs, raises
-- or returns a malformed table becomes an error value, never a bad or missing payload.
local fs = require "sacm.fs"
local task = require "sacm.task"
local errors = require "sacm.error"
local loop = require "sacm._loop"

local M = {}

M.DEFAULT_TIMEOUT = 20
M.MODULE_PREFIX = "sacm.collect."

local KIND_PATTERN = "^[a-z][a-z0-9_]*$"
-- Attribute and item keys: lower_snake_case, plus the dots, dashes and slashes of sysctl names.
local KEY_PATTERN = "^[%w_][%w_.%-/]*$"
local MAX_KEY_LENGTH = 128
-- How often (in VM instructions) a collection that never waits checks its deadline.
local HOOK_INSTRUCTIONS = 100000

local function now() return loop.hrtime() / 1e9 end

local function check_kind(what, kind)
  if type(kind) ~= "string" then
    error(("%s: kind must be a string, got %s"):format(what, type(kind)), 3)
  end
end

-- The directories package.path would search for "sacm.collect.<kind>", each with the file-name
-- suffix its template expects (templates such as "?/init.lua" name directories, not files).
local function search_dirs()
  local dirs = {}
  local sub = M.MODULE_PREFIX:gsub("%.", "/")
  for template in package.path:gmatch("[^;]+") do
    local prefix, suffix = template:match("^(.-)%?([^?]*)$")
    if prefix and suffix ~= "" and not suffix:find("/", 1, true) then
      dirs[#dirs + 1] = { dir = prefix .. sub, suffix = suffix }
    end
  end
  return dirs
end

--- kinds() -> sorted list of the kind names found on package.path. Waits (lists directories).
---@return string[] kinds
function M.kinds()
  local seen, list = {}, {}
  for _, d in ipairs(search_dirs()) do
    local entries = fs.list(d.dir == "" and "." or d.dir)
    for _, e in ipairs(entries or {}) do
      if e.type == "file" or e.type == "link" then
        local stem = e.name:sub(-#d.suffix) == d.suffix and e.name:sub(1, -#d.suffix - 1)
        if stem and stem:match(KIND_PATTERN) and not seen[stem] then
          seen[stem] = true
          list[#list + 1] = stem
        end
      end
    end
  end
  table.sort(list)
  return list
end

local function check_module(kind, mod)
  if type(mod) ~= "table" then return ("does not return a table (got %s)"):format(type(mod)) end
  if mod.kind ~= kind then return ("declares kind %q, expected %q"):format(tostring(mod.kind), kind) end
  if type(mod.collect) ~= "function" then return "has no collect function" end
  if mod.applicable ~= nil and type(mod.applicable) ~= "function" then return "applicable is not a function" end
  if type(mod.description) ~= "string" then return "has no description" end
  if math.type(mod.version) ~= "integer" then return "has no integer version" end
  return nil
end

--- module(kind) -> the collection module | nil, err. err.condition: "item-not-found" (no such
-- kind), "internal-error" (the file fails to load or is not a collection module).
---@param kind string
---@return table? module
---@return sacm.Error? err item-not-found | internal-error
function M.module(kind)
  check_kind("collect.module", kind)
  if not kind:match(KIND_PATTERN) then
    return nil, errors.new("item-not-found", ("%q is not a collection kind name"):format(kind))
  end
  local name = M.MODULE_PREFIX .. kind
  if not package.loaded[name] and not package.searchpath(name, package.path) then
    return nil, errors.new("item-not-found", ("no collection module for kind %q"):format(kind))
  end
  local ok, mod = pcall(require, name)
  if not ok then
    return nil, errors.new("internal-error", ("collection module %s failed to load: %s"):format(kind,
      errors.message(mod)))
  end
  local problem = check_module(kind, mod)
  if problem then
    return nil, errors.new("internal-error", ("collection module %s %s"):format(kind, problem))
  end
  return mod
end

---------------------------------------------------------------------------- data validation
local function valid_text(s)
  return utf8.len(s) ~= nil and not s:find("[%z\1-\8\11\12\14-\31\127]")
end

--- text(s) -> s as valid UTF-8 without control characters (other than tab and newlines): each
-- offending byte becomes "\xNN". For modules that pass on names and paths found on the host,
-- which can hold any bytes.
---@param s string
---@return string
function M.text(s)
  if valid_text(s) then return s end
  local out, i, n = {}, 1, #s
  while i <= n do
    local len = 1
    local b = s:byte(i)
    if b >= 0xC2 and b <= 0xF4 then len = b >= 0xF0 and 4 or b >= 0xE0 and 3 or 2 end
    local piece = s:sub(i, i + len - 1)
    if len > 1 and #piece == len and utf8.len(piece) then
      out[#out + 1] = piece
      i = i + len
    else
      if b < 32 and b ~= 9 and b ~= 10 and b ~= 13 or b >= 127 then
        out[#out + 1] = ("\\x%02x"):format(b)
      else
        out[#out + 1] = string.char(b)
      end
      i = i + 1
    end
  end
  return table.concat(out)
end

local function check_record(t, where)
  if type(t) ~= "table" or getmetatable(t) ~= nil then
    return ("%s must be a plain table, got %s"):format(where, type(t))
  end
  for k, v in pairs(t) do
    if type(k) ~= "string" then
      return ("%s has a %s key (%s); keys are strings"):format(where, type(k), tostring(k))
    end
    if #k > MAX_KEY_LENGTH or not k:match(KEY_PATTERN) then
      return ("%s has an invalid key %q"):format(where, k)
    end
    local tv = type(v)
    if tv == "number" then
      if v ~= v or v == math.huge or v == -math.huge then
        return ("%s.%s is not a finite number"):format(where, k)
      end
    elseif tv == "string" then
      if not valid_text(v) then
        return ("%s.%s is not valid UTF-8 text (use collect.text)"):format(where, k)
      end
    elseif tv ~= "boolean" then
      return ("%s.%s is a %s; values are strings, numbers or booleans"):format(where, k, tv)
    end
  end
  return nil
end

--- validate(data) -> true | nil, text. Checks data against the contract: exactly
-- {attributes = {key = scalar}, items = {{key = scalar}, ...}}, keys matching [%w_][%w_./-]*,
-- scalars strings (valid UTF-8, no control characters), finite numbers or booleans.
---@param data any
---@return true? ok
---@return string? problem
function M.validate(data)
  if type(data) ~= "table" then return nil, ("data must be a table, got %s"):format(type(data)) end
  for k in pairs(data) do
    if k ~= "attributes" and k ~= "items" then
      return nil, ("data has an unexpected field %s"):format(tostring(k))
    end
  end
  local problem = check_record(data.attributes, "attributes")
  if problem then return nil, problem end
  local items = data.items
  if type(items) ~= "table" then return nil, ("items must be a table, got %s"):format(type(items)) end
  local n = #items
  for k in pairs(items) do
    if math.type(k) ~= "integer" or k < 1 or k > n then
      return nil, ("items must be a list (found key %s)"):format(tostring(k))
    end
  end
  for i = 1, n do
    problem = check_record(items[i], ("items[%d]"):format(i))
    if problem then return nil, problem end
  end
  return true
end

---------------------------------------------------------------------------- running
local function timeout_error(kind, seconds)
  return errors.new("timeout", ("collection %s did not finish within %gs"):format(kind, seconds))
end

-- Raised from the instruction hook, so the runner can tell "ran past its deadline without
-- ever waiting" from an error the module raised itself.
local OVERRAN = setmetatable({}, { __name = "sacm.collect.overran" })

local function failure(kind, what, e)
  return errors.new("internal-error", ("collection %s %s: %s"):format(kind, what, errors.message(e)))
end

-- The body of the collection's own task: applicable(), then collect(opts), turned into
-- data | nil, err. A cancellation (the budget ran out while it waited) passes through.
local function attempt(kind, mod, opts, deadline)
  -- A module that loops without waiting never reaches a wait point where the cancellation
  -- lands: check the clock every so many instructions and stop it there instead.
  debug.sethook(function()
    if now() > deadline then error(OVERRAN, 0) end
  end, "", HOOK_INSTRUCTIONS)
  local traceback
  local function handler(e)
    if e ~= OVERRAN and not errors.is_condition(e, "cancelled") then
      traceback = debug.traceback(errors.message(e), 2)
    end
    return e
  end
  local function rethrow_if_stopped(e)
    if e == OVERRAN or (errors.is_condition(e, "cancelled") and task.current().cancelled) then
      debug.sethook()
      error(e, 0)
    end
  end

  if mod.applicable then
    local ok, yes, reason = xpcall(mod.applicable, handler, opts)
    if not ok then
      rethrow_if_stopped(yes)
      debug.sethook()
      return nil, failure(kind, "applicable() failed", yes)
    end
    if not yes then
      debug.sethook()
      return nil, errors.new("not-applicable", reason and errors.message(reason)
        or ("collection %s does not apply to this host"):format(kind))
    end
  end

  local r = table.pack(xpcall(mod.collect, handler, opts))
  if not r[1] then rethrow_if_stopped(r[2]) end
  debug.sethook()
  if not r[1] then
    local err = failure(kind, "failed", r[2])
    err.traceback = traceback
    return nil, err
  end
  local data, err = r[2], r[3]
  if data == nil then
    if not errors.is(err) then
      err = failure(kind, "failed", err == nil and "returned nothing" or err)
    end
    return nil, err
  end
  local ok, problem = M.validate(data)
  if not ok then return nil, failure(kind, "returned malformed data", problem) end
  return data
end

--- run(kind [, opts]) -> data | nil, err. Runs the module's collect(opts) in its own task within
-- opts.timeout seconds (default 20). err.condition: "timeout" (cut off; processes it started are
-- killed), "not-applicable" (applicable() said no; err.text is its reason), "item-not-found"
-- (no such kind), "internal-error" (the module raised, or returned malformed data), or what the
-- module returned as nil, err.
---@param kind string
---@param opts? table passed to the module's collect; opts.timeout seconds (20)
---@return {attributes: table<string, any>, items: table[]}? data
---@return sacm.Error? err timeout | not-applicable | item-not-found | internal-error | the module's
function M.run(kind, opts)
  check_kind("collect.run", kind)
  if opts ~= nil and type(opts) ~= "table" then
    error(("collect.run: opts must be a table, got %s"):format(type(opts)), 2)
  end
  opts = opts or {}
  local timeout = opts.timeout or M.DEFAULT_TIMEOUT
  if type(timeout) ~= "number" or timeout ~= timeout or timeout <= 0 then
    error(("collect.run: opts.timeout must be a positive number of seconds, got %s"):format(tostring(timeout)), 2)
  end
  task._require_task("collect.run", 3)
  local mod, err = M.module(kind)
  if not mod then return nil, err end

  -- task.with_timeout, spelled out: we need to know that it was our budget that ran out, and
  -- a module's own "timeout" (a program it ran) is reported as the module said it.
  local t = task.spawn({ name = "collect " .. kind, silent = true }, attempt, kind, mod, opts, now() + timeout)
  local r = table.pack(pcall(t.await, t, timeout))
  local me = task.current()
  if not r[1] and me.cancelled and errors.is_condition(r[2], "cancelled") then
    t:cancel("the collection's caller was cancelled")
    error(r[2], 0)
  end
  if not t:done() then
    t:cancel("collection time budget exhausted") -- kills the processes it waits for
    return nil, timeout_error(kind, timeout)
  end
  if not r[1] then
    if r[2] == OVERRAN then return nil, timeout_error(kind, timeout) end
    return nil, failure(kind, "failed", r[2])
  end
  if t.status == "cancelled" then return nil, t.error end
  return r[2], r[3]
end

-- While collections run, the collector starts each GC cycle when memory has grown by half
-- instead of doubled (Lua's default pause is 200): collections make garbage fast (file texts,
-- parsed lines), and the process's peak memory is what a collector host pays for
-- (bench/collector.sh). The pause in force before is put back when the last one ends.
M.GC_PAUSE = 150
local active, saved_pause = 0, nil
local function collecting(delta)
  active = active + delta
  if delta > 0 and active == 1 then
    saved_pause = collectgarbage("setpause", M.GC_PAUSE)
  elseif delta < 0 and active == 0 and saved_pause then
    collectgarbage("setpause", saved_pause)
    saved_pause = nil
  end
end

--- run_all([kinds] [, opts]) -> {kind = {data = data} | {error = err}}. Runs the collections at
-- once, each under its own opts.timeout. kinds defaults to kinds(). Every module gets opts;
-- opts.options[kind] (a table), when present, is merged over it for that kind.
---@param kinds? string[] default: kinds()
---@param opts? table as run's; opts.options[kind] merged over it per kind
---@return table<string, {data: table?, error: sacm.Error?}> outcomes
function M.run_all(kinds, opts)
  if kinds ~= nil and type(kinds) ~= "table" then
    error(("collect.run_all: kinds must be a list of names, got %s"):format(type(kinds)), 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error(("collect.run_all: opts must be a table, got %s"):format(type(opts)), 2)
  end
  task._require_task("collect.run_all", 3)
  kinds = kinds or M.kinds()
  collecting(1)
  opts = opts or {}
  local jobs = {}
  for i, kind in ipairs(kinds) do
    check_kind("collect.run_all", kind)
    local kind_opts = opts
    local extra = opts.options and opts.options[kind]
    if extra ~= nil then
      if type(extra) ~= "table" then
        error(("collect.run_all: opts.options.%s must be a table, got %s"):format(kind, type(extra)), 2)
      end
      kind_opts = {}
      for k, v in pairs(opts) do kind_opts[k] = v end
      for k, v in pairs(extra) do kind_opts[k] = v end
    end
    jobs[i] = task.spawn({ name = "collect " .. kind, silent = true }, M.run, kind, kind_opts)
  end
  local ok, results = pcall(task.all, jobs)
  collecting(-1)
  if not ok then error(results, 0) end
  local out = {}
  for i, r in ipairs(results) do
    local data, err
    if r.ok then
      data, err = r.value, r.values[2]
    else
      err = errors.is(r.err) and r.err
        or errors.new("internal-error", ("collection %s failed: %s"):format(kinds[i], errors.message(r.err)))
    end
    out[kinds[i]] = data and { data = data } or { error = err }
  end
  return out
end

return M
