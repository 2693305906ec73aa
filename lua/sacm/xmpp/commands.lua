--- sacm.xmpp.commands: XEP-0050 ad-hoc commands, both ways.
--
-- Provider: each command runs as sequential code in its own task. session:ask(form) sends a
-- data form to the requester and returns its validated answer; what the command returns is the
-- result.
--
--   local p = commands.provider(conn)
--   p:add("urn:example:sacm:collect", {
--     name = "Collect posture",
--     allowed = { "orchestrator@grid.example" },
--     run = function(session)
--       local target = session:ask({ title = "Target", fields = {
--         { var = "host", type = "jid-single", required = true } } })
--       local kinds = session:ask({ title = "What", fields = {
--         { var = "kinds", type = "list-multi", options = inventory_kinds(target.host) } } }, { last = true })
--       return { title = "Done", fields = { { var = "queued", value = #kinds.kinds } } }
--     end,
--   })
--
-- Client:
--   local r, err = commands.execute(conn, "collector@grid.example/h1", "urn:example:sacm:collect",
--                                   { host = "web1@grid.example", kinds = { "packages" } })
--   if r then print(r.status, r.values.queued) end
local xml = require "sacm.xml"
local st = require "sacm.xmpp.stanza"
local task = require "sacm.task"
local sync = require "sacm.sync"
local errors = require "sacm.error"
local crypto = require "sacm.crypto"
local jidlib = require "sacm.xmpp.jid"
local forms = require "sacm.xmpp.forms"
local disco = require "sacm.xmpp.disco"
local log = require("sacm.log").new("commands")

local M = {}

M.NS = "http://jabber.org/protocol/commands"

M.DEFAULTS = {
  idle_timeout = 300,       -- seconds a session may wait for the requester's next request
  max_sessions = 10,        -- open sessions per requester (bare JID)
  max_total_sessions = 1000, -- open sessions on this connection
}

local ACTIONS = { execute = true, next = true, prev = true, complete = true, cancel = true }
local NOTE_TYPES = { info = true, warn = true, error = true }

local pack, unpack = table.pack, table.unpack

local function app_condition(name)
  return xml.element(name, { xmlns = M.NS })
end

local function error_iq(request, condition, text, app)
  return st.error_reply(request, condition, text, nil, app and app_condition(app))
end

--- commands.bad_payload(text) -> an error for a command's run to return (nil, err): bad-request
-- with XEP-0050's <bad-payload/>, for values the form's types cannot say are wrong.
---@param text string
---@return sacm.Error err bad-request with <bad-payload/>
function M.bad_payload(text)
  local e = errors.new("bad-request", text)
  e.app = app_condition("bad-payload")
  return e
end

-- Provider ---------------------------------------------------------------------------------------

---@class sacm.xmpp.commands.Spec a command offered with provider:add
---@field name? string default: the node
---@field run fun(session: sacm.xmpp.commands.Session, values: table?): any the result (a form definition), or nil, err
---@field form? sacm.xmpp.forms.Definition|fun(session: sacm.xmpp.commands.Session): sacm.xmpp.forms.Definition
---@field allowed? true|string[]|fun(from: string, node: string): boolean nil: our own account only
---@field prev? boolean offer going back a stage
---@field idle_timeout? number seconds
---@field max_sessions? integer
---@field rate? table a sacm.ratelimit limiter
---@field end_on_refusal? boolean

---@class sacm.xmpp.commands.Provider the ad-hoc commands a connection offers (commands.provider)
---@field conn sacm.xmpp.Connection
local Provider = {}
Provider.__index = Provider
function Provider:__tostring()
  return ("ad-hoc commands of %s (%d commands)"):format(tostring(self.conn and self.conn.jid), #(self.order or {}))
end
M.Provider = Provider

---@class sacm.xmpp.commands.Session a running command, on the provider's side
---@field id string
---@field node string
---@field from string the requester
---@field stage integer
---@field status string
---@field conn sacm.xmpp.Connection
---@field data table the command's own state across stages
local Session = {}
Session.__index = Session
M.Session = Session

local providers = setmetatable({}, { __mode = "k" })

-- raised by session:ask to unwind the command's code when the requester goes back (prev)
local RESTART = setmetatable({}, {
  __name = "sacm.xmpp.commands.restart",
  __tostring = function() return "command restarted to go back a stage (do not catch this)" end,
})

local function is_allowed(self, spec, from)
  local rule = spec.allowed
  if rule == nil then
    -- the default: only our own account (any resource)
    return jidlib.equal(jidlib.bare(from), jidlib.bare(self.conn.jid))
  end
  if rule == true then return true end
  if type(rule) == "function" then
    local ok, result = pcall(rule, from, spec.node)
    if not ok then
      log.error("allowed() of command %s failed: %s", spec.node, errors.message(result))
      return false
    end
    return result and true or false
  end
  local bare, domain = jidlib.bare(from), jidlib.domain(from)
  for _, j in ipairs(rule) do
    if jidlib.equal(j, from) or jidlib.equal(j, bare) or jidlib.equal(j, domain) then return true end
  end
  return false
end

local function list_items(self, request)
  local from = request.attr.from or jidlib.bare(self.conn.jid)
  local items = {}
  for _, node in ipairs(self.order) do
    local spec = self.commands[node]
    if spec and is_allowed(self, spec, from) then
      items[#items + 1] = { jid = self.conn.jid, node = node, name = spec.name }
    end
  end
  return items
end

local function node_info(self, spec, request)
  local from = request.attr.from or jidlib.bare(self.conn.jid)
  if self.commands[spec.node] ~= spec then
    return nil, errors.new("item-not-found", "no such command: " .. spec.node)
  end
  if not is_allowed(self, spec, from) then
    return nil, errors.new("forbidden", "not allowed to execute " .. spec.node)
  end
  return {
    identities = { { category = "automation", type = "command-node", name = spec.name } },
    features = { M.NS, forms.NS },
  }
end

-- Sessions --------------------------------------------------------------------------------------

-- Text XML cannot carry (a Latin-1 value a query found, say) is replaced (U+FFFD), not a lost answer.
local function clean_tree(el)
  for k, v in pairs(el.attr) do el.attr[k] = (xml.clean_text(v)) end
  for i, c in ipairs(el) do
    if type(c) == "string" then el[i] = (xml.clean_text(c)) else clean_tree(c) end
  end
end

-- Answers a request of the session with a full iq (the handler task waiting for it sends it).
local function respond(session, req, iq)
  if session.req == req then session.req = nil end
  if req.answered then return end
  req.answered = true
  local ok, err = pcall(xml.serialize, iq)
  if not ok then
    clean_tree(iq)
    ok, err = pcall(xml.serialize, iq)
  end
  if not ok then
    log.error("command %s: the response cannot be serialized: %s", session.node, errors.message(err))
    iq = st.error_reply(req.stanza, "internal-server-error", "the command's response could not be serialized")
  end
  req.reply:put(iq)
end

local function take_notes(session)
  local notes = session.notes
  session.notes = {}
  return notes
end

local function command_element(session, status, actions, payload)
  local cmd = xml.element("command", { xmlns = M.NS, node = session.node, sessionid = session.id, status = status })
  if actions then cmd:add(actions) end
  for _, n in ipairs(take_notes(session)) do
    cmd:add(xml.element("note", { xmlns = M.NS, type = n.type }):text(n.text))
  end
  if payload then cmd:add(payload) end
  return cmd
end

local function reply_with(session, req, status, actions, payload)
  respond(session, req, st.reply(req.stanza):add(command_element(session, status, actions, payload)))
end

-- Forgets the session: later requests for it get bad-sessionid. Requests that raced in are answered.
local function end_session(session, why)
  if session.ended then return end
  session.ended = why
  local p = session.provider
  if p.by_id[session.id] == session then
    p.by_id[session.id] = nil
    p.total = p.total - 1
    local key = session.requester
    p.per_requester[key] = (p.per_requester[key] or 1) - 1
    if p.per_requester[key] <= 0 then p.per_requester[key] = nil end
  end
  session.inbox:close()
  while #session.inbox > 0 do
    local req = session.inbox:get()
    respond(session, req, error_iq(req.stanza, "bad-request", "the session has ended", "bad-sessionid"))
  end
  log.debug("command %s session %s from %s ended: %s", session.node, session.id, session.from, why)
end

local function check_in_session(self, what)
  if task.current() ~= self.task then
    error(("session:%s must be called from the command's own task"):format(what), 3)
  end
end

--- session:note(text [, type]): a note (type "info", "warn" or "error"; default "info") sent
-- with the next response.
---@param text string
---@param ntype? "info"|"warn"|"error"
---@return sacm.xmpp.commands.Session self
function Session:note(text, ntype)
  ntype = ntype or "info"
  if not NOTE_TYPES[ntype] then error("note type must be info, warn or error", 2) end
  if type(text) ~= "string" then error("note text must be a string", 2) end
  self.notes[#self.notes + 1] = { type = ntype, text = text }
  return self
end

-- The definition with the given values filled in as defaults (for going back a stage).
local function prefilled(def, values)
  local form = xml.is_element(def) and forms.parse(def) or def
  local copy = {}
  for k, v in pairs(form) do copy[k] = v end
  copy.fields = {}
  for i, f in ipairs(form.fields or {}) do
    local g = {}
    for k, v in pairs(f) do g[k] = v end
    if f.var and values[f.var] ~= nil then
      if forms.is_multi(f.type) then g.values, g.value = values[f.var], nil else g.value, g.values = values[f.var], nil end
    end
    copy.fields[i] = g
  end
  if xml.is_element(def) then copy.type = def.attr.type or "form" end
  return copy
end

-- After a refused submission the session waits for a corrected one, unless its command was added
-- with end_on_refusal: then the refusal ends it (the requester starts again with execute).
local function refused(session)
  if not session.spec.end_on_refusal then return end
  end_session(session, "refused")
  session.task:cancel("the submission was refused") -- as a requester's cancel: the task ends quietly
end

--- session:ask(form [, opts]) -> values. Sends form (a sacm.xmpp.forms definition or element) to the
-- requester and waits for the answer: the values, validated against the form and typed
-- (forms.validate). An answer that fails validation gets bad-request <bad-payload/> and the
-- session waits for the next one. opts.last = true offers "complete" instead of "next";
-- opts.note is a note (string) to send with the form.
-- Cancellation by the requester or an idle timeout end the command's task (a `cancelled` error
-- raised here, so <close> and pcall cleanup run).
---@param def sacm.xmpp.forms.Definition|sacm.xml.Element
---@param opts? {last?: boolean, note?: string}
---@return table<string, any> values validated and typed
function Session:ask(def, opts)
  check_in_session(self, "ask")
  if type(def) ~= "table" then error("session:ask expects a form definition or element", 2) end
  opts = opts or {}
  if self.ended then error(errors.new("cancelled", "the session has ended"), 0) end
  self.stage = self.stage + 1
  local stage = self.stage
  -- going back: the stages before the one we return to are answered from the history
  if self.replay_until and stage <= self.replay_until then
    self.notes = {} -- they went out with that stage the first time
    return self.history[stage].values
  end
  self.replay_until = nil
  local send = def
  if self.prefill and self.prefill.stage == stage then
    send = prefilled(def, self.prefill.values)
  end
  self.prefill = nil
  if type(send) == "table" and not xml.is_element(send) and send.type == nil then
    local copy = {}
    for k, v in pairs(send) do copy[k] = v end
    copy.type = "form"
    send = copy
  end
  local x = forms.new(send)
  if opts.note then self:note(opts.note) end
  local can_prev = self.spec.prev and stage > 1
  local actions = xml.element("actions", { xmlns = M.NS, execute = opts.last and "complete" or "next" })
  if can_prev then actions:tag("prev"):up() end
  actions:tag(opts.last and "complete" or "next"):up()
  self.status = "executing"
  if self.req then reply_with(self, self.req, "executing", actions, x) end

  while true do
    local req, why = self.inbox:get(self.idle_timeout)
    if not req then
      if why.condition == "timeout" then
        end_session(self, "expired")
        log.info("command %s session %s from %s expired after %gs idle", self.node, self.id, self.from,
          self.idle_timeout)
        self.task:cancel(("session expired after %gs idle"):format(self.idle_timeout))
      end
      -- closed: the session was ended from outside (provider closed); its cancel follows
      self.task:cancel("the session has ended")
      error(errors.new("cancelled", "the session has ended"), 0)
    end
    local submitted = forms.find(req.cmd)
    if req.action == "cancel" or (submitted and submitted.attr.type == "cancel") then
      end_session(self, "canceled")
      reply_with(self, req, "canceled")
      self.task:cancel("canceled by the requester")
    elseif req.action == "prev" then
      if can_prev then
        self.replay_until = stage - 2
        self.prefill = { stage = stage - 1, values = self.history[stage - 1].values }
        for i = stage - 1, #self.history do self.history[i] = nil end
        error(RESTART, 0)
      end
      respond(self, req, error_iq(req.stanza, "bad-request", "there is no previous stage to go back to", "bad-action"))
    elseif req.action ~= "execute" and req.action ~= (opts.last and "complete" or "next") then
      -- XEP-0050 4.4: only the actions <actions/> offered (and execute, the default) are valid
      respond(self, req, error_iq(req.stanza, "bad-request", ("action '%s' is not offered at this stage (use %s)")
        :format(req.action, opts.last and "complete" or "next"), "bad-action"))
      refused(self)
    else
      local parsed, values, err
      if submitted then parsed, err = forms.parse(submitted, def) end -- a form parse refuses is no empty one
      if not err then values, err = forms.validate(def, parsed and parsed.values or {}) end
      local want = x and forms.parse(x).form_type
      if values and want and parsed and parsed.form_type and parsed.form_type ~= want then
        values, err = nil, errors.new("bad-request", ("invalid form: FORM_TYPE is '%s', this command's form is '%s'")
          :format(parsed.form_type, want))
      end
      if values then
        self.history[stage] = { values = values }
        return values
      end
      respond(self, req, error_iq(req.stanza, "bad-request", err.text, "bad-payload"))
      refused(self)
    end
  end
end

-- The <command/> payload for what the command's code returned.
local function result_payload(session, result)
  if result == nil or result == true then return nil end
  if type(result) == "string" then
    session:note(result, "info")
    return nil
  end
  if xml.is_element(result) then return result end
  if type(result) == "table" then
    local def = {}
    for k, v in pairs(result) do def[k] = v end
    def.type = def.type or "result"
    return forms.new(def)
  end
  error("a command returned a " .. type(result) .. " (expected nil, a string, a form or an element)")
end

local function finish(session, ok, ...)
  local req = session.req
  if ok then
    local result, err = ...
    if session.ended == "canceled" or session.ended == "closed" then
      if req then reply_with(session, req, "canceled") end
      end_session(session, session.ended)
      return
    end
    end_session(session, "completed")
    if not req then return end
    if result == nil and err ~= nil then
      if errors.is(err) then
        respond(session, req, st.error_reply(req.stanza, err.condition, err.text, err.type, err.app))
      else
        respond(session, req, st.error_reply(req.stanza, "internal-server-error", errors.message(err)))
      end
      return
    end
    local built, payload = pcall(result_payload, session, result)
    if not built then
      log.error("command %s: %s", session.node, errors.message(payload))
      respond(session, req, st.error_reply(req.stanza, "internal-server-error", "the command's result is malformed"))
      return
    end
    session.status = "completed"
    reply_with(session, req, "completed", nil, payload)
    return
  end
  local err = ...
  if errors.is_condition(err, "cancelled") then
    end_session(session, session.ended or "canceled")
    if req then reply_with(session, req, "canceled") end
    return
  end
  end_session(session, "failed")
  log.error("command %s (session %s from %s) failed: %s", session.node, session.id, session.from,
    session.traceback or errors.message(err))
  if req then respond(session, req, st.error_reply(req.stanza, "internal-server-error")) end
end

local function body(session)
  local spec = session.spec
  if spec.form ~= nil then
    local def, err = spec.form
    if type(def) == "function" then def, err = def(session) end
    if def == nil then return nil, err end
    local values = session:ask(def, { last = true })
    return spec.run(session, values)
  end
  return spec.run(session)
end

local function session_main(session)
  while true do
    session.stage = 0
    session.traceback = nil
    local r = pack(xpcall(body, function(e)
      if e ~= RESTART and not errors.is_condition(e, "cancelled") then
        session.traceback = debug.traceback(errors.message(e), 2)
      end
      return e
    end, session))
    if r[1] or r[2] ~= RESTART then
      local ok, err = pcall(finish, session, unpack(r, 1, r.n))
      if not ok then
        log.error("command %s: finishing session %s failed: %s", session.node, session.id, errors.message(err))
        end_session(session, "failed")
      end
      -- whatever happened, the request waiting for this session gets an answer
      local req = session.req
      if req and not req.answered then
        respond(session, req, st.error_reply(req.stanza, "internal-server-error"))
      end
      if not r[1] and errors.is_condition(r[2], "cancelled") then error(r[2], 0) end
      return
    end
    -- prev: run the command again; ask() answers the earlier stages from the history
  end
end

local function new_session_id(self)
  while true do
    local id = crypto.hex(crypto.random(12))
    if not self.by_id[id] then return id end
  end
end

local function start_session(self, spec, s, cmd, from)
  local requester = jidlib.bare(from) or from
  local waited = spec.rate and select(2, spec.rate:take(requester)) -- a sacm.ratelimit, before any work
  if waited then
    return st.error_reply(s, "policy-violation", ("%s: more requests from %s than its rate limit allows (%s); "
      .. "try again in %.1f s"):format(spec.node, requester, spec.rate:describe(), waited), "wait")
  end
  local per = self.per_requester[requester] or 0
  local max = spec.max_sessions or self.options.max_sessions
  if per >= max then
    return error_iq(s, "resource-constraint", ("%s already has %d open command sessions"):format(requester, per))
  end
  if self.total >= self.options.max_total_sessions then
    return error_iq(s, "resource-constraint", "too many open command sessions")
  end
  local session = setmetatable({
    id = new_session_id(self),
    node = spec.node,
    name = spec.name,
    from = from,
    requester = requester,
    conn = self.conn,
    provider = self,
    spec = spec,
    data = {},
    stage = 0,
    history = {},
    notes = {},
    inbox = sync.queue(),
    idle_timeout = spec.idle_timeout or self.options.idle_timeout,
    status = "executing",
  }, Session)
  self.by_id[session.id] = session
  self.total = self.total + 1
  self.per_requester[requester] = per + 1
  local req = { stanza = s, cmd = cmd, action = "execute", reply = sync.queue() }
  session.req = req
  log.debug("command %s session %s started by %s", spec.node, session.id, from)
  session.task = task.spawn({ name = "command " .. spec.node }, session_main, session)
  return req.reply:get()
end

local function handle(self, s)
  local cmd = s:child("command", M.NS)
  local node = cmd.attr.node
  local action = cmd.attr.action or "execute"
  local sid = cmd.attr.sessionid
  if sid == "" then sid = nil end
  local from = s.attr.from or jidlib.bare(self.conn.jid)
  if not ACTIONS[action] then
    return error_iq(s, "bad-request", "unknown action '" .. action .. "'", "malformed-action")
  end
  if not node or node == "" then return error_iq(s, "bad-request", "the command has no node") end
  if not sid then
    if action == "cancel" then
      return error_iq(s, "bad-request", "cancel needs a sessionid", "bad-sessionid")
    elseif action ~= "execute" then
      return error_iq(s, "bad-request", "a command starts with the execute action", "bad-action")
    end
    local spec = self.commands[node]
    if not spec then return error_iq(s, "item-not-found", "no such command: " .. node) end
    if not is_allowed(self, spec, from) then
      return error_iq(s, "forbidden", "not allowed to execute " .. node)
    end
    return start_session(self, spec, s, cmd, from)
  end
  -- someone not allowed to run the command is told so, whatever session id they name
  local spec = self.commands[node]
  if spec and not is_allowed(self, spec, from) then
    return error_iq(s, "forbidden", "not allowed to execute " .. node)
  end
  local session = self.by_id[sid]
  if not session or session.node ~= node or not jidlib.equal(session.from, from) then
    return error_iq(s, "bad-request", "no such session", "bad-sessionid")
  end
  if session.req then
    -- still working on the previous request
    if action == "cancel" then
      end_session(session, "canceled")
      session.task:cancel("canceled by the requester")
      return st.reply(s):add(command_element(session, "canceled"))
    end
    return error_iq(s, "unexpected-request", "the previous request of this session is still being processed")
  end
  local req = { stanza = s, cmd = cmd, action = action, reply = sync.queue() }
  session.req = req
  if not session.inbox:put(req) then
    session.req = nil
    return error_iq(s, "bad-request", "the session has ended", "bad-sessionid")
  end
  return req.reply:get()
end

local function check_node(node)
  if type(node) ~= "string" or node == "" then error("a command node must be a non-empty string", 3) end
end

--- provider:add(node, spec) -> provider. spec: name (default node), run (required),
-- form (definition or function(session) -> definition: run(session, values) then gets its answer),
-- allowed (nil: our own account only; true: anyone; a list of JIDs, bare JIDs or domains; or
-- function(from, node) -> boolean), prev (true: offer going back a stage, which runs the code
-- again up to there), idle_timeout, max_sessions, rate (a sacm.ratelimit limiter: sessions per
-- requester, refused with policy-violation type 'wait'). Adding a node again replaces the command
-- (running sessions finish with the old one).
---@param node string
---@param spec sacm.xmpp.commands.Spec
---@return sacm.xmpp.commands.Provider self
function Provider:add(node, spec)
  check_node(node)
  if type(spec) ~= "table" then error("provider:add expects a spec table", 2) end
  if type(spec.run) ~= "function" then error("command " .. node .. ": run must be a function", 2) end
  local allowed = spec.allowed
  if allowed ~= nil and allowed ~= true and type(allowed) ~= "function" and type(allowed) ~= "table" then
    error("command " .. node .. ": allowed must be true, a list of JIDs or a function", 2)
  end
  if spec.form ~= nil and type(spec.form) ~= "table" and type(spec.form) ~= "function" then
    error("command " .. node .. ": form must be a definition or a function", 2)
  end
  for _, k in ipairs({ "idle_timeout", "max_sessions" }) do
    if spec[k] ~= nil and (type(spec[k]) ~= "number" or spec[k] <= 0) then
      error("command " .. node .. ": " .. k .. " must be a positive number", 2)
    end
  end
  local s = {}
  for k, v in pairs(spec) do s[k] = v end
  s.node = node
  s.name = spec.name or node
  if not self.commands[node] then self.order[#self.order + 1] = node end
  self.commands[node] = s
  self.disco:add_node(node, { name = s.name, info = function(request) return node_info(self, s, request) end })
  return self
end

--- provider:remove(node) -> boolean. Running sessions of the command finish.
---@param node string
---@return boolean removed
function Provider:remove(node)
  if not self.commands[node] then return false end
  self.commands[node] = nil
  for i = #self.order, 1, -1 do
    if self.order[i] == node then table.remove(self.order, i) end
  end
  self.disco:remove_node(node)
  return true
end

--- provider:sessions() -> list of open sessions (id, node, from, stage, status).
---@return sacm.xmpp.commands.Session[] sessions by id
function Provider:sessions()
  local list = {}
  for _, s in pairs(self.by_id) do list[#list + 1] = s end
  table.sort(list, function(a, b) return a.id < b.id end)
  return list
end

--- provider:close(): stops answering commands, cancels every open session, withdraws the disco
-- entries. commands.provider(conn) makes a fresh provider.
---(no parameters, no results)
function Provider:close()
  if self.closed then return end
  self.closed = true
  self.handler.remove()
  for _, node in ipairs(self.order) do self.disco:remove_node(node) end
  self.disco:remove_node(M.NS)
  self.disco:remove_feature(M.NS)
  for _, s in ipairs(self:sessions()) do
    end_session(s, "closed")
    s.task:cancel("the command provider was closed")
  end
  if providers[self.conn] == self then providers[self.conn] = nil end
end

--- provider(conn [, options]) -> the connection's command provider (made on first use).
-- options: idle_timeout (300 s), max_sessions (per requester's bare JID, 10),
-- max_total_sessions (1000). Options given later update the provider.
---@param conn sacm.xmpp.Connection
---@param options? {idle_timeout?: number, max_sessions?: integer, max_total_sessions?: integer}
---@return sacm.xmpp.commands.Provider
function M.provider(conn, options)
  if type(conn) ~= "table" or type(conn.on) ~= "function" then error("commands.provider expects a connection", 2) end
  if options ~= nil and type(options) ~= "table" then error("commands.provider: options must be a table", 2) end
  local self = providers[conn]
  if not self then
    self = setmetatable({
      conn = conn,
      commands = {},
      order = {},
      by_id = {},
      per_requester = {},
      total = 0,
      options = {},
    }, Provider)
    for k, v in pairs(M.DEFAULTS) do self.options[k] = v end
    self.handler = conn:on("iq", { type = "set", ns = M.NS, child = "command" }, function(s) return handle(self, s) end)
    self.disco = disco.provider(conn)
    self.disco:add_feature(M.NS)
    self.disco:add_node(M.NS, { name = "Commands", items = function(request) return list_items(self, request) end })
    providers[conn] = self
  end
  for k, v in pairs(options or {}) do
    if M.DEFAULTS[k] == nil then error("commands.provider: unknown option '" .. tostring(k) .. "'", 2) end
    if type(v) ~= "number" or v <= 0 then error("commands.provider: " .. k .. " must be a positive number", 2) end
    self.options[k] = v
  end
  return self
end

-- Client -----------------------------------------------------------------------------------------

---@class sacm.xmpp.commands.ClientSession a command we run at another entity (commands.start, execute)
---@field jid string
---@field node string
---@field status "executing"|"completed"|"canceled"
---@field sessionid string?
---@field form sacm.xmpp.forms.Form? the form to fill in, or the result
---@field values table<string, any>?
---@field result sacm.xmpp.forms.Form?
---@field notes {type: string, text: string}[]?
---@field actions string[]?
local ClientSession = {}
ClientSession.__index = ClientSession
M.ClientSession = ClientSession

-- Adds the XEP-0050 application condition (bad-sessionid, bad-payload, ...) of an error reply.
local function with_app_condition(err)
  local s = errors.is(err) and err.stanza
  local e = s and s:child("error")
  if e then
    for child in e:children() do
      if child.ns == M.NS then err.app_condition = child.name break end
    end
  end
  return err
end

local function parse_response(self, reply)
  local cmd = reply:child("command", M.NS)
  if not cmd then
    return nil, errors.new("bad-format", ("%s answered without a <command xmlns='%s'/>"):format(self.jid, M.NS))
  end
  local status = cmd.attr.status
  if status ~= "executing" and status ~= "completed" and status ~= "canceled" then
    return nil, errors.new("bad-format", ("%s answered with status '%s'"):format(self.jid, tostring(status)))
  end
  self.status = status
  self.sessionid = cmd.attr.sessionid or self.sessionid
  self.element = cmd
  self.notes = {}
  for n in cmd:children("note", M.NS) do
    self.notes[#self.notes + 1] = { type = n.attr.type or "info", text = n:get_text() }
  end
  self.actions = {}
  local actions = cmd:child("actions", M.NS)
  if actions then
    self.actions.execute = actions.attr.execute
    for a in actions:children() do
      if a.ns == M.NS and ACTIONS[a.name] then self.actions[a.name] = true end
    end
  end
  local x = forms.find(cmd)
  self.form = x and forms.parse(x) or nil
  self.values = self.form and self.form.values or nil
  self.result = status == "completed" and self.form or nil
  return self
end

local function send(self, action, payload)
  local iq = st.iq({ type = "set", to = self.jid })
    :tag("command", { xmlns = M.NS, node = self.node, sessionid = self.sessionid, action = action })
  if payload then iq:add(payload) end
  local reply, err = self.conn:iq(iq:reset(), self.timeout)
  if not reply then return nil, with_app_condition(err) end
  return parse_response(self, reply)
end

--- session:default_action() -> the action the responder suggests ("next", "complete", ...).
---@return string action
function ClientSession:default_action()
  local a = self.actions or {}
  if a.execute then return a.execute end
  if a.next then return "next" end
  if a.complete then return "complete" end
  return "execute"
end

--- session:submit([values [, action]]) -> session, or nil, err. Answers the current form with
-- values (a table: forms.submit fills in the form's defaults for the rest). action defaults to
-- the responder's. On an error (bad-request with err.app_condition "bad-payload" for invalid
-- values) the session stays where it was, so it can be submitted again.
---@param values? table<string, any>
---@param action? string default: the responder's
---@return sacm.xmpp.commands.ClientSession? session
---@return sacm.Error? err
function ClientSession:submit(values, action)
  if self.status ~= "executing" then error("the command session is " .. tostring(self.status), 2) end
  if values ~= nil and type(values) ~= "table" then error("session:submit: values must be a table", 2) end
  action = action or self:default_action()
  if not ACTIONS[action] or action == "cancel" or action == "prev" then
    error("session:submit: bad action '" .. tostring(action) .. "'", 2)
  end
  local payload
  if self.form then payload = forms.submit(self.form, values or {})
  elseif values and next(values) then payload = forms.submit(nil, values) end
  return send(self, action, payload)
end

---@param values? table<string, any>
---@return sacm.xmpp.commands.ClientSession? session
---@return sacm.Error? err
function ClientSession:next(values) return self:submit(values, "next") end
---@param values? table<string, any>
---@return sacm.xmpp.commands.ClientSession? session
---@return sacm.Error? err
function ClientSession:complete(values) return self:submit(values, "complete") end

--- session:prev() -> session (showing the previous form again), or nil, err.
---@return sacm.xmpp.commands.ClientSession? session
---@return sacm.Error? err
function ClientSession:prev()
  if self.status ~= "executing" then error("the command session is " .. tostring(self.status), 2) end
  return send(self, "prev")
end

--- session:cancel() -> session (status "canceled"), or nil, err.
---@return sacm.xmpp.commands.ClientSession? session
---@return sacm.Error? err
function ClientSession:cancel()
  if self.status ~= "executing" then return self end
  return send(self, "cancel")
end

---@return boolean
function ClientSession:done()
  return self.status ~= "executing"
end

function ClientSession:__tostring()
  return ("command %s at %s (%s)"):format(self.node, self.jid, tostring(self.status))
end

local function check_client(conn, jid, node, what)
  if type(conn) ~= "table" or type(conn.iq) ~= "function" then error(what .. ": first argument must be a connection", 3) end
  if type(jid) ~= "string" or jid == "" then error(what .. ": jid must be a non-empty string", 3) end
  if node ~= false then check_node(node) end
end

--- list(conn, jid [, timeout]) -> {{node=, name=, jid=}}, or nil, err: the commands jid offers us
-- (disco#items of node http://jabber.org/protocol/commands).
---@param conn sacm.xmpp.Connection
---@param jid string
---@param timeout? number seconds
---@return {node: string, name: string?, jid: string}[]? commands
---@return sacm.Error? err
function M.list(conn, jid, timeout)
  check_client(conn, jid, false, "commands.list")
  local items, err = disco.items(conn, jid, M.NS, timeout)
  if not items then return nil, err end
  local out = {}
  for _, item in ipairs(items) do
    if item.node then out[#out + 1] = { node = item.node, name = item.name, jid = item.jid } end
  end
  return out
end

--- start(conn, jid, node [, timeout]) -> session, or nil, err. Executes the command and returns
-- the session for interactive use: session.status ("executing", "completed", "canceled"),
-- sessionid, form (the parsed form to fill in, or the result), values, result, notes, actions;
-- :submit(values), :next(values), :complete(values), :prev(), :cancel(), :done().
---@param conn sacm.xmpp.Connection
---@param jid string
---@param node string
---@param timeout? number seconds
---@return sacm.xmpp.commands.ClientSession? session
---@return sacm.Error? err
function M.start(conn, jid, node, timeout)
  check_client(conn, jid, node, "commands.start")
  local self = setmetatable({ conn = conn, jid = jid, node = node, timeout = timeout, notes = {} }, ClientSession)
  return send(self, "execute")
end

M.MAX_STAGES = 64

--- execute(conn, jid, node [, values [, timeout]]) -> session, or nil, err. Drives the command to
-- the end: each form is answered from values, which is one table for every stage (each form takes
-- its own fields from it), a list of tables (one per stage), or function(form, session) -> table
-- (nil cancels the command). Returns the finished session: status, sessionid, form/result (the
-- parsed result form), values (its values), notes. A refused answer (validation) cancels the
-- session and returns nil, err (err.app_condition "bad-payload").
---@param conn sacm.xmpp.Connection
---@param jid string
---@param node string
---@param values? table|table[]|fun(form: sacm.xmpp.forms.Form, session: sacm.xmpp.commands.ClientSession): table?
---@param timeout? number seconds
---@return sacm.xmpp.commands.ClientSession? session finished
---@return sacm.Error? err
function M.execute(conn, jid, node, values, timeout)
  check_client(conn, jid, node, "commands.execute")
  if values ~= nil and type(values) ~= "table" and type(values) ~= "function" then
    error("commands.execute: values must be a table or a function", 2)
  end
  local session, err = M.start(conn, jid, node, timeout)
  if not session then return nil, err end
  local per_stage = type(values) == "table" and type(values[1]) == "table"
  local stage = 0
  while session.status == "executing" do
    stage = stage + 1
    if stage > M.MAX_STAGES then
      session:cancel()
      return nil, errors.new("policy-violation", ("command %s did not finish within %d stages"):format(node, M.MAX_STAGES))
    end
    local v
    if type(values) == "function" then
      local ok, result = pcall(values, session.form, session)
      if not ok then
        session:cancel()
        error(result, 0)
      end
      if result == nil then return session:cancel() end
      v = result
    elseif per_stage then
      v = values[stage] or {}
    else
      v = values or {}
    end
    local ok, e = session:submit(v)
    if not ok then
      if e.app_condition ~= "bad-sessionid" then session:cancel() end
      return nil, e
    end
  end
  return session
end

return M
