--- sacm.xmpp: XMPP client connections (RFC 6120/6121) on the runtime's loop.
--
--   local conn, err = xmpp.connect{ jid = "collector@grid.example/host1", password = "...",
--                                   cafile = "/etc/sacm/ca.pem" }
--   local reply, err = conn:iq(stanza.iq{ type = "get", to = "grid.example" }:tag("ping", { xmlns = "urn:xmpp:ping" }))
--
-- TLS is required and verified (CA file or the system store; the name checked is the JID's
-- domain). Skipping verification takes `insecure = true` and is logged as a warning.
local core = require "sacm._xmpp"
local handlers = require "sacm._handlers"
local dns = require "sacm._dns"
local task = require "sacm.task"
local timer = require "sacm.timer"
local errors = require "sacm.error"
local xml = require "sacm.xml"
local st = require "sacm.xmpp.stanza"
local jidlib = require "sacm.xmpp.jid"
local log = require("sacm.log").new("xmpp")
local hrtime = require("sacm._loop").hrtime
local new_timer = require("sacm._timer").new

local M = {}

local Connection = {}
Connection.__index = Connection
-- the fields REPL completion offers (the rest are internals; options holds the password)
Connection.__fields = { jid = true, state = true, domain = true, host = true, port = true, last_error = true, c = true }
M.Connection = Connection

local DEFAULT_TIMEOUT = 30
local OUTBOX_LIMIT = 10000
local DEFAULT_PING_INTERVAL = 60
local DEFAULT_PING_TIMEOUT = 20

local function copy(t)
  local c = {}
  for k, v in pairs(t or {}) do c[k] = v end
  return c
end

-- Handlers ----------------------------------------------------------------------------------

