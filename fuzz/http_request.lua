-- fuzz/http_request.lua: the Lua side of fuzz/http_request.c. on_request gets each request the
-- C parser accepted, checks what runtime/http.c promises about it (docs/api/http.md) and runs
-- sacm.http's own decoding of it (path, query, Basic credentials), which must never raise;
-- take(status) returns the account of the run's requests for the C side to compare, or raises
-- what went wrong.
local http = require "sacm.http"

local MAX_BODY = 1 << 20 -- the server's default limit, as fuzz/http_request.c sets it

local lines, failure = {}, nil

local function check(req)
  for _, k in ipairs({ "method", "target", "raw_path", "version", "body", "remote" }) do
    assert(type(req[k]) == "string", k .. " is not a string")
  end
  assert(req.raw_query == nil or type(req.raw_query) == "string", "raw_query")
  assert(type(req.keep_alive) == "boolean", "keep_alive")
  assert(req.version:match("^HTTP/1%.%d+$"), "a version other than HTTP/1.x reached Lua: " .. req.version)
  assert(#req.body <= MAX_BODY, "a body over the limit reached Lua")
  assert(#req.target <= 8192, "a target over the limit reached Lua")
  assert(req.target:find(req.raw_path, 1, true), "raw_path is not part of the target")
  assert(not req.raw_path:find("%00", 1, true), "a path with %00 reached Lua")
  assert(type(req.headers) == "table", "headers")
  local n = 0
  for name, value in pairs(req.headers) do
    n = n + 1
    assert(type(name) == "string" and type(value) == "string", "a header is not strings")
    assert(not name:find("%u"), "header name '" .. name .. "' is not lowercased")
  end
  assert(n <= 100, "more headers than the limit reached Lua")
  if req.version ~= "HTTP/1.0" then assert(req.headers.host, "an HTTP/1.1 request without Host") end
  -- what sacm.http's on_request and handlers do with it
  local path = req.raw_path
  if path:find("%", 1, true) then path = http.url_decode(path) end
  assert(not path:find("\0", 1, true), "the decoded path holds a NUL")
  local query = http.decode_query(req.raw_query)
  for k, v in pairs(query) do assert(type(k) == "string" and type(v) == "string", "query") end
  for name in pairs(query) do assert(#http.query_values(req, name) >= 1, "query_values lost " .. name) end
  local user, password = http.basic_auth(req)
  assert(user == nil or (type(user) == "string" and type(password) == "string"), "basic_auth")
end

local function on_request(_, req)
  local ok, err = xpcall(check, debug.traceback, req)
  if not ok and not failure then failure = err end
  local names = {}
  for name in pairs(req.headers or {}) do names[#names + 1] = name end
  table.sort(names)
  local hs = {}
  for i, name in ipairs(names) do hs[i] = ("%q=%q"):format(name, req.headers[name]) end
  lines[#lines + 1] = ("%s %q %s keep=%s query=%q body=%q {%s}"):format(req.method, req.target, req.version,
    tostring(req.keep_alive), tostring(req.raw_query), req.body, table.concat(hs, ","))
end

local STATUSES = { [0] = true, [400] = true, [413] = true, [414] = true, [431] = true, [500] = true, [505] = true }

local function take(status)
  local f = failure
  local out = table.concat(lines, "\n")
  lines, failure = {}, nil
  if f then error(f, 0) end
  if not STATUSES[status] then error("the parser ended with status " .. status) end
  return out
end

return { on_request = on_request, take = take }
