--- sacm.http.client: HTTPS requests from a task (exported as sacm.http.request).
--
--   local res, err = http.request{ url = "https://repo.example/rolie/servicedocument",
--     headers = { accept = "application/atomsvc+xml" }, cafile = "/etc/sacm/ca.pem" }
--
-- Connections are kept for the next request to the same server (keep-alive, sacm.http.pool).
-- This file checks the options, parses the URL, takes a pooled connection or resolves the name
-- on libuv's threadpool, writes the request head, keeps the deadline, tries the host's addresses
-- in turn and retries once what a server's close of an idle connection cut off;
-- runtime/http_client.c connects, verifies the server's certificate (http_client_tls.c), sends
-- the request and parses the response with http-parser. See docs/api/http.md.
local core = require "sacm._http_client"
local pool = require "sacm.http.pool"
local dns = require "sacm._dns"
local new_timer = require("sacm._timer").new
local build = require "sacm._build"
local task = require "sacm.task"
local errors = require "sacm.error"
local log = require("sacm.log").new("http")

local M = {}

M.DEFAULT_TIMEOUT = 30
M.DEFAULT_MAX_BODY = 16 * 1024 * 1024
M.USER_AGENT = "sacmrun/" .. tostring(build.version or "0")
-- how long a loaded CA file or client certificate is reused before it is read again
M.CONTEXT_TTL = 60

local OPTIONS = { method = true, url = true, headers = true, body = true, cafile = true, cert = true,
                  key = true, insecure = true, timeout = true, max_body = true, keep_alive = true }
-- framing is the client's business: a caller's value could contradict what is sent
local OWNED = { host = true, ["content-length"] = true, ["transfer-encoding"] = true, connection = true,
                te = true, upgrade = true }
-- connection failures after which the host's next address is worth a try
local TRY_NEXT = { ECONNREFUSED = true, ENETUNREACH = true, EHOSTUNREACH = true, ETIMEDOUT = true,
                   EADDRNOTAVAIL = true, EAFNOSUPPORT = true, ECONNRESET = true }
-- Requests that may be sent twice (RFC 9110 9.2.2): only these are retried on a new connection
-- when the server had closed the pooled one. A POST that reached the server might have been
-- acted on already.
local IDEMPOTENT = { GET = true, HEAD = true, PUT = true, DELETE = true, OPTIONS = true }

local function bad_url(url, why)
  return nil, errors.new("bad-url", ("%s: %s"):format(url, why))
end

--- parse_url(url) -> {host, port, target, authority}, or nil, err (bad-url).
-- Only https URLs: a SACM repository's data is not for plain HTTP (RFC 8322 requires TLS).
---@param url string https only
---@return {host: string, port: integer, target: string, authority: string}? parts
---@return sacm.Error? err bad-url
function M.parse_url(url)
  if type(url) ~= "string" then error("http.request: url must be a string", 3) end
  if url:find("[%z\1-\32\127]") then return bad_url(url, "spaces or control characters in the URL") end
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then return bad_url(url, "not an absolute URL") end
  scheme = scheme:lower()
  if scheme ~= "https" then return bad_url(url, ("%s URLs are refused: TLS only"):format(scheme)) end
  local authority, target = rest:match("^([^/?#]*)(.*)$")
  target = target:gsub("#.*$", "")
  if target:sub(1, 1) ~= "/" then target = "/" .. target end
  -- a request line is ASCII: UTF-8 in a path or query goes percent-encoded (RFC 3986 2.5)
  target = target:gsub("[\128-\255]", function(c) return ("%%%02X"):format(c:byte()) end)
  if authority:find("@", 1, true) then return bad_url(url, "credentials in the URL are refused") end
  local host, port_text
  if authority:sub(1, 1) == "[" then
    host, port_text = authority:match("^%[([^%]]+)%](.*)$")
    if not host or dns.is_ip(host) ~= "ipv6" then return bad_url(url, "not an IPv6 address in brackets") end
  else
    host, port_text = authority:match("^([^:]*)(.*)$")
    if host == "" then return bad_url(url, "no host") end
    if not dns.is_ip(host) and not host:find("^[%w_]([%w_.-]*)$") then
      return bad_url(url, "the host is not a DNS name or an IP address")
    end
  end
  local port = 443
  if port_text ~= "" then
    port = tonumber(port_text:match("^:(%d+)$"))
    if not port or port < 1 or port > 65535 then return bad_url(url, "bad port") end
  end
  host = host:lower()
  local shown = host:find(":", 1, true) and "[" .. host .. "]" or host
  return { host = host, port = port, target = target,
           authority = port == 443 and shown or shown .. ":" .. port }
