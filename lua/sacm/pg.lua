--- sacm.pg: PostgreSQL from tasks, on the loop (libpq, non-blocking and pipelined).
--
--   local db = assert(pg.connect({ host = "127.0.0.1", port = 5432, dbname = "sacm", user = "sacm" }))
--   local rows = assert(db:query("SELECT id, data FROM posture WHERE endpoint = $1", { "host1" }))
--   local n = assert(db:run("INSERT INTO posture (endpoint, data) VALUES ($1, $2)", { "host1", pg.bytea(bytes) }))
--   db:transaction(function() ... end)
--   db:listen("grid", function(payload) ... end)
--
-- Every call that talks to the server suspends the running task until the answer is there;
-- the loop goes on meanwhile. Requests from several tasks on one connection are pipelined: each
-- is sent at once and the answers come back in order. Expected failures return nil, err with
-- err.sqlstate (the five-character SQLSTATE) and err.condition its name (unique_violation,
-- syntax_error, ...; docs/api/pg.md); bad arguments and use after close raise.
local core = require "sacm._pg"
local task = require "sacm.task"
local serror = require "sacm.error"
local new_timer = require("sacm._timer").new
local log = require("sacm.log").new("pg")

local M = {
  libpq_version = core.libpq_version, -- 150018 for 15.18
  DEFAULT_CONNECT_TIMEOUT = 10, -- seconds
}

local BYTEA = core.bytea_metatable

--- bytea(s) -> a value that is sent as bytea (binary, any bytes) instead of text
---@param s string any bytes
---@return table bytea
function M.bytea(s)
  if type(s) ~= "string" then error(("pg.bytea: expects a string, got %s"):format(type(s)), 2) end
  return setmetatable({ s }, BYTEA)
end

---@class sacm.pg.Connection
---@field escape_identifier fun(self: sacm.pg.Connection, s: string): string s quoted as an SQL identifier
local Connection = core.Connection
local metatable = core.metatable
local states = setmetatable({}, { __mode = "k" }) -- connection -> its Lua-side state

---------------------------------------------------------------------------- errors
-- The SQLSTATEs callers branch on most, by PostgreSQL's own condition names (Appendix A of its
-- manual; the names PL/pgSQL's EXCEPTION WHEN takes). Others are named by their class.
local CONDITIONS = {
  ["23505"] = "unique_violation", ["23503"] = "foreign_key_violation", ["23502"] = "not_null_violation",
  ["23514"] = "check_violation", ["23P01"] = "exclusion_violation",
  ["42601"] = "syntax_error", ["42P01"] = "undefined_table", ["42703"] = "undefined_column",
  ["42883"] = "undefined_function", ["42P07"] = "duplicate_table", ["42501"] = "insufficient_privilege",
  ["42804"] = "datatype_mismatch", ["42P18"] = "indeterminate_datatype",
  ["22P02"] = "invalid_text_representation", ["22003"] = "numeric_value_out_of_range",
  ["22012"] = "division_by_zero", ["22001"] = "string_data_right_truncation",
  ["22021"] = "character_not_in_repertoire", ["22023"] = "invalid_parameter_value",
  ["25P02"] = "in_failed_sql_transaction", ["25001"] = "active_sql_transaction",
  ["25P01"] = "no_active_sql_transaction", ["40001"] = "serialization_failure",
  ["40P01"] = "deadlock_detected", ["55P03"] = "lock_not_available", ["57014"] = "query_canceled",
  ["57P01"] = "admin_shutdown", ["57P02"] = "crash_shutdown", ["57P03"] = "cannot_connect_now",
  ["53300"] = "too_many_connections", ["28P01"] = "invalid_password", ["3D000"] = "invalid_catalog_name",
  ["28000"] = "invalid_authorization_specification", ["08P01"] = "protocol_violation",
  ["0A000"] = "feature_not_supported", ["XX000"] = "internal_error",
}
local CLASSES = {
  ["08"] = "connection_exception", ["0A"] = "feature_not_supported", ["21"] = "cardinality_violation",
  ["22"] = "data_exception", ["23"] = "integrity_constraint_violation", ["25"] = "invalid_transaction_state",
  ["28"] = "invalid_authorization_specification", ["3D"] = "invalid_catalog_name",
  ["3F"] = "invalid_schema_name", ["40"] = "transaction_rollback",
  ["42"] = "syntax_error_or_access_rule_violation", ["53"] = "insufficient_resources",
  ["54"] = "program_limit_exceeded", ["55"] = "object_not_in_prerequisite_state",
  ["57"] = "operator_intervention", ["58"] = "system_error", ["P0"] = "plpgsql_error", ["XX"] = "internal_error",
}
M.CONDITIONS = CONDITIONS

