--- sacm.grid.payload: posture attributes, evaluation results and status notifications as XML.
--
-- Encoders take Lua tables and return elements; decoders take elements from the network and return
-- tables, or nil, err (bad-request) for anything that does not follow docs/protocol.md. Decoders
-- never raise on hostile input and bound what they accept.
local xml = require "sacm.xml"
local errors = require "sacm.error"
local time = require "sacm.time"
local proto = require "sacm.grid.protocol"
local crypto = require "sacm.crypto"

local M = {}

M.MAX_ITEMS = 100000     -- records in one posture payload
M.MAX_ATTRS = 10000      -- attributes of the posture or of one record
M.MAX_EVIDENCE = 64      -- evidence lines in one result
M.MAX_TEXT = 4096        -- bytes of one evidence line or title

local function bad(fmt, ...)
  return nil, errors.new("bad-request", fmt:format(...))
end

-- Scalars travel as text with a type attribute when they are not strings, so they come back as
-- the Lua type they left as.
local function encode_value(el, key, v)
  local t = type(v)
  -- a name XML cannot carry (a config key in Latin-1, say) is written escaped, as text for people is
  local attr = { name = select(2, xml.clean_text(key)) > 0 and M.wire_text(key, math.huge) or key }
  local text
  if t == "string" then
    text = v
    -- bytes XML cannot carry (Latin-1, NUL, ESC...) travel as base64, so the value comes back as
    -- it left: posture is evidence and is never rewritten
    if select(2, xml.clean_text(v)) > 0 then attr.type, text = "base64", crypto.base64_encode(v) end
  elseif t == "boolean" then
    attr.type, text = "bool", v and "true" or "false"
  elseif t == "number" then
    if math.type(v) == "integer" then
      attr.type, text = "int", tostring(v)
    else
      if v ~= v or v == math.huge or v == -math.huge then error(("value of '%s' is not finite"):format(key), 0) end
      attr.type, text = "float", ("%.17g"):format(v)
    end
  else
    error(("value of '%s' must be a string, number or boolean, got %s"):format(key, t), 0)
  end
  el:tag("attr", attr):text(text):up()
end

