--- sacm.error: the value expected failures return as `nil, err`.
-- err.condition is an XMPP defined condition (item-not-found, not-authorized, remote-server-timeout)
-- or a libuv error name (ECONNREFUSED, ENOENT), or one of the runtime's own (timeout, cancelled,
-- closed); err.text is for people, and tostring(err) reads "condition: text".
local core = require "sacm._error"

---@class sacm.Error
---@field condition string a name to branch on (docs/api/errors.md)
---@field text string? what happened, for people
local Error = core.metatable
local M = { metatable = Error }

--- new(condition, text [, fields]) -> err. fields are copied onto the error (type, line, ...).
---@param condition string
---@param text? string
---@param fields? table copied onto the error
---@return sacm.Error
function M.new(condition, text, fields)
  assert(type(condition) == "string", "error condition must be a string")
  local err = { condition = condition, text = text }
  if fields then
    for k, v in pairs(fields) do err[k] = v end
  end
  return setmetatable(err, Error)
end

---@param v any
---@return boolean
function M.is(v)
  return getmetatable(v) == Error
end

-- Names that say the same thing (docs/api/errors.md): the runtime's older name beside the
-- RFC 6120 one. is_condition treats the two of a pair as one.
M.SAME = {
  ["timeout"] = "remote-server-timeout", ["remote-server-timeout"] = "timeout",
  ["internal-error"] = "internal-server-error", ["internal-server-error"] = "internal-error",
}

--- is_condition(v, condition): true when v is an error with that condition (or its other name).
---@param v any
---@param condition string
---@return boolean
function M.is_condition(v, condition)
  if getmetatable(v) ~= Error then return false end
  return v.condition == condition or M.SAME[condition] == v.condition
end

--- message(v): any error value (string, error object, other) as one line of text.
---@param v any
---@return string
function M.message(v)
  if type(v) == "string" then return v end
  local mt = getmetatable(v)
  if type(mt) == "table" and mt.__tostring then
    local ok, s = pcall(tostring, v)
    if ok and type(s) == "string" then return s end
  end
  if type(v) == "number" then return tostring(v) end
  return ("(error object is a %s value)"):format(type(v))
end

-- The frames of the runtime that runs a script, a REPL line or a task: below the script's own.
local RUNTIME_FRAMES = { "sacm/_boot%.lua:%d+:", "sacm/task%.lua:%d+:", "sacm/repl%.lua:%d+:",
  "^%s*%[C%]: in function 'xpcall'$", "^%s*%[C%]: in %?$" }

--- _trim_traceback(text) -> text without the runtime's frames at the bottom of its traceback
-- (internal: how the command line and the REPL report errors). The message is kept whole, and so
-- are frames above the script's (a library function that raised).
function M._trim_traceback(text)
  local msg, frames = text:match("^(.-)\n(stack traceback:\n.*)$")
  if not msg then return text end
  local lines = {}
  for line in frames:gmatch("[^\n]+") do lines[#lines + 1] = line end
  while #lines > 1 do
    local line, runtime = lines[#lines], false
    for _, pattern in ipairs(RUNTIME_FRAMES) do
      if line:find(pattern) then runtime = true break end
    end
    if not runtime then break end
    lines[#lines] = nil
  end
  if #lines == 1 then return msg end -- "stack traceback:" alone
  return msg .. "\n" .. table.concat(lines, "\n")
end

--- closer(close) -> a __close metamethod. On a normal exit it is close(self), raising what close
-- raises. While an error propagates through the variable's scope it never raises: Lua would let
-- its error replace the one propagating, and people would debug the cleanup instead of the
-- cause. A failure to close is logged (warn) there. Every closable object of the library uses it.
---@param close fun(self: any)
---@return fun(self: any, err: any) metamethod
function M.closer(close)
  return function(self, err)
    if err == nil then return close(self) end
    local ok, close_err = pcall(close, self)
    if not ok then
      local what = "object"
      pcall(function() what = tostring(self) end)
      require("sacm.log").new("close").warn("closing %s failed while an error propagated (%s): %s",
        what, M.message(err), M.message(close_err))
    end
  end
end

return M