-- Runs for every handler on every incoming stanza: plain loops, no iterator closures.
local function matches(filter, s)
  if filter.type and s.attr.type ~= filter.type then return false end
  if filter.from and not (jidlib.equal(s.attr.from, filter.from) or jidlib.bare(s.attr.from) == filter.from) then
    return false
  end
  local ns, name = filter.ns, filter.child
  if ns or name then
    for i = 1, #s do
      -- a text child is a string: its .ns and .name are nil (see sacm.xml's matches)
      local child = s[i]
      if (not ns or child.ns == ns) and (not name or child.name == name) then return true end
    end
    return false
  end
  return true
end

local HANDLER_TASK_NAMES = { message = "message handler", presence = "presence handler" }

--- conn:on(kind, [filter,] fn) -> handler with :remove().
-- kind: "message", "presence", "iq" (requests: type get/set), or "status" (connection events:
-- fn(event, info) with event "connected", "disconnected", "reconnected").
-- filter: {type=, ns= (namespace of a child element), child= (its name), from=}.
-- Each call of fn runs as its own task. For iq requests fn(stanza, conn) returns the reply:
-- an element (the result's payload), true (an empty result), a full iq stanza, or nil, err
-- (err.condition becomes the stanza error); an error raised becomes internal-server-error.
---@param kind "message"|"presence"|"iq"|"status"
---@param filter? sacm.xmpp.Filter|function the handler when fn is left out
---@param fn? fun(stanza: sacm.xml.Element, conn: sacm.xmpp.Connection): any
---@return sacm.xmpp.Handler handler
function Connection:on(kind, filter, fn)
  if fn == nil then fn, filter = filter, {} end
  if type(fn) ~= "function" then error("handler must be a function", 2) end
  local list = self.handlers[kind]
  if not list then error("unknown handler kind '" .. tostring(kind) .. "'", 2) end
  return handlers.add(list, { filter = filter or {}, fn = fn })
end

-- conn:_on_direct(kind, filter, fn): for library modules (sacm.xmpp.pubsub), a message or presence
-- handler that runs at once, inside the delivery of the stanza, rather than as a task of its
-- own: for work that never waits (queueing an event), where a task per stanza is most of the
-- cost. fn(stanza, conn) must not yield; an error it raises is logged.
function Connection:_on_direct(kind, filter, fn)
  if kind ~= "message" and kind ~= "presence" then error("direct handlers are for message or presence", 2) end
  local h = self:on(kind, filter, fn)
  h.direct = true
  return h
end

local function emit_status(self, event, info)
  for _, h in ipairs(self.handlers.status) do
    task.spawn({ name = "xmpp status handler" }, h.fn, event, info, self)
  end
end

-- Sending -----------------------------------------------------------------------------------

--- conn:send(stanza) -> true, or nil, err. While reconnecting, stanzas wait in a bounded outbox
-- and go out once the stream is back; nothing is silently dropped.
---@param s sacm.xml.Element|string a stanza, or its serialized text
---@return true? ok
---@return sacm.Error? err
function Connection:send(s)
  if self.closed then return nil, errors.new("not-connected", "connection is closed") end
  local text = type(s) == "string" and s or xml.serialize(s)
  if self.state == "connected" then
    local ok, err = self.c:send(text)
    if ok then return true end
    if err.condition ~= "not-connected" then return nil, err end
  end
  if #self.outbox >= OUTBOX_LIMIT then
    return nil, errors.new("resource-constraint", "not connected and the outbox is full")
  end
  self.outbox[#self.outbox + 1] = text
  return true
end

local function flush_outbox(self)
  local pending = self.outbox
  self.outbox = {}
  for i, text in ipairs(pending) do
    local ok = self.c:send(text)
    if not ok then
      for j = i, #pending do self.outbox[#self.outbox + 1] = pending[j] end
      return
    end
  end
end

-- Request timeouts ---------------------------------------------------------------------------
-- A timer per request would cost a libuv handle for every iq. Requests with the same timeout
-- expire in the order they were sent, so they wait in one FIFO per connection (self.expiry)
-- with one timer, set for the oldest. Answered requests leave the FIFO once they reach its
-- head (replies mostly come in order, so it stays about as long as the requests in flight). A
-- request that would expire before the newest one in the FIFO (a shorter timeout than theirs)
-- gets a timer of its own.

local function expire_requests(self)
  local q = self.expiry
  local now = hrtime()
  while q.head <= q.tail do
    local entry = q[q.head]
    if not entry.expired and not entry.finished then
      if entry.deadline > now then
        -- the timer has millisecond resolution: round up, never fire early
        self.expiry_timer:start((entry.deadline - now + 999999) // 1000000, 0, self.on_expiry)
        return
      end
      entry.expired = true
      task.wake(entry.task, nil, "timeout")
    end
    q[q.head] = nil
    q.head = q.head + 1
  end
  q.head, q.tail = 1, 0
end

local function start_expiry(self, entry, ms)
  local me = entry.task
  entry.deadline = hrtime() + ms * 1000000
  local q = self.expiry
  if q.head <= q.tail and entry.deadline < q[q.tail].deadline then
    entry.timer = new_timer()
    entry.timer:start(ms, 0, function()
      entry.expired = true
      task.wake(me, nil, "timeout")
    end)
    return
  end
  q.tail = q.tail + 1
  q[q.tail] = entry
  if q.head == q.tail then
    if not self.expiry_timer then
      self.expiry_timer = new_timer()
      self.on_expiry = function() expire_requests(self) end
    end
    self.expiry_timer:start(ms, 0, self.on_expiry)
  end
  -- otherwise the timer is already set for an older request, and moves on from there
end

local function finish_expiry(self, entry)
  if entry.finished then return end
  entry.finished = true
  if entry.timer then
    entry.timer:close()
    entry.timer = nil
    return
  end
  local q = self.expiry
  while q.head <= q.tail and (q[q.head].finished or q[q.head].expired) do
    q[q.head] = nil
    q.head = q.head + 1
  end
  if q.head > q.tail then
    q.head, q.tail = 1, 0
    if self.expiry_timer then self.expiry_timer:stop() end -- nothing left to wait for
  end
end

-- The request's task was cancelled while waiting for the reply.
local function forget_request(entry)
  local self = entry.conn
  if self.pending[entry.id] == entry then self.pending[entry.id] = nil end
  finish_expiry(self, entry)
end

--- conn:iq(stanza [, timeout | options]) -> reply stanza, or nil, err.
-- options: timeout (seconds, default the connection's), resend (true: if the connection drops
-- before the reply, send the request again once it is back, within the same timeout; for
-- idempotent requests such as publishing an item with an id).
-- err.condition is the stanza error condition of an error reply (item-not-found, forbidden, ...),
-- remote-server-timeout when no reply came in time, or connection-lost.
---@param s sacm.xml.Element an iq stanza
---@param options? number|{timeout?: number, resend?: boolean} a timeout in seconds, or options
---@return sacm.xml.Element? reply
---@return sacm.Error? err
function Connection:iq(s, options)
  if type(options) == "table" then
    return self:_request(s, options.timeout, options.resend)
  end
  return self:_request(s, options) -- tail calls: errors still point at the caller of iq()
end

-- conn:_request(stanza, timeout, resend): iq() with its options as arguments, for library
-- modules that send a request per item (sacm.xmpp.pubsub), so no options table is made for each.
function Connection:_request(s, timeout, resend)
  if not xml.is_element(s) or s.name ~= "iq" or (s.attr.type ~= "get" and s.attr.type ~= "set") then
    error("iq() needs an <iq type='get'|'set'> element", 2)
  end
  timeout = timeout or self.options.timeout or DEFAULT_TIMEOUT
  local ms = task._seconds_to_ms(timeout, "iq timeout") -- nil: no timeout
  local me = task._require_task("iq")
  s.attr.id = s.attr.id or st.new_id()
  local id = s.attr.id
  if self.pending[id] then error("an iq with id '" .. id .. "' is already pending", 2) end
  local entry = { task = me, conn = self, id = id, to = s.attr.to, resend = resend and xml.serialize(s) or nil }
  self.pending[id] = entry
  local ok, err = self:send(entry.resend or s)
  if not ok then
    self.pending[id] = nil
    return nil, err
  end
  if ms then start_expiry(self, entry, ms) end
  local reply, why = task.suspend(forget_request, entry)
  finish_expiry(self, entry)
  self.pending[id] = nil
  if not reply then
    if why == "timeout" then
      return nil, errors.new("remote-server-timeout", ("no reply to iq %s from %s within %gs"):format(
        id, s.attr.to or "the server", timeout))
    end
    return nil, why
  end
  if reply.attr.type == "error" then return nil, st.to_error(reply) end
  return reply
end

-- Receiving ---------------------------------------------------------------------------------

-- A reply must come from where the request went (RFC 6120 10.1), or from our own server/account
-- for requests without a 'to', so a third party cannot answer for someone else.
local function reply_matches(self, entry, reply)
  local from = reply.attr.from
  if entry.to == nil then
    return from == nil or jidlib.equal(from, self.jid) or jidlib.equal(from, jidlib.bare(self.jid))
      or jidlib.equal(from, self.domain)
  end
  if from == nil then
    return jidlib.equal(entry.to, jidlib.bare(self.jid)) or jidlib.equal(entry.to, self.domain)
  end
  return jidlib.equal(from, entry.to)
end

local function run_iq_handler(self, h, s)
  local ok, result, err = pcall(h.fn, s, self)
  local reply
  if not ok then
    log.error("iq handler for %s failed: %s", tostring(h.filter.ns), errors.message(result))
    reply = st.error_reply(s, "internal-server-error")
  elseif result == nil then
    local e = err
    if errors.is(e) then
      reply = st.error_reply(s, e.condition, e.text, e.type, e.app)
    else
      reply = st.error_reply(s, "internal-server-error", e and tostring(e) or nil)
    end
  elseif result == true then
    reply = st.reply(s)
  elseif xml.is_element(result) and result.name == "iq" then
    reply = result
  elseif xml.is_element(result) then
    reply = st.reply(s):add(result)
  else
    reply = st.error_reply(s, "internal-server-error", "handler returned a " .. type(result))
  end
  self:send(reply)
end

local function run_direct(self, h, s)
  local ok, err = pcall(h.fn, s, self)
  if not ok then log.error("%s handler failed: %s", s.name, errors.message(err)) end
end

local function on_stanza(self, s)
  self.received = self.received + 1
  if s.name == "iq" then
    local kind = s.attr.type
    if kind == "result" or kind == "error" then
      local entry = s.attr.id and self.pending[s.attr.id]
      if entry and reply_matches(self, entry, s) then
        self.pending[s.attr.id] = nil
        task.wake(entry.task, s)
      else
        log.debug("ignored an iq %s with unknown id %s from %s", kind, tostring(s.attr.id), tostring(s.attr.from))
      end
      return
    end
    if kind ~= "get" and kind ~= "set" then
      self:send(st.error_reply(s, "bad-request", "iq type must be get, set, result or error"))
      return
    end
    for _, h in ipairs(self.handlers.iq) do
      if matches(h.filter, s) then
        task._spawn("iq handler", nil, run_iq_handler, self, h, s)
        return
      end
    end
    -- RFC 6120 8.2.3: an iq request nobody handles gets service-unavailable.
    self:send(st.error_reply(s, "service-unavailable"))
    return
  end
  local task_name = HANDLER_TASK_NAMES[s.name]
  if not task_name then return end -- only message and presence have handlers here (not "status")
  local list = self.handlers[s.name]
  local direct, more -- run after the loop: a direct handler may add or remove handlers
  for i = 1, #list do
    local h = list[i]
    if matches(h.filter, s) then
      if not h.direct then
        task._spawn(task_name, nil, h.fn, s, self)
      elseif not direct then
        direct = h
      else
        more = more or {}
        more[#more + 1] = h
      end
    end
  end
  if direct then
    run_direct(self, direct, s)
    for i = 1, more and #more or 0 do run_direct(self, more[i], s) end
  end
end

-- Connecting --------------------------------------------------------------------------------

-- The error of a failed connect attempt, or of a session that dropped, from what the C core
-- gathered for this connection (runtime/xmpp_error.c): said in terms of what to check.
local function tls_verification_error(info, self)
  local trust = self.options.cafile and ("the CA file " .. self.options.cafile)
      or self.options.capath and ("the CA directory " .. self.options.capath)
      or "the system's CA store (no cafile given)"
  local reason = info.reason or "certificate verification failed"
  local fix
  if info.verify_kind == "hostname-mismatch" then
    fix = ("the certificate does not name %s: connect with the domain it was issued for, or reissue it")
        :format(self.domain)
  elseif info.verify_kind == "expired" or info.verify_kind == "not-yet-valid" then
    fix = "renew the server's certificate (or check this machine's clock)"
  else
    fix = "set cafile to the CA that issued the server's certificate, or have the server send its full chain"
  end
  return errors.new("tls-verification-failed", ("the server certificate of %s (%s port %d) did not verify against %s: %s%s%s; %s")
    :format(self.domain, self.address or self.host, self.port, trust, reason,
      info.verify_code and (" (" .. info.verify_code .. ")") or "",
      info.cert_subject and (", certificate " .. info.cert_subject .. " issued by " .. (info.cert_issuer or "?")) or "",
      fix), { cafile = self.options.cafile, verify_error = info.verify_error })
end

local function auth_error(info, self)
  local sasl = ("SASL %s: %s"):format(info.sasl_mechanism or "authentication",
    (info.sasl_condition or "refused") .. (info.sasl_text and (", " .. info.sasl_text) or ""))
  return errors.new("not-authorized", ("the server refused the credentials of %s (%s); check the JID and password")
    :format(self.account, sasl),
    { sasl_condition = info.sasl_condition, sasl_mechanism = info.sasl_mechanism })
end

local function connect_error(info, self)
  if self.phase == "up" then
    -- an established session that dropped (or that we dropped: it stopped answering pings)
    local why = self.dead_reason or info.reason
    return errors.new("connection-lost", "connection lost" .. (why and (": " .. why) or ""),
      { stream_error = info.stream_error, errno = info.errno, reason = why })
  end
  local condition = info.condition
  if condition == "tls-verification-failed" then return tls_verification_error(info, self) end
  if condition == "not-authorized" and (info.sasl_mechanism or info.sasl_condition or info.auth_failed) then
    return auth_error(info, self)
  end
  if info.setup_failure then return errors.new(condition, info.reason) end
  if info.stream_error then
    return errors.new(condition, info.reason or ("stream error from " .. self.domain))
  end
  if condition == "tls-failed" then
    return errors.new(condition, ("TLS with %s port %d could not start: %s"):format(self.address or self.host,
      self.port, info.reason))
  end
  if info.errno then
    return errors.new(condition, ("%s port %d: %s"):format(self.address or self.host, self.port, info.reason))
  end
  return errors.new("remote-connection-failed", ("%s port %d closed the stream before the session was up "
    .. "(libstrophe's account is logged at --log-level debug)"):format(self.address or self.host, self.port))
end

-- At a drop: requests that may be sent again wait for the reconnect; the others fail now, so
-- nothing waits for a reply that cannot come.
local function fail_pending(self, err, keep_resendable)
  for id, entry in pairs(self.pending) do
    if not (keep_resendable and entry.resend) then
      self.pending[id] = nil
      task.wake(entry.task, nil, err)
    end
  end
end

local function resend_pending(self)
  for _, entry in pairs(self.pending) do
    if entry.resend then self.c:send(entry.resend) end
  end
end

-- Liveness (XEP-0199) -----------------------------------------------------------------------
-- TCP alone does not notice a peer that stopped answering (a frozen or partitioned server keeps
-- the connection open for hours). So when nothing has arrived for ping_interval seconds, ping
-- the server; no answer within ping_timeout means the stream is dead: drop it, and the usual
-- reconnect takes over. Any reply counts, an error reply included: the server is there.

local function stop_liveness(self)
  if self.liveness then
    self.liveness:cancel()
    self.liveness = nil
  end
end

local start_liveness

local function check_liveness(self, session)
  if self.closed or self.session ~= session or self.state ~= "connected" then return end
  local interval, timeout = self.options.ping_interval, self.options.ping_timeout or DEFAULT_PING_TIMEOUT
  local idle = self.c:idle()
  if idle < interval then
    start_liveness(self, interval - idle)
    return
  end
  local ping = st.iq({ type = "get", to = self.domain }):tag("ping", { xmlns = "urn:xmpp:ping" }):up()
  local reply, err = self:iq(ping, timeout)
  if self.closed or self.session ~= session or self.state ~= "connected" then return end
  if reply or err.condition ~= "remote-server-timeout" then
    start_liveness(self, interval)
    return
  end
  self.dead_reason = ("no reply to a ping within %gs after %gs without traffic"):format(timeout, idle)
  log.warn("%s: %s; dropping the connection", tostring(self.jid), self.dead_reason)
  self.c:abort()
end

start_liveness = function(self, delay)
  stop_liveness(self)
  local session = self.session
  -- background: the connection's socket, not this timer, keeps the program alive
  self.liveness = timer.after(delay, function() check_liveness(self, session) end,
    { name = "xmpp liveness", background = true })
end

local schedule_reconnect

local function on_event(self, event, info)
  if event == "connected" then
    self.state = "connected"
    self.jid = info.jid
    self.connected_once = true
    self.attempt = 0
    self.session = (self.session or 0) + 1
    self.dead_reason = nil
    if self.options.ping_interval then start_liveness(self, self.options.ping_interval) end
    resend_pending(self)
    flush_outbox(self)
    local first = self.phase == "connecting"
    self.phase = "up"
    if self.waiter then task.wake(self.waiter, true) end
    if first then
      log.info("connected to %s:%d as %s", self.host, self.port, tostring(self.jid))
    else
      log.info("reconnected to %s:%d as %s after %.1f s", self.host, self.port, tostring(self.jid),
        hrtime() / 1e9 - (self.lost_at or hrtime() / 1e9))
      self.lost_at = nil
      emit_status(self, "reconnected", info)
    end
    return
  end
  -- disconnected
  local was_connected = self.state == "connected"
  self.state = "disconnected"
  stop_liveness(self)
  local err = connect_error(info, self)
  self.last_error = err
  if was_connected then
    -- the cause is said once: a lost connection's error already reads "connection lost: ..."
    fail_pending(self, errors.new("connection-lost", err.condition == "connection-lost" and err.text
      or ("connection lost: " .. tostring(err))),
      self.options.reconnect ~= false and not self.closed)
  end
  if self.phase ~= "up" then
    -- a failed (re)connect attempt: the attempt reports it; no new "disconnected" event
    if self.waiter then task.wake(self.waiter, nil, err) end
    return
  end
  if self.closed then return end
  self.lost_at = hrtime() / 1e9
  log.warn("connection to %s:%d as %s lost (%s)%s", self.host, self.port, tostring(self.jid), err.reason or err.text,
    self.options.reconnect ~= false and "; reconnecting" or "")
  emit_status(self, "disconnected", err)
  if self.options.reconnect ~= false then schedule_reconnect(self) end
end

local function resolve(host)
  if dns.is_ip(host) then return { host } end
  local me = task._require_task("connect")
  local ok, err = dns.resolve(host, function(addresses, e) task.wake(me, addresses, e) end)
  if not ok then return nil, err end
  return task.suspend()
end

-- One attempt over every address of the current server's host; returns true or nil, err.
local function attempt_server(self, timeout)
  local addresses, err = resolve(self.host)
  if not addresses then return nil, err end
  if #addresses == 0 then return nil, errors.new("remote-server-not-found", "no address for " .. self.host) end
  local me = task._require_task("connect")
  for _, address in ipairs(addresses) do
    self.address = address
    local ok, e = self.c:connect(address, self.port)
    if ok then
      self.waiter = me
      local t = timer.after(timeout, function()
        task.wake(me, nil, errors.new("remote-server-timeout",
          ("no XMPP session with %s port %d within %gs"):format(address, self.port, timeout)))
      end)
      local up, e2 = task.suspend(function() t:cancel(); self.waiter = nil end)
      t:cancel()
      self.waiter = nil
      if up then return true end
      e = e2
      -- abort, not disconnect: a server that did not answer in time will not answer the
      -- closing handshake either, and the next attempt must not wait for it
      if self.c:state() ~= "disconnected" then self.c:abort() end
      -- Authentication and certificate failures are about the account, not the address.
      if e.condition == "not-authorized" or e.condition == "tls-verification-failed" then return nil, e end
    end
    err = e
  end
  return nil, err
end

-- One attempt over every server, starting with the one that served last (a cluster's nodes, say:
-- when that one is gone, the next takes over). Authentication and certificate failures end it:
-- they are about the account, and every node would say the same. With several servers the error
-- names what each one said.
local function attempt(self, timeout)
  local n, said = #self.servers, {}
  local first_err
  for k = 0, n - 1 do
    local i = (self.server_index - 1 + k) % n + 1
    self.host, self.port = self.servers[i].host, self.servers[i].port
    local ok, err = attempt_server(self, timeout)
    if ok then
      self.server_index = i
      return true
    end
    if err.condition == "not-authorized" or err.condition == "tls-verification-failed" or n == 1 then return nil, err end
    first_err = first_err or err
    said[#said + 1] = ("%s:%d: %s"):format(self.host, self.port, err.text or tostring(err))
  end
  self.host, self.port = self.servers[self.server_index].host, self.servers[self.server_index].port
  return nil, errors.new(first_err.condition, ("no server answered (%s)"):format(table.concat(said, "; ")),
    { reason = first_err.reason })
end

--- xmpp.parse_servers(list) -> {{host =, port =}, ...} | nil, text: the nodes of a cluster, each
-- "host:port" ("[v6]:port" for an IPv6 address) or {host =, port =}.
---@param list (string|{host: string, port: integer})[]
---@return {host: string, port: integer}[]? servers
---@return string? problem what is wrong with list
function M.parse_servers(list)
  if type(list) ~= "table" or #list == 0 then
    return nil, 'servers must be a non-empty list of "host:port" strings or {host =, port =} tables'
  end
  local out = {}
  for i, entry in ipairs(list) do
    local host, port
    if type(entry) == "string" then
      host, port = entry:match("^%[([%x:.]+)%]:(%d+)$")
      if not host then host, port = entry:match("^([^:%s]+):(%d+)$") end
      port = port and math.tointeger(tonumber(port))
    elseif type(entry) == "table" then
      host, port = entry.host, entry.port
    end
    if type(host) ~= "string" or host == "" or math.type(port) ~= "integer" or port < 1 or port > 65535 then
      return nil, ('servers[%d] (%s) is not host:port, e.g. "xmpp1.grid.example:5222"'):format(i,
        type(entry) == "string" and ("%q"):format(entry) or type(entry))
    end
    out[i] = { host = host, port = port }
  end
  return out
end

-- The servers to try: options.servers or host/port.
local function server_list(options, domain)
  if options.servers == nil then
    return { { host = options.host or domain, port = options.port or 5222 } }
  end
  if options.host or options.port then return nil, "give servers or host/port, not both" end
  return M.parse_servers(options.servers)
end

schedule_reconnect = function(self)
  if self.reconnecting or self.closed then return end
  self.reconnecting = true
  self.reconnect_task = task.spawn({ name = "xmpp reconnect" }, function()
    while not self.closed and self.state ~= "connected" do
      self.attempt = self.attempt + 1
      -- exponential backoff with jitter, so a restarted server is not hit by every client at once
      local base = math.min(self.options.max_backoff or 30, 0.25 * 2 ^ math.min(self.attempt - 1, 10))
      local delay = base * (0.75 + 0.5 * math.random())
      task.sleep(delay)
      if self.closed then break end
      self.phase = "reconnecting"
      local ok, err = attempt(self, self.options.connect_timeout or 15)
      if not ok and not self.closed then
        log.debug("reconnect attempt %d to %s:%d failed: %s", self.attempt, self.host, self.port, tostring(err))
      end
    end
    self.reconnecting = false
  end)
end

--- connect(options) -> connection, or nil, err. Yields until the session is bound.
-- options: jid (required unless a client certificate carries one), password, or client_cert +
-- client_key (SASL EXTERNAL); host (default: the JID's domain), port (5222), or servers (a list
-- of "host:port" or {host =, port =}: the nodes of a cluster, tried in turn from the one that
-- served last, at the first connect and at every reconnect); resource;
-- cafile/capath (default: the system store); insecure = true skips certificate verification
-- (logged as a warning); timeout (default request timeout, 30 s); connect_timeout (15 s);
-- reconnect (default true), max_backoff (30 s); disable_sm; direct_tls; ping_interval (60 s
-- without inbound traffic before a ping; false disables), ping_timeout (20 s).
---@param options sacm.xmpp.ConnectOptions
---@return sacm.xmpp.Connection? connection
---@return sacm.Error? err
function M.connect(options)
  if type(options) ~= "table" then error("connect expects an options table", 2) end
  task._require_task("connect")
  options = copy(options)
  if options.ping_interval == nil then options.ping_interval = DEFAULT_PING_INTERVAL end
  for _, name in ipairs({ "ping_interval", "ping_timeout" }) do
    local v = options[name]
    if v ~= nil and not (name == "ping_interval" and v == false) and not (type(v) == "number" and v > 0) then
      error(("%s must be a positive number of seconds%s"):format(name,
        name == "ping_interval" and " or false" or ""), 2)
    end
  end
  local self = setmetatable({
    options = options,
    handlers = { message = {}, presence = {}, iq = {}, status = {} },
    pending = {},
    expiry = { head = 1, tail = 0 },
    outbox = {},
    received = 0,
    attempt = 0,
    state = "disconnected",
    phase = "connecting",
  }, Connection)

  -- a CA file or client certificate that cannot be used is a configuration error: say so
  -- before connecting (libstrophe would only log it, and drop the stream as if the server had)
  local files_ok, files_err = core.check_tls_files(options)
  if not files_ok then return nil, files_err end

  local c = core.new({
    jid = options.jid, password = options.password,
    cafile = options.cafile, capath = options.capath,
    client_cert = options.client_cert, client_key = options.client_key,
    trust_tls = options.insecure and true or false,
    disable_sm = options.disable_sm, direct_tls = options.direct_tls,
  }, function(event, info) on_event(self, event, info) end, function(s) on_stanza(self, s) end)
  self.c = c
  -- XEP-0199: answer pings, so servers and peers can check we are alive
  self:on("iq", { type = "get", ns = "urn:xmpp:ping", child = "ping" }, function() return true end)

  local jid = options.jid
  if not jid and options.client_cert then
    jid = c:cert_jids()[1]
    if not jid then
      c:close()
      return nil, errors.new("jid-malformed", "no jid given and the client certificate carries no xmppAddr")
    end
  end
  local node, domain, resource = jidlib.split(jid)
  if not domain then
    c:close()
    return nil, errors.new("jid-malformed", "not a valid JID: " .. tostring(jid))
  end
  resource = options.resource or resource
  self.account = jidlib.join(node, domain)
  c:set_jid(jidlib.join(node, domain, resource))
  if not options.password and not options.client_cert then
    c:close()
    error("connect needs a password or a client certificate", 2)
  end
  if options.insecure then
    log.warn("TLS certificate verification is OFF for %s: anyone on the path can impersonate the server", domain)
  end
  self.domain = domain
  local servers, serr = server_list(options, domain)
  if not servers then
    c:close()
    error("connect: " .. serr, 2)
  end
  self.servers, self.server_index = servers, 1
  self.host, self.port = servers[1].host, servers[1].port

  log.info("connecting to %s:%d as %s", self.host, self.port, jidlib.join(node, domain, resource))
  local ok, err = attempt(self, options.connect_timeout or 15)
  if not ok then
    self.closed = true
    c:close()
    return nil, err
  end
  return self
end

--- conn:close(): ends the stream (pending requests fail with connection-lost) and frees it.
---(no parameters, no results)
function Connection:close()
  if self.closed then return end
  self.closed = true
  if self.reconnect_task and self.reconnect_task ~= task.current() then self.reconnect_task:cancel("connection closed") end
  stop_liveness(self)
  fail_pending(self, errors.new("connection-lost", "connection closed"))
  if self.expiry_timer then
    self.expiry_timer:close()
    self.expiry_timer = nil
  end
  self.state = "disconnected"
  self.c:close()
end
Connection.__close = errors.closer(Connection.close)

--- conn:ping([to [, timeout]]) -> round-trip seconds, or nil, err (XEP-0199).
---@param to? string default: the server
---@param timeout? number seconds
---@return number? seconds the round trip
---@return sacm.Error? err
function Connection:ping(to, timeout)
  local start = require("sacm.time").monotonic()
  local reply, err = self:iq(st.iq({ type = "get", to = to or self.domain }):tag("ping", { xmlns = "urn:xmpp:ping" }):up(),
    timeout)
  if not reply then return nil, err end
  return require("sacm.time").monotonic() - start
end

function Connection:__tostring()
  return ("xmpp connection %s (%s)"):format(tostring(self.jid or self.options.jid), self.state)
end

return M