local function decode_value(a)
  local name = a.attr.name
  if type(name) ~= "string" or name == "" then return nil, nil, "an attr without a name" end
  local text, ty = a:get_text(), a.attr.type
  if ty == nil or ty == "string" then return name, text end
  if ty == "int" then
    local n = text:match("^%-?%d+$") and math.tointeger(tonumber(text))
    if not n then return nil, nil, ("attr '%s': not an integer"):format(name) end
    return name, n
  elseif ty == "float" then
    local n = tonumber(text)
    if not n then return nil, nil, ("attr '%s': not a number"):format(name) end
    return name, n + 0.0
  elseif ty == "base64" then
    local bytes = crypto.base64_decode(text)
    if not bytes then return nil, nil, ("attr '%s': not base64"):format(name) end
    return name, bytes
  elseif ty == "bool" then
    if text == "true" then return name, true elseif text == "false" then return name, false end
    return nil, nil, ("attr '%s': not a boolean"):format(name)
  end
  return nil, nil, ("attr '%s': unknown type '%s'"):format(name, tostring(ty))
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do
    if type(k) ~= "string" then error("posture keys must be strings, got " .. type(k), 0) end
    keys[#keys + 1] = k
  end
  table.sort(keys)
  return keys
end

local function encode_map(el, map)
  for _, k in ipairs(sorted_keys(map)) do encode_value(el, k, map[k]) end
end

local function decode_map(el, into)
  local count = 0
  for a in el:children("attr", el.ns) do
    count = count + 1
    if count > M.MAX_ATTRS then return nil, "too many attributes" end
    local k, v, problem = decode_value(a)
    if problem then return nil, problem end
    into[k] = v
  end
  return into
end

-- Text for people (evidence, titles, error and status texts) made valid XML character data at
-- the encoder, so no content can make a payload fail to serialize: each byte that is not UTF-8
-- and each character XML forbids (NUL, ESC and the other C0 controls but tab, LF, CR; U+FFFE,
-- U+FFFF) is written as \xNN (\uFFFE, \uFFFF), visibly; then the text is cut to at most
-- max_bytes (M.MAX_TEXT) on a character boundary, ended with "...". docs/protocol.md 8.
local function escape_control(c) return ("\\x%02X"):format(c:byte()) end
local NONCHAR = { ["\239\191\190"] = "\\uFFFE", ["\239\191\191"] = "\\uFFFF" }

local function escape_valid(s) -- s is valid UTF-8
  return (s:gsub("[\0-\8\11\12\14-\31]", escape_control):gsub("\239\191[\190\191]", NONCHAR))
end

function M.wire_text(s, max_bytes)
  s = tostring(s)
  max_bytes = max_bytes or M.MAX_TEXT
  if select(2, xml.clean_text(s)) > 0 then
    local out, i, n = {}, 1, #s
    while i <= n do
      local len, at = utf8.len(s, i) -- at: the first byte that is not UTF-8
      if len then
        out[#out + 1] = escape_valid(s:sub(i))
        break
      end
      out[#out + 1] = escape_valid(s:sub(i, at - 1))
      out[#out + 1] = escape_control(s:sub(at, at))
      i = at + 1
    end
    s = table.concat(out)
  end
  if #s <= max_bytes then return s end
  local cut = max_bytes - 3
  -- continuation bytes are 10xxxxxx: step back to the first byte of the character at the cut
  while cut > 0 and (s:byte(cut + 1) or 0) & 0xC0 == 0x80 do cut = cut - 1 end
  return s:sub(1, cut) .. "..."
end
local function clip(s) return M.wire_text(s) end
M.clip = clip

------------------------------------------------------------------------------------ references

-- Content that is not inline: where to fetch it, how large it is and its SHA-256 digest, so a
-- receiver can check what it fetched (docs/protocol.md, section 5.3).
M.DIGEST_PREFIX = "sha-256:"

local function add_ref(el, ref)
  assert(type(ref.href) == "string" and math.type(ref.size) == "integer" and type(ref.digest) == "string",
    "a reference needs href, size and digest")
  el.attr.href, el.attr.size, el.attr.digest = ref.href, tostring(ref.size), M.DIGEST_PREFIX .. ref.digest
  return el
end

local function parse_ref(a, what)
  local size = a.size and a.size:match("^%d+$") and math.tointeger(tonumber(a.size))
  if not size then return bad("%s: size='%s' is not a byte count", what, tostring(a.size)) end
  local digest = a.digest and a.digest:match("^sha%-256:(%x+)$")
  if not digest or #digest ~= 64 then return bad("%s: digest='%s' is not sha-256:<64 hex digits>", what, tostring(a.digest)) end
  if not a.href:match("^https://[^%s]+$") then return bad("%s: href='%s' is not an https URL", what, a.href) end
  return { href = a.href, size = size, digest = digest:lower() }
end

--- digest(text) -> the lower-case hex SHA-256 of text, as references carry it.
function M.digest(text)
  return crypto.hex(crypto.sha256(text))
end

-- The attributes of a payload element: it is `name` in `ns` (else "not a <what>"), every
-- `required` attribute is there and not empty, and every `ids` attribute that is there is an
-- identifier (docs/protocol.md 6); else nil, err naming what is wrong.
local function head(el, name, ns, what, required, ids)
  if not xml.is_element(el) or el.name ~= name or el.ns ~= ns then return bad("not a %s", what) end
  local a = el.attr
  for _, k in ipairs(required) do
    if type(a[k]) ~= "string" or a[k] == "" then return bad("%s without %s", what, k) end
  end
  for _, k in ipairs(ids) do
    if a[k] ~= nil and not proto.valid_id(a[k]) then
      return bad("%s %s '%s' is not an identifier (letters, digits, . _ : @ / -, at most %d bytes)", what, k,
        a[k]:sub(1, 64), proto.ID_MAX)
    end
  end
  return a
end

------------------------------------------------------------------------------------ posture

--- posture(p) -> <posture xmlns='urn:sacmrun:posture:1'/> element.
-- p: id, kind, endpoint, hostname, collected (epoch seconds), collector (JID), correlation,
-- module_version, and either data = {attributes = {...}, items = {{...}}} or error = {condition, text}.
function M.posture(p)
  assert(type(p.id) == "string" and type(p.kind) == "string" and type(p.endpoint) == "string",
    "posture needs id, kind and endpoint")
  local el = xml.element("posture", {
    xmlns = proto.NS_POSTURE, id = p.id, kind = p.kind, endpoint = p.endpoint, hostname = p.hostname,
    collected = time.format(p.collected or time.now(), 3), collector = p.collector,
    correlation = p.correlation, ["module-version"] = p.module_version and tostring(p.module_version),
    status = p.error and "error" or "ok",
  })
  if p.error then
    el:tag("error", { condition = p.error.condition or "internal-error" }):text(clip(p.error.text or "")):up()
    return el
  end
  if p.ref then return add_ref(el, p.ref) end
  local data = p.data or {}
  encode_map(el, data.attributes or {})
  for _, item in ipairs(data.items or {}) do
    el:tag("item")
    encode_map(el, item)
    el:up()
  end
  return el
end

--- parse_posture(el) -> p (the fields of posture(), collected as epoch seconds) | nil, err.
function M.parse_posture(el)
  local a, err = head(el, "posture", proto.NS_POSTURE, "posture", { "id", "kind", "endpoint", "collected" },
    { "id", "endpoint", "correlation" })
  if not a then return nil, err end
  if not a.kind:match("^[%w_%-]+$") or #a.kind > 64 then return bad("posture kind '%s' is not a name", a.kind:sub(1, 64)) end
  local collected = time.parse(a.collected)
  if not collected then return bad("posture collected='%s' is not an XEP-0082 date-time", a.collected) end
  local p = {
    id = a.id, kind = a.kind, endpoint = a.endpoint, hostname = a.hostname, collected = collected,
    collector = a.collector, correlation = a.correlation,
    module_version = a["module-version"] and tonumber(a["module-version"]),
  }
  if a.status == "error" then
    local e = el:child("error", proto.NS_POSTURE)
    p.error = { condition = e and e.attr.condition or "internal-error", text = e and e:get_text() or "" }
    return p
  end
  if a.href then
    local ref, rerr = parse_ref(a, "posture " .. a.id)
    if not ref then return nil, rerr end
    p.ref = ref
    return p
  end
  local attributes, problem = decode_map(el, {})
  if not attributes then return bad("posture %s: %s", a.id, problem) end
  local items = {}
  for item in el:children("item", proto.NS_POSTURE) do
    if #items >= M.MAX_ITEMS then return bad("posture %s: more than %d items", a.id, M.MAX_ITEMS) end
    local rec
    rec, problem = decode_map(item, {})
    if not rec then return bad("posture %s: %s", a.id, problem) end
    items[#items + 1] = rec
  end
  p.data = { attributes = attributes, items = items }
  return p
end

------------------------------------------------------------------------------------ posture sets

M.MAX_SET = 1000 -- postures in one posture set, results in one result set

--- posture_set(set) -> <posture-set xmlns='urn:sacmrun:posture:1'/>: what a collector uploads for
-- one collection. set: id (the collection), endpoint, hostname, collector, correlation, and
-- postures (elements made by posture()).
function M.posture_set(set)
  local el = xml.element("posture-set", { xmlns = proto.NS_POSTURE, id = set.id, endpoint = set.endpoint,
    hostname = set.hostname, collector = set.collector, correlation = set.correlation })
  for _, p in ipairs(set.postures) do el:add(p) end
  return el
end

--- parse_posture_set(el) -> {id, endpoint, hostname, collector, correlation, postures = {p},
-- elements = {el}} | nil, err. Every posture must be of the set's endpoint; whose collector each
-- names is for the receiver to check against who sent it.
function M.parse_posture_set(el)
  local a, herr = head(el, "posture-set", proto.NS_POSTURE, "posture set", { "id", "endpoint" },
    { "id", "endpoint", "correlation" })
  if not a then return nil, herr end
  local set = { id = a.id, endpoint = a.endpoint, hostname = a.hostname, collector = a.collector,
    correlation = a.correlation, postures = {}, elements = {} }
  for child in el:children("posture", proto.NS_POSTURE) do
    if #set.postures >= M.MAX_SET then return bad("posture set %s: more than %d postures", a.id, M.MAX_SET) end
    local p, err = M.parse_posture(child)
    if not p then return nil, err end
    if p.ref then return bad("posture set %s: posture %s is a reference, not content", a.id, p.id) end
    if p.endpoint ~= set.endpoint then
      return bad("posture set %s: posture %s is of another endpoint (%s)", a.id, p.id, p.endpoint)
    end
    set.postures[#set.postures + 1] = p
    set.elements[#set.elements + 1] = child
  end
  if #set.postures == 0 then return bad("posture set %s holds no posture", a.id) end
  return set
end

------------------------------------------------------------------------------------ results

--- result(r) -> <result xmlns='urn:sacmrun:result:0'/> element.
-- r: id, endpoint, hostname, rule_id, policy_id, policy_version, result, severity, title,
-- evaluated (epoch seconds), evaluator (JID), correlation, posture_ids (list), evidence (list).
function M.result(r)
  assert(proto.RESULT_SET[r.result], "result must be an XCCDF result value")
  local el = xml.element("result", {
    xmlns = proto.NS_RESULT, id = r.id, endpoint = r.endpoint, hostname = r.hostname,
    rule = r.rule_id, policy = r.policy_id, ["policy-version"] = r.policy_version,
    result = r.result, severity = r.severity, evaluated = time.format(r.evaluated or time.now(), 3),
    evaluator = r.evaluator, correlation = r.correlation,
    posture = r.posture_ids and #r.posture_ids > 0 and table.concat(r.posture_ids, " ") or nil,
    ["posture-collected"] = r.posture_collected and time.format(r.posture_collected, 3) or nil,
  })
  if r.title then el:tag("title"):text(clip(r.title)):up() end
  for i, line in ipairs(r.evidence or {}) do
    if i > M.MAX_EVIDENCE then break end
    el:tag("evidence"):text(clip(line)):up()
  end
  return el
end

--- parse_result(el) -> r (the fields of result()) | nil, err.
function M.parse_result(el)
  local a, herr = head(el, "result", proto.NS_RESULT, "result",
    { "id", "endpoint", "rule", "policy", "policy-version", "result", "evaluated" },
    { "id", "endpoint", "rule", "policy", "correlation" })
  if not a then return nil, herr end
  if not proto.RESULT_SET[a.result] then return bad("result '%s' is not an XCCDF result value", a.result) end
  if a.severity and not proto.SEVERITY_SET[a.severity] then return bad("unknown severity '%s'", a.severity) end
  local evaluated = time.parse(a.evaluated)
  if not evaluated then return bad("result evaluated='%s' is not an XEP-0082 date-time", a.evaluated) end
  local r = {
    id = a.id, endpoint = a.endpoint, hostname = a.hostname, rule_id = a.rule, policy_id = a.policy,
    policy_version = a["policy-version"], result = a.result, severity = a.severity,
    evaluated = evaluated, evaluator = a.evaluator, correlation = a.correlation,
    posture_ids = {}, evidence = {}, posture_collected = a["posture-collected"] and time.parse(a["posture-collected"]),
  }
  for id in (a.posture or ""):gmatch("%S+") do r.posture_ids[#r.posture_ids + 1] = id end
  local title = el:child("title", proto.NS_RESULT)
  r.title = title and clip(title:get_text())
  for ev in el:children("evidence", proto.NS_RESULT) do
    if #r.evidence >= M.MAX_EVIDENCE then break end
    r.evidence[#r.evidence + 1] = clip(ev:get_text())
  end
  return r
end

------------------------------------------------------------------------------------ result sets

local TOTALS = { "total", "pass", "fail", "error", "notapplicable", "notchecked" }

--- result_set(set) -> <results xmlns='urn:sacmrun:result:1'/>: the results of one evaluation of
-- one endpoint. set: id, endpoint, hostname, evaluator, evaluated, correlation, totals ({pass = n,
-- ...}), and either results (elements made by result()) or ref ({href, size, digest}) for a
-- notification whose results are fetched from the repository.
function M.result_set(set)
  local el = xml.element("results", { xmlns = proto.NS_RESULT, id = set.id, endpoint = set.endpoint,
    hostname = set.hostname, evaluator = set.evaluator, correlation = set.correlation,
    evaluated = time.format(set.evaluated or time.now(), 3) })
  for _, k in ipairs(TOTALS) do el.attr[k] = tostring(set.totals and set.totals[k] or 0) end
  if set.ref then return add_ref(el, set.ref) end
  for _, r in ipairs(set.results or {}) do el:add(r) end
  return el
end

--- parse_result_set(el) -> {id, endpoint, hostname, evaluator, evaluated, correlation, totals,
-- results = {r} (nil for a reference, or for a pending set announced by its totals), elements =
-- {el}, ref, pending} | nil, err. pending: delivery='pending', the repository does not have it yet.
function M.parse_result_set(el)
  local a, herr = head(el, "results", proto.NS_RESULT, "result set", { "id", "endpoint", "evaluated" },
    { "id", "endpoint", "correlation" })
  if not a then return nil, herr end
  local evaluated = time.parse(a.evaluated)
  if not evaluated then return bad("result set evaluated='%s' is not an XEP-0082 date-time", a.evaluated) end
  local set = { id = a.id, endpoint = a.endpoint, hostname = a.hostname, evaluator = a.evaluator,
    correlation = a.correlation, evaluated = evaluated, totals = {}, pending = a.delivery == "pending" }
  for _, k in ipairs(TOTALS) do
    local n = a[k] and a[k]:match("^%d+$") and math.tointeger(tonumber(a[k]))
    if not n then return bad("result set %s: %s='%s' is not a count", a.id, k, tostring(a[k])) end
    set.totals[k] = n
  end
  if a.href then
    local ref, rerr = parse_ref(a, "result set " .. a.id)
    if not ref then return nil, rerr end
    set.ref = ref
    return set
  end
  set.results, set.elements = {}, {}
  for child in el:children("result", proto.NS_RESULT) do
    if #set.results >= M.MAX_SET then return bad("result set %s: more than %d results", a.id, M.MAX_SET) end
    local r, err = M.parse_result(child)
    if not r then return nil, err end
    if r.endpoint ~= set.endpoint or r.evaluator ~= set.evaluator then
      return bad("result set %s: result %s is of another endpoint or evaluator", a.id, r.id)
    end
    set.results[#set.results + 1] = r
    set.elements[#set.elements + 1] = child
  end
  if set.pending and #set.results == 0 then
    set.results, set.elements = nil, nil -- not stored yet and too large to travel: the totals alone
    return set
  end
  if #set.results ~= set.totals.total then
    return bad("result set %s: total='%d' but it holds %d results", a.id, set.totals.total, #set.results)
  end
  return set
end

------------------------------------------------------------------------------------ status

M.STATUS_TYPES = {
  ["online"] = true, ["heartbeat"] = true, ["offline"] = true,
  ["collection-started"] = true, ["collection-done"] = true, ["collection-failed"] = true,
  ["evaluation-done"] = true, ["policy-loaded"] = true, ["policy-removed"] = true,
  ["policy-rejected"] = true, ["stored"] = true,
}

--- status(s) -> <status xmlns='urn:sacmrun:status:0'/>. s: type, component (JID), role, at,
-- correlation, text, and fields = {name = scalar} for details (counts, policy ids and versions).
function M.status(s)
  assert(M.STATUS_TYPES[s.type], "unknown status type")
  local el = xml.element("status", {
    xmlns = proto.NS_STATUS, type = s.type, component = s.component, role = s.role,
    at = time.format(s.at or time.now(), 3), correlation = s.correlation,
  })
  if s.text then el:tag("text"):text(clip(s.text)):up() end
  encode_map(el, s.fields or {})
  return el
end

function M.parse_status(el)
  if not xml.is_element(el) or el.name ~= "status" or el.ns ~= proto.NS_STATUS then
    return bad("not a status payload")
  end
  local a = el.attr
  if not M.STATUS_TYPES[a.type] then return bad("unknown status type '%s'", tostring(a.type)) end
  local at = a.at and time.parse(a.at)
  if not at then return bad("status without a valid 'at'") end
  local text = el:child("text", proto.NS_STATUS)
  local fields, problem = decode_map(el, {})
  if not fields then return bad("status: %s", problem) end
  return { type = a.type, component = a.component, role = a.role, at = at, correlation = a.correlation,
    text = text and text:get_text(), fields = fields }
end

return M