end

local function header_lines(out, headers)
  local names = {}
  for name, value in pairs(headers) do
    if type(name) ~= "string" or not name:find("^[%w!#$%%&'*+.^_`|~-]+$") then
      error(("http.request: invalid header name %s"):format(tostring(name)), 4)
    end
    local lname = name:lower()
    if OWNED[lname] then error(("http.request: header %s is set by the client"):format(name), 4) end
    if names[lname] then error(("http.request: header %s given twice"):format(name), 4) end
    names[lname] = true
    local values = type(value) == "table" and value or { value }
    for _, v in ipairs(values) do
      if type(v) == "number" then v = tostring(v) end
      if type(v) ~= "string" then
        error(("http.request: header %s: value must be a string, got %s"):format(name, type(v)), 4)
      end
      -- CR or LF would start another header or another request
      if v:find("[%z\r\n]") then error(("http.request: header %s: value contains CR, LF or NUL"):format(name), 4) end
      out[#out + 1] = name .. ": " .. v .. "\r\n"
    end
  end
  return names
end

-- The bytes of the request: head and body.
local function request_data(method, u, headers, body, keep_alive)
  local out = { method, " ", u.target, " HTTP/1.1\r\nHost: ", u.authority, "\r\n" }
  local given = header_lines(out, headers or {})
  if not given["user-agent"] then out[#out + 1] = "User-Agent: " .. M.USER_AGENT .. "\r\n" end
  if body or method == "POST" or method == "PUT" or method == "PATCH" then
    out[#out + 1] = "Content-Length: " .. #(body or "") .. "\r\n"
  end
  -- HTTP/1.1 connections persist unless one side says close (RFC 9112 9.3)
  out[#out + 1] = keep_alive and "\r\n" or "Connection: close\r\n\r\n"
  out[#out + 1] = body
  return table.concat(out)
end

---------------------------------------------------------------------------- TLS contexts

-- Loading a CA bundle costs milliseconds (the system store ~15 ms): reuse it across requests.
local contexts = {}

local function tls_key(opts)
  return table.concat({ opts.cafile or "", opts.cert or "", opts.key or "", opts.insecure and "1" or "0" }, "\0")
end

local function context(opts)
  local key = tls_key(opts)
  local now = os.time()
  local entry = contexts[key]
  if entry and now - entry.made < M.CONTEXT_TTL then return entry.ctx end
  for k, e in pairs(contexts) do
    if now - e.made >= M.CONTEXT_TTL then contexts[k] = nil end
  end
  local ctx, err = core.context({ cafile = opts.cafile, cert = opts.cert, key = opts.key, insecure = opts.insecure })
  if not ctx then return nil, err end
  if opts.insecure then
    log.warn("TLS certificate verification is off (insecure = true): any server can pose as the one asked")
  end
  contexts[key] = { ctx = ctx, made = now }
  return ctx
end

---------------------------------------------------------------------------- waiting

local TIMED_OUT = setmetatable({}, { __name = "sacm.http.timed_out" })

-- Calls start(callback) and suspends until the callback runs or the deadline wakes the task.
-- A callback after that (a late name resolution) wakes nothing.
local function wait(state, start)
  if state.expired then return nil, TIMED_OUT end
  local live = true
  local handle, err = start(function(...) if live then task.wake(state.task, ...) end end)
  if not handle then return nil, err end
  local function stop()
    live = false
    if type(handle) == "userdata" then handle:close() end
  end
  local a, b = task.suspend(stop)
  stop()
  return a, b
end

local function resolve(state, host)
  if dns.is_ip(host) then return { host } end
  local addresses, err = wait(state, function(cb) return dns.resolve(host, cb) end)
  if addresses and #addresses == 0 then
    return nil, errors.new("EAI_NONAME", "no address for " .. host)
  end
  if errors.is(err) then
    err = errors.new(err.condition, ("resolving %s: %s"):format(host, err.text))
  end
  return addresses, err
end

-- Sends a request and suspends until its response, its failure or the deadline: start(callback)
-- returns the connection it sent on (or nil, err, stale). -> res, reusable, nil, conn on success;
-- nil, err, stale otherwise, the connection closed then (a timed-out or cancelled request leaves
-- a stream in an unknown state, never fit for another request).
local function roundtrip(state, start)
  if state.expired then return nil, TIMED_OUT end
  local live = true
  local conn, err, stale = start(function(...) if live then task.wake(state.task, ...) end end)
  if not conn then return nil, err, stale end
  local a, b, c = task.suspend(function()
    live = false
    conn:close()
  end)
  live = false
  if not a then
    conn:close()
    return nil, b, c
  end
  return a, b, nil, conn
end

-- How long a connection may stay idle: ours, or less when the server said when it gives up.
-- Keep-Alive ("timeout=5, max=100") is an HTTP/1.0-era header outside RFC 9110 that Apache and
-- others still send. We let go a second before (half of it under two seconds) so that we do
-- not race the server's close; a server that says nothing is watched (see http_pool.lua).
local function idle_seconds(res)
  local ka = res.headers["keep-alive"]
  local t = ka and tonumber(ka:lower():match("timeout%s*=%s*\"?(%d+)"))
  if not t then return pool.IDLE_TIMEOUT end
  return math.min(pool.IDLE_TIMEOUT, t < 2 and t / 2 or t - 1)
end

local function done(o, key, res, reusable, conn)
  if o.keep_alive and reusable then pool.put(key, conn, idle_seconds(res)) else conn:close() end
  return res
end

local function exchange(state, u, ctx, data, o, key)
  local req = { data = data, head = o.method == "HEAD", max_body = o.max_body }
  local conn = o.keep_alive and pool.take(key)
  if conn then
    local res, b, stale, c = roundtrip(state, function(cb) return conn:request(req, cb) end)
    if res then return done(o, key, res, b, c) end
    if stale and not IDEMPOTENT[o.method] then
      return nil, errors.new(b.condition, ("%s (on a kept-alive connection the server had closed; a %s is not "
        .. "sent twice: send it again if it cannot have been acted on, or with keep_alive = false)"):format(
        b.text, o.method))
    end
    if not stale then return nil, b end
    -- The server closed the idle connection as the request went out (its idle timeout, a
    -- restart): nothing of the request was answered, so once more on a new connection.
    log.debug("%s %s: %s; sending it again on a new connection", o.method, o.url, b.text)
    pool.drop(key)
  end
  local addresses, err = resolve(state, u.host)
  if not addresses then return nil, err end
  for _, address in ipairs(addresses) do
    local res, b, _, c = roundtrip(state, function(cb)
      local fresh, e = core.request(ctx, { address = address, port = u.port, host = u.host, data = data,
                                           head = req.head, max_body = o.max_body }, cb)
      if fresh then pool.opened() end
      return fresh, e
    end)
    if res then return done(o, key, res, b, c) end
    err = b
    if b == TIMED_OUT or not TRY_NEXT[b.condition] then break end
  end
  return nil, err
end

---------------------------------------------------------------------------- requests

local function check(opts)
  if type(opts) ~= "table" then error("http.request: opts must be a table", 3) end
  for name in pairs(opts) do
    if not OPTIONS[name] then error("http.request: unknown option " .. tostring(name), 3) end
  end
  local method = opts.method or "GET"
  if type(method) ~= "string" or not method:find("^[A-Z]+$") then
    error("http.request: method must be an upper-case token like \"GET\"", 3)
  end
  if opts.headers ~= nil and type(opts.headers) ~= "table" then error("http.request: headers must be a table", 3) end
  if opts.body ~= nil and type(opts.body) ~= "string" then error("http.request: body must be a string", 3) end
  if opts.body and method == "HEAD" then error("http.request: a HEAD request has no body", 3) end
  for _, name in ipairs({ "cafile", "cert", "key" }) do
    if opts[name] ~= nil and type(opts[name]) ~= "string" then
      error(("http.request: %s must be a file name"):format(name), 3)
    end
  end
  if opts.key and not opts.cert then error("http.request: key needs cert", 3) end
  local max_body = opts.max_body or M.DEFAULT_MAX_BODY
  if math.type(max_body) ~= "integer" or max_body < 0 then
    error("http.request: max_body must be a non-negative integer", 3)
  end
  if opts.keep_alive ~= nil and type(opts.keep_alive) ~= "boolean" then
    error("http.request: keep_alive must be true or false", 3)
  end
  local timeout = opts.timeout or M.DEFAULT_TIMEOUT
  local ms = task._seconds_to_ms(timeout, "http.request timeout")
  -- in texts and logs, the URL without its query: that may carry a token (upload slots do)
  local shown = type(opts.url) == "string" and opts.url:gsub("[?#].*$", "") or tostring(opts.url)
  return { method = method, url = shown, max_body = max_body, timeout = timeout, timeout_ms = ms,
           keep_alive = opts.keep_alive ~= false }
end

---@class sacm.http.RequestOptions
---@field url string https only
---@field method? string "GET"
---@field headers? table<string, string|string[]>
---@field body? string
---@field cafile? string default: the system trust store
---@field cert? string client certificate (PEM file)
---@field key? string
---@field insecure? boolean no verification (logged)
---@field timeout? number seconds for everything (30)
---@field max_body? integer bytes (16 MiB)
---@field keep_alive? boolean false: a connection of its own
---@class sacm.http.Response
---@field status integer
---@field reason string
---@field version string
---@field headers table<string, string> lower-case names
---@field body string
---@field tls {version: string, cipher: string}

--- request(opts) -> res, or nil, err. Waits (suspends the calling task).
-- opts: url (https only), method ("GET"), headers ({name = value or {values}}), body (string),
-- cafile (default: the system trust store), cert, key (a client certificate), insecure (true:
-- no verification, logged as a warning), timeout (seconds for everything, default 30),
-- max_body (bytes, default 16 MiB), keep_alive (false: a connection of its own, closed after).
-- res: {status, reason, version, headers = {lowercase name = value}, body, tls = {version, cipher}}.
-- err.condition: a libuv name (ECONNREFUSED, EAI_NONAME...), tls-verification-failed, tls-failed,
-- tls-config, timeout, bad-response, too-large, bad-url.
---@param opts sacm.http.RequestOptions
---@return sacm.http.Response? res
---@return sacm.Error? err
function M.request(opts)
  local o = check(opts)
  local me = task._require_task("http.request", 3)
  local u, err = M.parse_url(opts.url)
  if not u then return nil, err end
  local data = request_data(o.method, u, opts.headers, opts.body, o.keep_alive)
  local ctx
  ctx, err = context(opts)
  if not ctx then return nil, err end
  -- what a pooled connection must share with this request: where it goes, whom it trusts, which
  -- certificate it showed (a connection made with other TLS options never carries it)
  local key = ("https\0%s\0%d\0%s"):format(u.host, u.port, tls_key(opts))

  local state = { task = me }
  local timer <close> = new_timer()
  if o.timeout_ms then
    timer:start(o.timeout_ms, 0, function()
      state.expired = true
      task.wake(me, nil, TIMED_OUT)
    end)
  end
  local res
  res, err = exchange(state, u, ctx, data, o, key)
  if err == TIMED_OUT then
    err = errors.new("timeout", ("%s %s: no complete response within %gs"):format(o.method, o.url, o.timeout))
  elseif err then
    err = errors.new(err.condition, ("%s %s: %s"):format(o.method, o.url, err.text))
  end
  return res, err
end

--- close_idle(): closes the idle connections kept for keep-alive (they would time out anyway;
-- useful before a long pause, or to make the next request open a new connection).
M.close_idle = pool.close_idle

--- pool_stats() -> {idle, reused, opened}: idle connections now; requests sent on a pooled
-- connection and connections opened, since the program started.
M.pool_stats = pool.stats

return M
