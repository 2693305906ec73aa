--- spec/support/tmp.lua: private temporary directories for specs and test servers.
--
--   local tmp = require "support.tmp"
--   local dir = tmp.dir("fs")   -- $TMPDIR/sacmrun-fs-XXXXXXXXXXXX (or /tmp/...), mode 0700
--   ...
--   tmp.remove(dir)             -- the directory and everything below it
--
-- Failures raise: in test support a directory that cannot be made or removed is a failed test.
-- tmp.remove waits for rm(1), so it runs in a task (a spec is one).
local fs = require "sacm.fs"
local proc = require "sacm.proc"
local crypto = require "sacm.crypto"

local M = {}

--- dir([name]) -> a new directory $TMPDIR/sacmrun-NAME-XXXXXXXXXXXX (default name "test"), mode
-- 0700, under $TMPDIR if it is set, else /tmp. The suffix is 48 random bits from the CSPRNG and
-- mkdir(2) refuses an existing name, so another user cannot have made it in advance.
function M.dir(name)
  name = name or "test"
  if type(name) ~= "string" or not name:match("^[%w_.-]+$") then
    error("tmp.dir: the name must be letters, digits, '_', '.' or '-'", 2)
  end
  local base = os.getenv("TMPDIR")
  if base == nil or base == "" then base = "/tmp" end
  if base:sub(1, 1) ~= "/" then error("tmp.dir: TMPDIR must be an absolute path", 2) end
  base = base:gsub("/+$", "")
  for _ = 1, 10 do
    local candidate = ("%s/sacmrun-%s-%s"):format(base, name, crypto.hex(crypto.random(6)))
    local ok, err = fs.mkdir(candidate, { mode = tonumber("700", 8) })
    if ok then return candidate end
    if err.condition ~= "EEXIST" then error("tmp.dir: " .. tostring(err), 2) end
  end
  error("tmp.dir: could not create a directory in " .. base, 2)
end

--- remove(dir): removes dir and everything in it (rm -rf; a missing dir is no error).
function M.remove(dir)
  -- a wrong argument here could remove far more than a test directory
  if type(dir) ~= "string" or dir:sub(1, 1) ~= "/" or dir:match("^/+$") then
    error("tmp.remove: expects an absolute directory path, got " .. tostring(dir), 2)
  end
  local r, err = proc.run({ "rm", "-rf", "--", dir }, { timeout = 60 })
  if not r then error(("tmp.remove %s: %s"):format(dir, tostring(err)), 2) end
  if not r.ok then
    error(("tmp.remove %s: rm exited with %s\n%s"):format(dir, r.signal or r.code, r.stderr), 2)
  end
end

return M