-- A server error comes from C as condition "sql_error": give it its name.
local function named(err)
  if serror.is(err) and err.condition == "sql_error" and err.sqlstate then
    err.condition = CONDITIONS[err.sqlstate] or CLASSES[err.sqlstate:sub(1, 2)] or "sql_error"
    err.position = err.position and math.tointeger(tonumber(err.position)) or err.position
  end
  return err
end

local function closed_error(what)
  return serror.new("closed", what .. ": the connection was closed", { sqlstate = "08003" })
end

---------------------------------------------------------------------------- connecting
local CONNINFO_KEYS = {
  host = true, hostaddr = true, port = true, dbname = true, user = true, password = true,
  sslmode = true, sslrootcert = true, sslcert = true, sslkey = true, application_name = true,
  options = true, target_session_attrs = true, passfile = true, client_encoding = true,
}

-- A conninfo value in single quotes, with \ and ' escaped as libpq's parser expects.
local function quote(v)
  return "'" .. v:gsub("[\\']", "\\%0") .. "'"
end

-- (target, opts) -> conninfo, timeout in seconds. Raises on bad arguments: nothing is acquired
-- before they are known to be good.
local function check_target(target, opts)
  local conninfo
  if type(target) == "string" then
    if target:find("\0", 1, true) then error("pg.connect: the connection string contains a NUL byte", 3) end
    conninfo = target
    if opts ~= nil and type(opts) ~= "table" then
      error(("pg.connect: options must be a table, got %s"):format(type(opts)), 3)
    end
    opts = opts or {}
    for k in pairs(opts) do
      if k ~= "connect_timeout" then
        error(("pg.connect: unknown option %q (with a connection string only connect_timeout)"):format(tostring(k)), 3)
      end
    end
  elseif type(target) == "table" then
    if opts ~= nil then error("pg.connect: pass the options in the one table", 3) end
    opts = target
    local parts = {}
    for k, v in pairs(target) do
      if k ~= "connect_timeout" then
        if not CONNINFO_KEYS[k] then error(("pg.connect: unknown option %q"):format(tostring(k)), 3) end
        if type(v) == "number" and math.type(v) == "integer" then v = tostring(v) end
        if type(v) ~= "string" or v:find("\0", 1, true) then
          error(("pg.connect: option %s must be a string (or an integer port)"):format(k), 3)
        end
        parts[#parts + 1] = k .. "=" .. quote(v)
      end
    end
    table.sort(parts)
    conninfo = table.concat(parts, " ")
  else
    error(("pg.connect: expects a connection string or a table of options, got %s"):format(type(target)), 3)
  end
  local timeout = opts.connect_timeout or M.DEFAULT_CONNECT_TIMEOUT
  if type(timeout) ~= "number" or timeout ~= timeout or timeout <= 0 then
    error("pg.connect: connect_timeout must be a positive number of seconds", 3)
  end
  return conninfo, timeout
end

---------------------------------------------------------------------------- events from C
-- st: { pending = FIFO of requests (one per sync sent), head, tail, owner = task with the
--       connection to itself (a transaction, a script), depth, turn = tasks waiting for it,
--       listeners = channel -> list of functions, lost = err, connecting = task }
-- A request: { task = who waits (nil once abandoned), results = {...}, err = first error }

local function finish(e, err)
  if err and not e.err then e.err = err end
  local t = e.task
  e.task = nil
  if t then task.wake(t, e) end
end

local function wake_turns(st)
  local waiting = st.turn
  st.turn = {}
  for _, t in ipairs(waiting) do task.wake(t, true) end
end

local function fail_all(st, err)
  for i = st.head, st.tail do
    local e = st.pending[i]
    st.pending[i] = nil
    if e then finish(e, err) end
  end
  st.head, st.tail = 1, 0
  if st.drain then task.wake(st.drain, true) end
  wake_turns(st)
end

local function on_notify(st, channel, payload, pid)
  local list = st.listeners[channel]
  if not list then return end
  for _, fn in ipairs({ table.unpack(list) }) do
    task.spawn(fn, payload, channel, pid)
  end
end

local function on_event(st, event, a, b, c)
  if event == "result" then
    local e = st.pending[st.head]
    if not e then return end
    local results = e.results
    if a then
      results[#results + 1] = a
    else
      results[#results + 1] = false
      if not e.err then
        e.err = named(b)
        e.err.index = #results
      end
    end
  elseif event == "sync" then
    local i = st.head
    local e = st.pending[i]
    if not e then return end
    st.pending[i] = nil
    st.head = i + 1
    finish(e)
    if st.drain and st.head > st.tail then task.wake(st.drain, true) end
  elseif event == "notify" then
    on_notify(st, a, b, c)
  elseif event == "connected" then
    if st.connecting then task.wake(st.connecting, true) end
  elseif event == "failed" then
    if st.connecting then task.wake(st.connecting, nil, a) end
  elseif event == "lost" then
    st.lost = a
    local channels = {}
    for ch in pairs(st.listeners) do channels[#channels + 1] = ch end
    if #channels > 0 then
      log.warn("connection lost, no more notifications on %s: %s", table.concat(channels, ", "), tostring(a))
    end
    fail_all(st, a)
  end
end

local function state_of(self, what)
  local st = states[self]
  if not st or st.closed then
    if getmetatable(self) ~= metatable then
      error(("%s: expects a pg connection, got %s"):format(what, type(self)), 3)
    end
    error(("%s: attempt to use a closed postgresql connection"):format(what), 3)
  end
  return st
end

---------------------------------------------------------------------------- close
---(no parameters, no results)
local function close(self)
  local st = states[self]
  if st and not st.closed then
    st.closed = true
    fail_all(st, closed_error("postgresql"))
    if st.connecting then task.wake(st.connecting, nil, closed_error("pg.connect")) end
  end
  core.metatable.__gc(self) -- the C close: idempotent
end
Connection.close = close
-- __close also wakes whoever waits on the connection; __gc stays the C close (when the collector
-- runs it, nothing can be waiting: a pending request keeps the connection reachable).
metatable.__close = close

--- db:in_flight() -> requests sent whose answers have not all come
---@return integer
function Connection:in_flight() return (self:_info()) end
--- db:transaction_status() -> "idle", "active" (a request runs), "intrans", "inerror" or "unknown"
---@return "idle"|"active"|"intrans"|"inerror"|"unknown"
function Connection:transaction_status() return (select(2, self:_info())) end
---@return integer pid of the server process
function Connection:backend_pid() return (select(3, self:_info())) end
--- db:server_version() -> 150018 for 15.18
---@return integer version 150018 for 15.18
function Connection:server_version() return select(4, self:_info()) end

---@return boolean
function Connection:is_open()
  local st = states[self]
  return st ~= nil and not st.closed and not st.lost
end

--- db:error() -> why the connection was lost, or nil
---@return sacm.Error? why the connection was lost
function Connection:error()
  local st = states[self]
  return st and st.lost
end

--- connect(conninfo [, {connect_timeout = s}]) / connect({host=, port=, ...}) -> db | nil, err
---@param target string|table a conninfo string or URI, or a table of libpq keys (and connect_timeout)
---@param opts? {connect_timeout?: number}
---@return sacm.pg.Connection? db
---@return sacm.Error? err connection-failed | timeout
function M.connect(target, opts)
  local conninfo, timeout = check_target(target, opts)
  local me = task._require_task("pg.connect", 3)
  local st = { pending = {}, head = 1, tail = 0, turn = {}, listeners = {}, depth = 0 }
  local c, err = core.connect(conninfo, function(...) return on_event(st, ...) end)
  if not c then return nil, err end
  states[c] = st
  st.connecting = me
  local timer = new_timer()
  timer:start(math.floor(timeout * 1000 + 0.5), 0, function()
    task.wake(me, nil, serror.new("timeout", ("pg.connect: no connection within %gs (is the server up, "
      .. "and is the address right?)"):format(timeout), { sqlstate = "08001" }))
  end)
  local ok, cerr = task.suspend(function()
    timer:close()
    close(c)
  end)
  timer:close()
  st.connecting = nil
  if not ok then
    close(c)
    return nil, cerr
  end
  return c
end

---------------------------------------------------------------------------- requests
-- The number of parameters to send: params.n, else the highest integer key (a nil in the list is
-- a NULL). Raises at the caller of the db method (param_count, request, the method, the caller).
local function param_count(params, what)
  if params == nil then return 0 end
  if type(params) ~= "table" then error(("%s: params must be a table, got %s"):format(what, type(params)), 4) end
  if params.n then return params.n end
  local n = 0
  for k in pairs(params) do
    if math.type(k) == "integer" and k > n then n = k end
  end
  return n
end

-- Waits until no other task has the connection to itself.
local function take_turn(st, what)
  local me = task._require_task(what, 4)
  while st.owner and st.owner ~= me and not st.closed do
    task.wait_in(st.turn, me, nil, what)
  end
  if st.closed then return nil, closed_error(what) end
  return me
end

local function abandon(e) e.task = nil end

-- Sends statements ({sql, params} each) as one request ending in a sync and waits for it.
-- Returns the request ({results, err}) or nil, err when nothing could be sent.
local function request(self, st, what, stmts)
  local counts = {}
  for i = 1, #stmts do counts[i] = param_count(stmts[i][2], what) end
  local me, terr = take_turn(st, what)
  if not me then return nil, terr end
  if st.lost then return nil, st.lost end
  local sent = 0
  local ok, err = pcall(function()
    for i = 1, #stmts do
      local s = stmts[i]
      local done, serr = self:_send(s[1], s[2], counts[i])
      if not done then error(serr, 0) end
      sent = i
    end
  end)
  local e = { task = me, results = {} }
  if sent > 0 then
    -- whatever was sent must end in a sync of its own, or its results would be taken for the
    -- next request's
    local synced, yerr = self:_sync()
    if not synced then return nil, yerr end
    st.tail = st.tail + 1
    st.pending[st.tail] = e
  end
  if not ok then
    e.task = nil
    if serror.is(err) then return nil, err end
    error(err, 0)
  end
  task.suspend(abandon, e)
  return e
end

local function check_sql(sql, what)
  if type(sql) ~= "string" then error(("%s: sql must be a string, got %s"):format(what, type(sql)), 3) end
end

--- db:query(sql [, params]) -> rows | nil, err
---@param sql string
---@param params? any[] $1, $2, ...
---@return table[]? rows with rows.columns, rows.changes, rows.command
---@return sacm.Error? err
function Connection:query(sql, params)
  local st = state_of(self, "db:query")
  check_sql(sql, "db:query")
  local e, err = request(self, st, "db:query", { { sql, params } })
  if not e then return nil, err end
  if e.err then return nil, e.err end
  return e.results[1]
end

--- db:first(sql [, params]) -> row | nil | nil, err
---@param sql string
---@param params? any[]
---@return table? row nil when there is none
---@return sacm.Error? err
function Connection:first(sql, params)
  local st = state_of(self, "db:first")
  check_sql(sql, "db:first")
  local e, err = request(self, st, "db:first", { { sql, params } })
  if not e then return nil, err end
  if e.err then return nil, e.err end
  return e.results[1][1]
end

--- db:run(sql [, params]) -> changes, command | nil, err
---@param sql string
---@param params? any[]
---@return integer? changes
---@return string|sacm.Error|nil command the command tag, or err
function Connection:run(sql, params)
  local st = state_of(self, "db:run")
  check_sql(sql, "db:run")
  local e, err = request(self, st, "db:run", { { sql, params } })
  if not e then return nil, err end
  if e.err then return nil, e.err end
  return e.results[1].changes, e.results[1].command
end

--- db:pipeline(statements) -> list of results | nil, err
-- statements: { {sql, params}, ... } sent at once, ended by one sync: they run in one implicit
-- transaction, all or nothing. A failure gives nil, err with err.index (the statements after it
-- were not run).
---@param stmts {[1]: string, [2]: any[]?}[] {sql, params} pairs
---@return table[]? results one per statement
---@return sacm.Error? err err.index: the failing statement
function Connection:pipeline(stmts)
  local st = state_of(self, "db:pipeline")
  if type(stmts) ~= "table" then error("db:pipeline: expects a list of {sql, params}", 2) end
  for i, s in ipairs(stmts) do
    if type(s) ~= "table" or type(s[1]) ~= "string" then
      error(("db:pipeline: statement %d must be {sql [, params]}"):format(i), 2)
    end
  end
  if #stmts == 0 then return {} end
  local e, err = request(self, st, "db:pipeline", stmts)
  if not e then return nil, err end
  if e.err then return nil, e.err end
  return e.results
end

-- Has the connection to itself (st.owner) until release; waits until nothing is in flight.
local function drain(self, st)
  while (self:_info()) > 0 and not st.lost and not st.closed do
    st.drain = task.current()
    task.suspend(function() st.drain = nil end)
    st.drain = nil
  end
end

local function release(st)
  st.owner = nil
  wake_turns(st)
end

--- db:exec(script) -> true | nil, err: several statements separated by ';', no parameters.
---@param script string statements separated by ';', no parameters
---@return true? ok
---@return sacm.Error? err
function Connection:exec(script)
  local st = state_of(self, "db:exec")
  check_sql(script, "db:exec")
  local me, terr = take_turn(st, "db:exec")
  if not me then return nil, terr end
  local mine = st.owner == nil
  if mine then st.owner = me end
  local ok, r, rerr = pcall(function()
    drain(self, st)
    if st.lost then return nil, st.lost end
    if st.closed then return nil, closed_error("db:exec") end
    local sent, serr = self:_script(script)
    if not sent then return nil, serr end
    local e = { task = me, results = {} }
    st.tail = st.tail + 1
    st.pending[st.tail] = e
    task.suspend(abandon, e)
    if e.err then return nil, e.err end
    return true
  end)
  if mine then release(st) end
  if not ok then error(r, 0) end
  return r, rerr
end

---------------------------------------------------------------------------- transactions
-- Sends sql without waiting for it (ROLLBACK after a failure or a cancellation: the task may not
-- wait any more; results come back in order, so nothing sent later can overtake it).
local function send_and_forget(self, st, sql)
  if st.lost or st.closed then return end
  if self:_send(sql, nil, 0) and self:_sync() then
    st.tail = st.tail + 1
    st.pending[st.tail] = { results = {} }
  end
end

local function leave(st)
  st.depth = st.depth - 1
  if st.depth == 0 then release(st) end
end

local function undo(self, st, savepoint)
  if savepoint then
    send_and_forget(self, st, "ROLLBACK TO SAVEPOINT " .. savepoint)
    send_and_forget(self, st, "RELEASE SAVEPOINT " .. savepoint)
  else
    send_and_forget(self, st, "ROLLBACK")
  end
end

local function settle(self, st, savepoint, ok, ...)
  if not ok then
    undo(self, st, savepoint)
    leave(st)
    error((...), 0)
  end
  local first, second = ...
  if not first and second ~= nil then
    undo(self, st, savepoint)
    leave(st)
    return ...
  end
  local changes, command = self:run(savepoint and ("RELEASE SAVEPOINT " .. savepoint) or "COMMIT")
  if not changes then
    undo(self, st, savepoint)
    leave(st)
    return nil, command
  end
  leave(st)
  if command == "ROLLBACK" then
    -- COMMIT of a transaction in which a statement failed rolls back without an error
    return nil, serror.new("in_failed_sql_transaction", "db:transaction: a statement inside the "
      .. "transaction failed and its error was ignored, so COMMIT rolled everything back", { sqlstate = "25P02" })
  end
  return ...
end

--- db:transaction(fn, ...) -> fn's results | nil, err
-- BEGIN, fn(db, ...), COMMIT; a SAVEPOINT when nested. While it runs, other tasks' statements
-- on this connection wait (fn may wait for anything: nothing can join its transaction).
---@param fn fun(db: sacm.pg.Connection, ...: any): any its results are the call's; nil, err rolls back
---@param ... any passed to fn
---@return any ... fn's results, or nil, err
function Connection:transaction(fn, ...)
  local st = state_of(self, "db:transaction")
  if type(fn) ~= "function" then
    error(("db:transaction: fn must be a function, got %s"):format(type(fn)), 2)
  end
  local me, terr = take_turn(st, "db:transaction")
  if not me then return nil, terr end
  local nested = st.owner == me and st.depth > 0
  st.owner = me
  st.depth = st.depth + 1
  local savepoint = nested and ("sacm_tx_" .. st.depth) or nil
  local began, err = self:run(savepoint and ("SAVEPOINT " .. savepoint) or "BEGIN")
  if not began then
    leave(st)
    return nil, err
  end
  return settle(self, st, savepoint, pcall(fn, self, ...))
end

---------------------------------------------------------------------------- LISTEN / NOTIFY
--- db:listen(channel, fn) -> true | nil, err: fn(payload, channel, pid) runs in a task of its
-- own for every notification on channel. A connection with listeners stays open until closed.
---@param channel string
---@param fn fun(payload: string, channel: string, pid: integer)
---@return true? ok
---@return sacm.Error? err
function Connection:listen(channel, fn)
  local st = state_of(self, "db:listen")
  if type(channel) ~= "string" or channel == "" then error("db:listen: channel must be a non-empty string", 2) end
  if type(fn) ~= "function" then error("db:listen: fn must be a function", 2) end
  local list = st.listeners[channel]
  if not list then
    list = {}
    st.listeners[channel] = list
    local ok, err = self:run("LISTEN " .. self:escape_identifier(channel))
    if not ok then
      if st.listeners[channel] == list and #list == 0 then st.listeners[channel] = nil end
      return nil, err
    end
    self:_keep(true)
  end
  list[#list + 1] = fn
  return true
end

--- db:unlisten(channel [, fn]) -> true | nil, err: without fn, every listener of channel.
---@param channel string
---@param fn? function one listener (all of channel's without it)
---@return true? ok
---@return sacm.Error? err
function Connection:unlisten(channel, fn)
  local st = state_of(self, "db:unlisten")
  local list = st.listeners[channel]
  if not list then return true end
  for i = #list, 1, -1 do
    if fn == nil or list[i] == fn then table.remove(list, i) end
  end
  if #list > 0 then return true end
  st.listeners[channel] = nil
  if next(st.listeners) == nil then self:_keep(false) end
  local ok, err = self:run("UNLISTEN " .. self:escape_identifier(channel))
  if not ok then return nil, err end
  return true
end

--- db:notify(channel, payload) -> true | nil, err
---@param channel string
---@param payload string
---@return true? ok
---@return sacm.Error? err
function Connection:notify(channel, payload)
  local ok, err = self:run("SELECT pg_notify($1, $2)", { channel, payload or "" })
  if not ok then return nil, err end
  return true
end

return M
