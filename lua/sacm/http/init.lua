--- sacm.http: an HTTPS/1.1 server on the runtime's loop.
--
--   local srv = assert(http.listen({ port = 8443, cert = "server.crt", key = "server.key" },
--     function(req)
--       return 200, { ["Content-Type"] = "text/plain" }, "hello " .. req.path .. "\n"
--     end))
--   print(srv.port) ... srv:close()
--
-- TLS (1.2 or later) is always on. The C side (runtime/http.c) parses requests with http-parser
-- and enforces every size limit and deadline before Lua sees a request; this file decodes the
-- target, runs each request's handler as its own task and writes the response head. See
-- docs/api/http.md.
local core = require "sacm._http"
local task = require "sacm.task"
local errors = require "sacm.error"
local crypto = require "sacm.crypto"
local log = require("sacm.log").new("http")
local time = require "sacm.time"

local M = {}

---@class sacm.http.Request what a handler receives
---@field method string
---@field target string as sent
---@field path string percent-decoded
---@field raw_path string
---@field query table<string, string>
---@field raw_query string?
---@field headers table<string, string> lower-case names
---@field body string
---@field version string
---@field keep_alive boolean
---@field remote string
---@field remote_port integer
---@field tls {version: string, cipher: string, peer: table?} peer: a verified client certificate's facts
---@class sacm.http.ListenOptions
---@field host? string numeric address ("127.0.0.1")
---@field port? integer 0 or absent: ephemeral
---@field cert string PEM file
---@field key string PEM file
---@field ca? string PEM file of the CAs client certificates must chain to
---@field verify_client? "optional"|"required"
---@field backlog? integer
---@field limits? {connections?: integer, per_address?: integer, header_size?: integer, headers?: integer, url?: integer, body?: integer}
---@field timeouts? {handshake?: number, headers?: number, body?: number, idle?: number, write?: number, handler?: number, linger?: number}

---@class sacm.http.Server a listening HTTPS server (http.listen)
---@field host string the address it listens on
---@field port integer
local Server = {}
Server.__index = Server
Server.__fields = { host = true, port = true, closed = true }
M.Server = Server

