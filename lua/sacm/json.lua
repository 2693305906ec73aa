--- sacm.json: JSON text (RFC 8259) from Lua values, for reports and feeds.
--
--   json.encode({ totals = { pass = 3 }, results = { ... } }, { indent = "  " })
--
-- Tables with keys 1..n (and no others) are arrays; an empty table is an object unless it has
-- the metatable json.array. Object keys are written sorted, so output is deterministic. Strings
-- must be UTF-8 (invalid sequences raise). NaN and infinities, functions and cycles raise.
local M = {}

M.array = setmetatable({}, { __name = "json.array" })

--- json.as_array(t) -> t, marked to be written as an array even when empty.
---@param t? table
---@return table t
function M.as_array(t)
  return setmetatable(t or {}, M.array)
end

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
  ["\r"] = "\\r", ["\t"] = "\\t" }

local function quote(s)
  if not utf8.len(s) then error("json: string is not valid UTF-8", 0) end
  return '"' .. s:gsub('[%c"\\]', function(c)
    return ESCAPES[c] or ("\\u%04x"):format(c:byte())
  end) .. '"'
end

local function is_array(t)
  if getmetatable(t) == M.array then return true end
  local n = #t
  if n == 0 then return false end
  local count = 0
  for k in pairs(t) do
    if math.type(k) ~= "integer" or k < 1 or k > n then return false end
    count = count + 1
  end
  return count == n
end

local function encode(v, out, indent, depth, seen)
  local t = type(v)
  if v == nil then
    out[#out + 1] = "null"
  elseif t == "boolean" then
    out[#out + 1] = v and "true" or "false"
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then error("json: cannot encode " .. tostring(v), 0) end
    out[#out + 1] = math.type(v) == "integer" and tostring(v) or ("%.17g"):format(v)
  elseif t == "string" then
    out[#out + 1] = quote(v)
  elseif t == "table" then
    if seen[v] then error("json: cannot encode a table that contains itself", 0) end
    seen[v] = true
    local nl = indent and ("\n" .. indent:rep(depth + 1)) or ""
    local close_nl = indent and ("\n" .. indent:rep(depth)) or ""
    if is_array(v) then
      if #v == 0 then
        out[#out + 1] = "[]"
      else
        out[#out + 1] = "["
        for i = 1, #v do
          out[#out + 1] = (i > 1 and "," or "") .. nl
          encode(v[i], out, indent, depth + 1, seen)
        end
        out[#out + 1] = close_nl .. "]"
      end
    else
      local keys = {}
      for k in pairs(v) do
        if type(k) ~= "string" then error("json: object keys must be strings, got " .. type(k), 0) end
        keys[#keys + 1] = k
      end
      table.sort(keys)
      if #keys == 0 then
        out[#out + 1] = "{}"
      else
        out[#out + 1] = "{"
        for i, k in ipairs(keys) do
          out[#out + 1] = (i > 1 and "," or "") .. nl .. quote(k) .. (indent and ": " or ":")
          encode(v[k], out, indent, depth + 1, seen)
        end
        out[#out + 1] = close_nl .. "}"
      end
    end
    seen[v] = nil
  else
    error("json: cannot encode a " .. t, 0)
  end
end

--- json.encode(value [, {indent = "  "}]) -> string
---@param v any
---@param opts? {indent?: string}
---@return string
function M.encode(v, opts)
  local out = {}
  encode(v, out, opts and opts.indent, 0, {})
  return table.concat(out)
end

return M
