--- sacm.fs: files and directories, without blocking the loop.
--
--   local data, err = fs.read("/etc/hostname")
--   assert(fs.write(path, data))            -- atomic by default: readers see old or new, never half
--   local w <close> = fs.watch(dir, function(changes) ... end)
--
-- Every call except watch yields the running task while a threadpool worker does the I/O.
-- Expected failures (a missing file, no permission) return nil, err with err.condition set to the
-- errno name (ENOENT, EACCES, ...); bad arguments raise.
local core = require "sacm._fs"
local watch_core = require "sacm._watch"
local task = require "sacm.task"
local log = require("sacm.log").new("fs")
local new_timer = require("sacm._timer").new

local M = {}

M.DEFAULT_MAX_BYTES = 64 * 1024 * 1024

local pack, unpack = table.pack, table.unpack

-- Starts op(..., callback) and suspends the task until the callback. A cancelled task stops
-- waiting at once; the worker finishes on its own and its result is dropped.
-- Called (never tail-called) from the public functions, so level 4 is their caller:
-- require_task (1), await (2), fs.read (3), the user's code (4).
local function await(what, op, ...)
  local me = task._require_task(what, 4)
  local waiting = true
  local args = pack(...)
  args.n = args.n + 1
  args[args.n] = function(...)
    if waiting then task.wake(me, pack(...)) end
  end
  op(unpack(args, 1, args.n))
  local r = task.suspend(function() waiting = false end)
  waiting = false
  return unpack(r, 1, r.n)
end

local function check_path(what, path, level)
  if type(path) ~= "string" then
    error(("%s: path must be a string, got %s"):format(what, type(path)), level + 1)
  end
  if path == "" then error(what .. ": path is empty", level + 1) end
  if path:find("\0", 1, true) then error(what .. ": path contains a NUL byte", level + 1) end
  return path
end

local function check_opts(what, opts, level)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(("%s: options must be a table, got %s"):format(what, type(opts)), level + 1)
  end
  return opts
end

local function check_mode(what, mode, level)
  if mode ~= nil and (math.type(mode) ~= "integer" or mode < 0 or mode > 4095) then
    error(("%s: mode must be an integer of permission bits such as 0x1a4 (0644), got %s")
      :format(what, tostring(mode)), level + 1)
  end
  return mode
end

--- read(path [, {max_bytes}]) -> contents | nil, err. A file larger than max_bytes (default
-- 64 MiB) gives err.condition == "EFBIG" rather than a partial read.
---@param path string
---@param opts? {max_bytes?: integer}
---@return string? contents
---@return sacm.Error? err
function M.read(path, opts)
  check_path("fs.read", path, 2)
  opts = check_opts("fs.read", opts, 2)
  local max = opts.max_bytes or M.DEFAULT_MAX_BYTES
  if math.type(max) ~= "integer" or max < 0 then
    error("fs.read: max_bytes must be a non-negative integer", 2)
  end
  local result, err = await("fs.read", core.read, path, max)
  return result, err
end

--- write(path, data [, {mode, atomic = true, append}]) -> true | nil, err.
-- atomic: write a temporary file in the same directory, fsync, rename it over path, fsync the
-- directory; a replaced file keeps its permission bits unless mode is given. append implies a
-- plain (non-atomic) write. mode, when given, is applied exactly (no umask).
---@param path string
---@param data string
---@param opts? {atomic?: boolean, append?: boolean, mode?: integer}
---@return true? ok
---@return sacm.Error? err
function M.write(path, data, opts)
  check_path("fs.write", path, 2)
  if type(data) ~= "string" then
    error(("fs.write: data must be a string, got %s"):format(type(data)), 2)
  end
  opts = check_opts("fs.write", opts, 2)
  check_mode("fs.write", opts.mode, 2)
  local append = opts.append and true or false
  local atomic = opts.atomic
  if atomic == nil then atomic = not append end
  if atomic and append then error("fs.write: atomic and append cannot be combined", 2) end
  local result, err = await("fs.write", core.write, path, data, opts.mode, atomic and true or false, append)
  return result, err
end

--- stat(path) -> {type, size, mode, uid, gid, mtime, ctime, atime, ino, dev, nlink} | nil, err.
-- Follows symbolic links; type is "file", "directory", "link", "socket", "fifo", "char" or "block".
---@param path string
---@return table? info type, size, mode, uid, gid, mtime, ...
---@return sacm.Error? err
function M.stat(path)
  check_path("fs.stat", path, 2)
  local result, err = await("fs.stat", core.stat, path, true)
  return result, err