local REASONS = {
  [100] = "Continue", [101] = "Switching Protocols",
  [200] = "OK", [201] = "Created", [202] = "Accepted", [203] = "Non-Authoritative Information",
  [204] = "No Content", [205] = "Reset Content", [206] = "Partial Content",
  [300] = "Multiple Choices", [301] = "Moved Permanently", [302] = "Found", [303] = "See Other",
  [304] = "Not Modified", [307] = "Temporary Redirect", [308] = "Permanent Redirect",
  [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not Found",
  [405] = "Method Not Allowed", [406] = "Not Acceptable", [408] = "Request Timeout",
  [409] = "Conflict", [410] = "Gone", [411] = "Length Required", [412] = "Precondition Failed",
  [413] = "Content Too Large", [414] = "URI Too Long", [415] = "Unsupported Media Type",
  [416] = "Range Not Satisfiable", [417] = "Expectation Failed", [421] = "Misdirected Request",
  [422] = "Unprocessable Content", [428] = "Precondition Required", [429] = "Too Many Requests",
  [431] = "Request Header Fields Too Large",
  [500] = "Internal Server Error", [501] = "Not Implemented", [502] = "Bad Gateway",
  [503] = "Service Unavailable", [504] = "Gateway Timeout", [505] = "HTTP Version Not Supported",
}

--- status_text(code) -> the reason phrase ("Not Found"), or "Unknown".
---@param code integer
---@return string reason
function M.status_text(code)
  return REASONS[code] or "Unknown"
end

---------------------------------------------------------------------------- decoding

local function hex_byte(h) return string.char(tonumber(h, 16)) end

--- url_decode(s [, plus_is_space]) -> s with %XX sequences decoded (and + as space for forms).
---@param s string
---@param plus_is_space? boolean
---@return string
function M.url_decode(s, plus_is_space)
  if plus_is_space then s = s:gsub("+", " ") end
  return (s:gsub("%%(%x%x)", hex_byte))
end

local function each_pair(query, fn)
  for part in query:gmatch("[^&;]+") do
    local eq = part:find("=", 1, true)
    local name = M.url_decode(eq and part:sub(1, eq - 1) or part, true)
    local value = eq and M.url_decode(part:sub(eq + 1), true) or ""
    fn(name, value)
  end
end

--- decode_query(text) -> {name = value}. application/x-www-form-urlencoded, as in query strings
-- and form bodies; of a repeated name the first value counts (see query_values for all).
---@param text string
---@return table<string, string> values
function M.decode_query(text)
  local t = {}
  if text and text ~= "" then
    each_pair(text, function(name, value)
      if t[name] == nil then t[name] = value end
    end)
  end
  return t
end

--- query_values(req, name) -> every value given for name in the query string, in order.
---@param req sacm.http.Request
---@param name string
---@return string[] values
function M.query_values(req, name)
  local list = {}
  if req.raw_query then
    each_pair(req.raw_query, function(n, v) if n == name then list[#list + 1] = v end end)
  end
  return list
end

--- basic_auth(req) -> user, password, or nil, err (not-authorized).
-- HTTP Basic credentials (RFC 7617). The password travels in clear inside the connection, so
-- this refuses requests that did not arrive over TLS (the server never accepts any other).
---@param req sacm.http.Request
---@return string? user
---@return string|sacm.Error password, or err (not-authorized)
function M.basic_auth(req)
  if not req.tls then
    return nil, errors.new("not-authorized", "Basic credentials are accepted over TLS only")
  end
  local value = req.headers.authorization
  if not value then return nil, errors.new("not-authorized", "no Authorization header") end
  local scheme, token = value:match("^%s*(%S+)%s+(%S+)%s*$")
  if not scheme or scheme:lower() ~= "basic" then
    return nil, errors.new("not-authorized", "the Authorization header is not Basic credentials")
  end
  local decoded = crypto.base64_decode(token)
  local user, password
  if decoded then user, password = decoded:match("^([^:]*):(.*)$") end
  if not user then
    return nil, errors.new("not-authorized", "malformed Basic credentials")
  end
  return user, password
end

---------------------------------------------------------------------------- responses

local OWNED = { ["content-length"] = true, ["transfer-encoding"] = true, ["date"] = true, ["connection"] = true }

local date_second, date_text
local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8, Sep = 9, Oct = 10,
  Nov = 11, Dec = 12 }

--- date(seconds) -> the time as an IMF-fixdate (RFC 9110 5.6.7), for Date and Last-Modified.
---@param t number seconds since the epoch (a fraction is cut)
---@return string date
function M.date(t)
  return os.date("!%a, %d %b %Y %H:%M:%S GMT", math.floor(t))
end

--- parse_date(text) -> seconds | nil. IMF-fixdate only (what every current client sends).
---@param s string?
---@return integer? seconds
function M.parse_date(s)
  local d, mon, y, hh, mm, ss = (s or ""):match("^%a%a%a, (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  if not d or not MONTHS[mon] then return nil end
  return time.parse(("%s-%02d-%sT%s:%s:%sZ"):format(y, MONTHS[mon], d, hh, mm, ss))
end

-- the Date header of every response: formatted once a second
local function http_date()
  local now = os.time()
  if now ~= date_second then date_second, date_text = now, M.date(now) end
  return date_text
end

local function add_header(out, name, value)
  if type(value) ~= "string" then
    if type(value) ~= "number" then
      error(("header %s: value must be a string, got %s"):format(name, type(value)), 0)
    end
    value = tostring(value)
  end
  -- CR or LF would let a value start a new header or a new response (response splitting)
  if value:find("[%z\r\n]") then error(("header %s: value contains CR, LF or NUL"):format(name), 0) end
  out[#out + 1] = name
  out[#out + 1] = ": "
  out[#out + 1] = value
  out[#out + 1] = "\r\n"
end

-- The status line and headers for a handler's answer; raises on a malformed one.
local function response_head(status, headers, body_len, close)
  if math.type(status) ~= "integer" or status < 200 or status > 599 then
    error(("handler returned status %s; it must be an integer from 200 to 599"):format(tostring(status)), 0)
  end
  local out = { "HTTP/1.1 ", tostring(status), " ", REASONS[status] or "Unknown", "\r\n" }
  if headers ~= nil then
    if type(headers) ~= "table" then error("handler returned headers that are not a table", 0) end
    for name, value in pairs(headers) do
      if type(name) ~= "string" or not name:find("^[%w!#$%%&'*+.^_`|~-]+$") then
        error(("invalid header name %s"):format(tostring(name)), 0)
      end
      local lname = name:lower()
      if lname == "connection" and type(value) == "string" and value:lower() == "close" then
        close = true
      elseif OWNED[lname] then
        error(("header %s is set by the server"):format(name), 0)
      elseif type(value) == "table" then
        for _, v in ipairs(value) do add_header(out, name, v) end
      else
        add_header(out, name, value)
      end
    end
  end
  out[#out + 1] = "Date: " .. http_date() .. "\r\n"
  if status ~= 204 and status ~= 304 then
    out[#out + 1] = "Content-Length: " .. body_len .. "\r\n"
  end
  out[#out + 1] = close and "Connection: close\r\n\r\n" or "Connection: keep-alive\r\n\r\n"
  return table.concat(out), close
end

local function error_response(status)
  local text = REASONS[status] .. "\n"
  return status, { ["Content-Type"] = "text/plain; charset=utf-8" }, text
end

local function traceback(err)
  return debug.traceback(errors.message(err), 2)
end

-- The task of one request: runs the handler, then answers on the connection.
local function serve(server, conn, req)
  local ok, status, headers, body = xpcall(server.handler, traceback, req)
  if ok and type(body) ~= "string" and body ~= nil then
    ok, status = false, "handler returned a body that is not a string"
  end
  local head, close
  local closing = not req.keep_alive or server.closed
  if ok then
    body = body or ""
    ok, head, close = pcall(response_head, status, headers, #body, closing)
    if not ok then status = head end
  end
  if not ok then
    log.error("%s %s from %s: %s", req.method, req.target, req.remote, errors.message(status))
    status, headers, body = error_response(500)
    head, close = response_head(status, headers, #body, closing)
  end
  if req.method == "HEAD" or status == 204 or status == 304 then body = nil end
  conn:respond(head, body, close) -- nil, closed when the client left: nothing to do then
end

local function on_request(server, conn, req)
  local path = req.raw_path
  -- (the C side refused %00: a decoded path never holds a NUL)
  if path:find("%", 1, true) then path = M.url_decode(path) end
  req.path = path
  req.query = M.decode_query(req.raw_query)
  task._spawn("http", true, serve, server, conn, req)
end

---------------------------------------------------------------------------- servers

local OPTIONS = { host = true, port = true, backlog = true, cert = true, key = true, ca = true,
                  verify_client = true, limits = true, timeouts = true }
local LIMITS = { connections = "max_connections", per_address = "max_per_address",
                 header_size = "max_header_size", headers = "max_headers", url = "max_url", body = "max_body" }
local TIMEOUTS = { handshake = "handshake_ms", headers = "headers_ms", body = "body_ms", idle = "idle_ms",
                   write = "write_ms", handler = "handler_ms", linger = "linger_ms" }

--- listen(opts, handler) -> server, or nil, err
-- opts: host (numeric address, default "127.0.0.1"; "0.0.0.0" or "::" for every interface),
-- port (0 or absent: an ephemeral port, see server.port), cert, key (PEM files), ca (PEM file of
-- CAs that client certificates must chain to), verify_client ("optional" or "required"; with a
-- ca and no verify_client, "optional"), backlog, limits = {connections, per_address, header_size,
-- headers, url, body}, timeouts = {handshake, headers, body, idle, write, handler, linger}
-- (seconds).
-- handler(req) -> status, headers, body runs as its own task for every request.
---@param opts sacm.http.ListenOptions
---@param handler fun(req: sacm.http.Request): integer, table<string, string|string[]>?, string?
---@return sacm.http.Server? server
---@return sacm.Error? err
function M.listen(opts, handler)
  if type(opts) ~= "table" then error("http.listen: opts must be a table", 2) end
  if type(handler) ~= "function" then error("http.listen: handler must be a function", 2) end
  for name in pairs(opts) do
    if not OPTIONS[name] then error("http.listen: unknown option " .. tostring(name), 2) end
  end
  local c = {
    host = opts.host, port = opts.port, backlog = opts.backlog, cert = opts.cert, key = opts.key,
    ca = opts.ca, verify_client = opts.verify_client,
  }
  if c.ca and c.verify_client == nil then c.verify_client = "optional" end
  for name, value in pairs(opts.limits or {}) do
    local field = LIMITS[name]
    if not field then error("http.listen: unknown limit " .. tostring(name), 2) end
    c[field] = value
  end
  for name, value in pairs(opts.timeouts or {}) do
    local field = TIMEOUTS[name]
    if not field then error("http.listen: unknown timeout " .. tostring(name), 2) end
    c[field] = math.max(1, task._seconds_to_ms(value, "http timeout " .. name) or math.maxinteger)
  end
  local self = setmetatable({ handler = handler }, Server)
  local srv, err = core.listen(c, function(conn, req) on_request(self, conn, req) end)
  if not srv then return nil, err end
  self._core = srv
  self.host, self.port = srv:address()
  log.info("listening on %s port %d", self.host, self.port)
  return self
end

--- server:stats() -> {accepted, active, refused, shed, requests, responses, tls_failures,
-- bad_requests, timeouts}: counters since listen.
---@return {accepted: integer, active: integer, refused: integer, shed: integer, requests: integer, responses: integer, tls_failures: integer, bad_requests: integer, timeouts: integer}
function Server:stats()
  return self._last_stats or self._core:stats()
end

--- server:close(): stops listening; idle connections close now, busy ones after their response.
---(no parameters, no results)
function Server:close()
  if self._core and not self.closed then
    self.closed = true
    self._last_stats = self._core:stats()
    self._core:close()
  end
end
Server.__close = errors.closer(Server.close)

function Server:__tostring()
  if self.closed then return ("https server on %s port %d (closed)"):format(self.host, self.port) end
  return ("https server on %s port %d (%d connections)"):format(self.host, self.port, self:stats().active or 0)
end

---------------------------------------------------------------------------- the client

--- request(opts) -> res, or nil, err: an HTTPS request from a task (lua/sacm/http/client.lua).
local client = require "sacm.http.client"
M.request = client.request
--- close_idle(), pool_stats() -> {idle, reused, opened}: the client's keep-alive connections.
M.close_idle = client.close_idle
M.pool_stats = client.pool_stats

return M