end

--- lstat(path): like stat, but a symbolic link describes itself (type "link").
---@param path string
---@return table? info
---@return sacm.Error? err
function M.lstat(path)
  check_path("fs.lstat", path, 2)
  local result, err = await("fs.lstat", core.stat, path, false)
  return result, err
end

--- exists(path) -> true | false | nil, err. Follows links (a dangling link does not exist);
-- errors other than ENOENT and ENOTDIR (EACCES, say) are returned, not guessed at.
---@param path string
---@return boolean? exists
---@return sacm.Error? err
function M.exists(path)
  check_path("fs.exists", path, 2)
  local st, err = await("fs.exists", core.stat, path, true)
  if st then return true end
  if err.condition == "ENOENT" or err.condition == "ENOTDIR" then return false end
  return nil, err
end

--- private_file(path [, {create = false}]) -> true [, warning] | nil, err: readies a file that holds secrets or posture
-- for its owner alone. Missing directories on the way are made 0700 and a missing file is made
-- empty with mode 0600, before anything is written to it (so no moment exists where others could
-- open it). An existing file open to group or others is left as it is, with a warning that says
-- so and how to fix it (changing an administrator's file behind their back would hide the fact).
-- create = false makes the directories only (for a file the caller writes with fs.write's mode).
---@param path string
---@param opts? table
---@return true? ok
---@return string|sacm.Error|nil warning_or_err
function M.private_file(path, opts)
  check_path("fs.private_file", path, 2)
  opts = check_opts("fs.private_file", opts, 2)
  local missing, dir = {}, path:match("^(.*)/[^/]+$")
  while dir and dir ~= "" do
    local found, err = M.exists(dir)
    if found == nil then return nil, err end
    if found then break end
    table.insert(missing, 1, dir)
    dir = dir:match("^(.*)/[^/]+$")
  end
  for _, d in ipairs(missing) do
    local ok, err = M.mkdir(d, { mode = 448 }) -- 0700
    if not ok and err.condition ~= "EEXIST" then return nil, err end
  end
  local st, err = M.stat(path)
  if not st then
    if err.condition ~= "ENOENT" then return nil, err end
    if opts.create == false then return true end
    local ok, werr = M.write(path, "", { mode = 384 }) -- 0600
    if not ok then return nil, werr end
    return true
  end
  if (st.mode & 0x3f) ~= 0 then
    return true, ("%s is readable or writable by other users (mode %03o): chmod 600 it"):format(path, st.mode & 0x1ff)
  end
  return true
end

--- list(dir) -> {{name =, type =}, ...} sorted by name (bytewise), without "." and "..".
---@param path string
---@return {name: string, type: string}[]? entries
---@return sacm.Error? err
function M.list(path)
  check_path("fs.list", path, 2)
  local result, err = await("fs.list", core.list, path)
  return result, err
end

--- mkdir(path [, {mode, parents}]) -> true | nil, err. parents: create missing ancestors and
-- accept an existing directory (mkdir -p). mode (default 0777 less the umask) is applied exactly
-- when given.
---@param path string
---@param opts? {mode?: integer, parents?: boolean}
---@return true? ok
---@return sacm.Error? err
function M.mkdir(path, opts)
  check_path("fs.mkdir", path, 2)
  opts = check_opts("fs.mkdir", opts, 2)
  check_mode("fs.mkdir", opts.mode, 2)
  local result, err = await("fs.mkdir", core.mkdir, path, opts.mode, opts.parents and true or false)
  return result, err
end

--- remove(path) -> true | nil, err. A file, a link (not its target) or an empty directory.
---@param path string
---@return true? ok
---@return sacm.Error? err
function M.remove(path)
  check_path("fs.remove", path, 2)
  local result, err = await("fs.remove", core.remove, path)
  return result, err
end

--- rename(from, to) -> true | nil, err. rename(2): atomic, same file system only.
---@param from string
---@param to string
---@return true? ok
---@return sacm.Error? err
function M.rename(from, to)
  check_path("fs.rename", from, 2)
  check_path("fs.rename", to, 2)
  local result, err = await("fs.rename", core.rename, from, to)
  return result, err
end

--- readlink(path) -> the target of the symbolic link, as stored (not resolved) | nil, err.
-- EINVAL when path is not a link.
---@param path string
---@return string? target
---@return sacm.Error? err
function M.readlink(path)
  check_path("fs.readlink", path, 2)
  local result, err = await("fs.readlink", core.readlink, path)
  return result, err
end

local ALGORITHMS = { sha256 = true, sha1 = true, sha512 = true, sha384 = true, sha224 = true }

--- hash(path [, algorithm]) -> lowercase hex digest | nil, err. algorithm: "sha256" (default),
-- "sha1", "sha512", "sha384", "sha224". The file is streamed, never loaded whole.
---@param path string
---@param algorithm? "sha256"|"sha1"|"sha512"|"sha384"|"sha224"
---@return string? hex
---@return sacm.Error? err
function M.hash(path, algorithm)
  check_path("fs.hash", path, 2)
  algorithm = algorithm or "sha256"
  if not ALGORITHMS[algorithm] then
    error(("fs.hash: unknown algorithm %q (sha256, sha1, sha512, sha384, sha224)"):format(tostring(algorithm)), 2)
  end
  -- in sacm._crypto, so scripts that never hash do not load OpenSSL
  local result, err = await("fs.hash", require("sacm._crypto").hash_file, path, algorithm)
  return result, err
end

---------------------------------------------------------------------------- watch
---@class sacm.Watcher
---@field path string
---@field closed boolean?
local Watcher = {}
Watcher.__index = Watcher

local function basename(path)
  local trimmed = path:gsub("/+$", "")
  if trimmed == "" then return "/" end
  return trimmed:match("([^/]+)$")
end

local function dirname(path)
  local trimmed = path:gsub("/+$", "")
  local dir = trimmed:match("^(.*)/[^/]*$")
  if dir == nil then return "." end
  if dir == "" then return "/" end
  return dir
end

--- watch(path, fn [, {debounce = 0.1}]) -> watcher | nil, err. Works inside or outside a task.
-- fn(changes) runs as its own task once changes have been quiet for `debounce` seconds; changes is
-- the sorted list of changed entry names (basenames). A directory is watched itself (entries
-- directly inside it); any other path is watched through its parent directory and only that name
-- is reported, so a file replaced by rename (editors, fs.write) or created later is still seen.
-- watcher:close() (or <close>) stops it; a pending, not yet delivered batch is dropped.
---@param path string
---@param fn fun(changes: table)
---@param opts? {debounce?: number}
---@return sacm.Watcher? watcher
---@return sacm.Error? err
function M.watch(path, fn, opts)
  check_path("fs.watch", path, 2)
  if type(fn) ~= "function" then
    error(("fs.watch: callback must be a function, got %s"):format(type(fn)), 2)
  end
  opts = check_opts("fs.watch", opts, 2)
  local debounce = opts.debounce or 0.1
  local debounce_ms = task._seconds_to_ms(debounce, "fs.watch debounce") or math.maxinteger

  local dir, only
  if watch_core.is_directory(path) then
    dir = path
  else
    dir, only = dirname(path), basename(path)
  end

  local self = setmetatable({ path = path, pending = {} }, Watcher)
  local timer = new_timer()
  self.timer = timer

  local function flush()
    local names = {}
    for name in pairs(self.pending) do names[#names + 1] = name end
    self.pending = {}
    if #names == 0 or self.closed then return end
    table.sort(names)
    task.spawn({ name = "fs.watch " .. path }, fn, names)
  end

  local handle, err = watch_core.new(dir, function(name, events)
    if self.closed then return end
    if name == nil then
      -- callback(nil, err): the watch failed (the kernel dropped it, say)
      if type(events) ~= "string" then log.warn("watching %s: %s", path, tostring(events)) end
      return
    end
    if only and name ~= only then return end
    self.pending[name] = true
    -- each event restarts the quiet period
    timer:start(debounce_ms, 0, flush)
  end)
  if not handle then
    timer:close()
    return nil, err
  end
  self.handle = handle
  return self
end

--- watcher:close(): stops watching; idempotent.
---(no parameters, no results)
function Watcher:close()
  if self.closed then return end
  self.closed = true
  if self.handle then self.handle:close() end
  self.timer:close()
  self.pending = {}
end

Watcher.__close = require("sacm.error").closer(Watcher.close)

function Watcher:__tostring()
  return ("fs watcher on %s%s"):format(self.path, self.closed and " (closed)" or "")
end

return M
