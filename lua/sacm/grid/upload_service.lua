--- sacm.grid.upload_service: the repository's side of the data plane.
--
-- Producers (collectors, evaluators) ask the repository for an upload slot over XMPP (XEP-0363
-- HTTP File Upload, the repository being the upload service), PUT the document to the slot's
-- URL over HTTPS, and get a receipt once it is committed to the store. Stored documents are
-- served back by id at URLs signed with the repository's own key; the notifications on the
-- grid's pubsub nodes carry those URLs (docs/protocol.md, section 5).
--
--   local svc = assert(upload_service.start{ member = m, store = s, roles_of = fn,
--     listen = { host = "0.0.0.0", port = 8443, cert = ..., key = ... },
--     base_url = "https://repository.grid.example:8443", max_size = 64 * 1024 * 1024 })
--
-- A slot is bound to the full JID that asked for it (the server stamps `from`, so the repository
-- knows who uploads: that is the uploader it records, and a document must name it as its
-- collector or evaluator), to one file name and size, and expires after SLOT_TTL seconds; it can
-- be used once.
local http = require "sacm.http"
local xml = require "sacm.xml"
local st = require "sacm.xmpp.stanza"
local jidlib = require "sacm.xmpp.jid"
local crypto = require "sacm.crypto"
local time = require "sacm.time"
local errors = require "sacm.error"
local proto = require "sacm.grid.protocol"
local payload = require "sacm.grid.payload"

local M = {}
local log = require("sacm.log").new("repository")

M.SLOT_TTL = 300            -- seconds a slot stays valid
M.SLOTS_PER_UPLOADER = 64   -- slots one account may hold at once
M.MAX_SLOTS = 10000         -- slots outstanding in all
M.CONTENT_TYPE = "application/xml"
M.PATH_UPLOAD = "/grid/upload/"
M.PATH_CONTENT = "/grid/content/"

-- File names of uploads: the document's id and .xml (what a slot request names).
local FILENAME = "^([%w%-]+)%.xml$"

local Service = {}
Service.__index = Service

local function upload_error(s, condition, text, extra)
  local reply = st.error_reply(s, condition, text)
  if extra then
    local e = reply:child("error")
    if e then e:add(extra) end
  end
  return reply
end

-- XEP-0363 section 4: <request filename size content-type/> -> <slot><put/><get/></slot>.
local function on_request(self, s)
  local req = s:child("request", proto.NS_UPLOAD)
  local from = s.attr.from
  local bare = from and jidlib.bare(from)
  local roles = bare and self.roles_of(bare) or {}
  if not (roles.collector or roles.evaluator) then
    log.warn("refused an upload slot to %s: not a collector or evaluator of this grid", tostring(from))
    return upload_error(s, "forbidden", "only the grid's collectors and evaluators may upload here")
  end
  local a = req.attr
  local size = a.size and a.size:match("^%d+$") and math.tointeger(tonumber(a.size))
  local id = a.filename and a.filename:match(FILENAME)
  if not id or #id > 128 then
    return upload_error(s, "bad-request", "filename must be <document id>.xml, got '" .. tostring(a.filename) .. "'")
  end
  if not size or size < 1 then
    return upload_error(s, "bad-request", "size must be a positive byte count, got '" .. tostring(a.size) .. "'")
  end
  if a["content-type"] and a["content-type"] ~= M.CONTENT_TYPE then
    return upload_error(s, "bad-request", "content-type must be " .. M.CONTENT_TYPE)
  end
  if size > self.max_size then
    local too = xml.element("file-too-large", { xmlns = proto.NS_UPLOAD })
    too:tag("max-file-size"):text(tostring(self.max_size)):up()
    return upload_error(s, "not-acceptable", ("%d bytes is more than the %d this repository accepts"):format(
      size, self.max_size), too)
  end
  self:expire()
  local held = self.held[bare] or 0
  if held >= M.SLOTS_PER_UPLOADER or self.outstanding >= M.MAX_SLOTS then
    return upload_error(s, "resource-constraint", "too many upload slots outstanding; upload or wait "
      .. M.SLOT_TTL .. " s")
  end
  local token = crypto.hex(crypto.random(16))
  self.slots[token] = { jid = from, bare = bare, filename = a.filename, id = id, size = size,
    expires = time.monotonic() + M.SLOT_TTL }
  self.held[bare] = held + 1
  self.outstanding = self.outstanding + 1
  local slot = xml.element("slot", { xmlns = proto.NS_UPLOAD })
  slot:tag("put", { url = self.base_url .. M.PATH_UPLOAD .. token .. "/" .. a.filename }):up()
  slot:tag("get", { url = self:content_url(id) }):up()
  return slot
end

local function release(self, token)
  local slot = self.slots[token]
  if not slot then return end
  self.slots[token] = nil
  self.outstanding = self.outstanding - 1
  local n = (self.held[slot.bare] or 1) - 1
  self.held[slot.bare] = n > 0 and n or nil
end

--- svc:expire(): forgets slots past their time.
function Service:expire()
  local now = time.monotonic()
  for token, slot in pairs(self.slots) do
    if slot.expires < now then release(self, token) end
  end
end

--- svc:content_url(id) -> the URL a stored document is served at.
function Service:content_url(id)
  return self.base_url .. M.PATH_CONTENT .. id .. "?key=" .. self.store:content_key(id)
end

local function text_response(status, message, headers)
  headers = headers or {}
  headers["Content-Type"] = "text/plain; charset=utf-8"
  return status, headers, message .. "\n"
end

local function receipt_document(self, receipt)
  local el = xml.element("receipt", { xmlns = proto.NS_GRID, id = receipt.id, stored = tostring(receipt.stored),
    duplicates = tostring(receipt.duplicates) })
  for _, c in ipairs(receipt.contents) do
    el:tag("content", { id = c.id, size = tostring(c.size), digest = payload.DIGEST_PREFIX .. c.digest,
      href = self:content_url(c.id) }):up()
  end
  return xml.serialize(el)
end

-- Refuses an upload: counted, recorded in the store (the status command reports it), logged.
local function refuse(self, slot, status, reason)
  self.refused = self.refused + 1
  self.store:refused(slot.jid, slot.filename, reason)
  log.warn("refused the upload of %s from %s: %s", slot.filename, slot.jid, reason)
  return text_response(status, reason)
end

-- The document must be what the slot was for, and name its uploader as its producer: a
-- collector stores only its own posture, an evaluator only its own results.
local function accept_document(self, slot, body)
  local doc, perr = xml.parse(body, { max_bytes = self.max_size })
  if not doc then return refuse(self, slot, 400, "the upload is not well-formed XML: " .. tostring(perr)) end
  if doc.attr.id ~= slot.id then
    return refuse(self, slot, 400, ("the document's id '%s' is not the slot's '%s'"):format(tostring(doc.attr.id), slot.id))
  end
  local receipt, err
  local roles = self.roles_of(slot.bare)
  if doc.name == "posture-set" and doc.ns == proto.NS_POSTURE then
    if not roles.collector then
      return refuse(self, slot, 403, ("%s is not a collector of this grid: it may not store posture"):format(slot.bare))
    end
    local set, serr = payload.parse_posture_set(doc)
    if not set then return refuse(self, slot, 400, tostring(serr)) end
    if jidlib.bare(set.collector or "") ~= slot.bare then
      return refuse(self, slot, 403, ("posture set %s names collector '%s' but was uploaded by %s"):format(
        set.id, tostring(set.collector), slot.jid))
    end
    for _, p in ipairs(set.postures) do
      if jidlib.bare(p.collector or "") ~= slot.bare then
        return refuse(self, slot, 403, ("posture %s names collector '%s' but was uploaded by %s"):format(
          p.id, tostring(p.collector), slot.jid))
      end
      if p.collected > time.now() + proto.MAX_CLOCK_SKEW then
        return refuse(self, slot, 400, ("posture %s was collected %s, more than %d s ahead of the repository's clock"):format(
          p.id, time.format(p.collected), proto.MAX_CLOCK_SKEW))
      end
    end
    receipt, err = self.store:put_posture_set(set, slot.jid, slot.bare)
    if not receipt and err.condition == "forbidden" then return refuse(self, slot, 403, err.text) end
  elseif doc.name == "results" and doc.ns == proto.NS_RESULT then
    if not roles.evaluator then
      return refuse(self, slot, 403, ("%s is not an evaluator of this grid: it may not store results"):format(slot.bare))
    end
    local set, serr = payload.parse_result_set(doc)
    if not set then return refuse(self, slot, 400, tostring(serr)) end
    if set.ref then return refuse(self, slot, 400, "result set " .. set.id .. " is a reference, not content") end
    if jidlib.bare(set.evaluator or "") ~= slot.bare then
      return refuse(self, slot, 403, ("result set %s names evaluator '%s' but was uploaded by %s"):format(
        set.id, tostring(set.evaluator), slot.jid))
    end
    if set.evaluated > time.now() + proto.MAX_CLOCK_SKEW then
      return refuse(self, slot, 400, ("result set %s was evaluated %s, more than %d s ahead of the repository's clock")
        :format(set.id, time.format(set.evaluated), proto.MAX_CLOCK_SKEW))
    end
    -- results count only when judged on posture the repository holds: posture announced but never
    -- stored (a collector that skipped the upload) cannot turn into results
    local unproven = self.store:unproven_posture(set)
    if unproven then return refuse(self, slot, 403, unproven) end
    receipt, err = self.store:put_result_set(set, doc, slot.jid)
  else
    return refuse(self, slot, 415, ("a %s document in namespace %s is not grid content"):format(
      tostring(doc.name), tostring(doc.ns)))
  end
  if not receipt then
    log.error("could not store %s from %s: %s", slot.filename, slot.jid, tostring(err))
    return text_response(500, "the repository could not store the document: " .. tostring(err))
  end
  self.uploads = self.uploads + 1
  log.info("stored %s from %s: %d new, %d already stored", slot.filename, slot.jid, receipt.stored, receipt.duplicates)
  return receipt.stored > 0 and 201 or 200, { ["Content-Type"] = M.CONTENT_TYPE,
    Location = self:content_url(slot.id) }, receipt_document(self, receipt)
end

local function on_put(self, req, token, filename)
  local slot = self.slots[token]
  if not slot or slot.expires < time.monotonic() then
    if slot then release(self, token) end
    -- refused like any other upload, though who sent it is not known: the slot was the credential
    return refuse(self, slot or { jid = req.remote or "unknown", filename = filename }, 403,
      "no such upload slot, or it was used or expired: ask for a new one")
  end
  if filename ~= slot.filename then
    return refuse(self, slot, 403, "this slot is for " .. slot.filename .. ", not " .. filename)
  end
  if #req.body ~= slot.size then
    release(self, token)
    return refuse(self, slot, 400, ("the slot is for %d bytes, the body has %d"):format(slot.size, #req.body))
  end
  local ctype = req.headers["content-type"]
  if ctype and ctype:match("^[^;%s]+") ~= M.CONTENT_TYPE then
    release(self, token)
    return refuse(self, slot, 415, "Content-Type must be " .. M.CONTENT_TYPE)
  end
  release(self, token) -- one use: a retry asks for a new slot
  return accept_document(self, slot, req.body)
end

local function equal_constant_time(a, b)
  if #a ~= #b then return false end
  local diff = 0
  for i = 1, #a do diff = diff | (a:byte(i) ~ b:byte(i)) end
  return diff == 0
end

local function on_get(self, req, id)
  local key = req.query and req.query.key or ""
  -- a wrong key and an unknown id look the same: a key is all that makes the URL valid
  if not equal_constant_time(key, self.store:content_key(id)) then return text_response(404, "not found") end
  local text, digest = self.store:content(id)
  if not text then return text_response(404, "not found") end
  local etag = '"' .. digest .. '"'
  local headers = { ["Content-Type"] = M.CONTENT_TYPE, ETag = etag, ["Cache-Control"] = "private, max-age=31536000, immutable" }
  if req.headers["if-none-match"] == etag then return 304, headers, nil end
  return 200, headers, text
end

--- svc:handle(req) -> status, headers, body: the data plane's HTTP requests.
function Service:handle(req)
  local path = req.raw_path or ""
  local token, filename = path:match("^/grid/upload/(%x+)/([^/]+)$")
  if token then
    if req.method ~= "PUT" then return text_response(405, "upload with PUT", { Allow = "PUT" }) end
    return on_put(self, req, token, filename)
  end
  local id = path:match("^/grid/content/([%w%-]+)$")
  if id then
    if req.method ~= "GET" and req.method ~= "HEAD" then return text_response(405, "GET or HEAD", { Allow = "GET, HEAD" }) end
    return on_get(self, req, id)
  end
  return text_response(404, "not found")
end

--- svc:stats() -> {slots, uploads, refused}
function Service:stats()
  return { slots = self.outstanding, uploads = self.uploads, refused = self.refused }
end

--- upload_service.disco_form(max_size) -> the XEP-0128 form XEP-0363 section 3 describes.
function M.disco_form(max_size)
  return { form_type = proto.NS_UPLOAD, fields = { ["max-file-size"] = tostring(max_size) } }
end

--- upload_service.start(opts) -> service | nil, err
-- opts: member (the repository's sacm.grid.member), store (sacm.grid.store), listen (sacm.http
-- listen options), base_url (default https://<host>:<port> of the listener), max_size (largest
-- upload, bytes; default proto.UPLOAD_MAX), roles_of (function(bare_jid) -> the set of grid roles
-- the account was admitted as: only collectors store posture, only evaluators results).
function M.start(opts)
  assert(opts.member and opts.store and opts.roles_of, "upload_service.start needs member, store and roles_of")
  if type(opts.listen) ~= "table" then
    return nil, errors.new("bad-config", "the repository needs upload.listen: the HTTPS server (host, port, cert, key) "
      .. "collectors and evaluators upload to")
  end
  local self = setmetatable({ member = opts.member, store = opts.store, roles_of = opts.roles_of,
    max_size = opts.max_size or proto.UPLOAD_MAX, slots = {}, held = {}, outstanding = 0, uploads = 0, refused = 0 },
    Service)
  local listen = {}
  for k, v in pairs(opts.listen) do listen[k] = v end
  listen.limits = listen.limits or {}
  listen.limits.body = listen.limits.body or self.max_size
  local srv, err = http.listen(listen, function(req) return self:handle(req) end)
  if not srv then
    return nil, errors.new(err.condition or "bad-config", ("the repository's upload server on %s:%s: %s"):format(
      tostring(listen.host or "127.0.0.1"), tostring(listen.port), tostring(err)))
  end
  self.server = srv
  if opts.base_url then
    self.base_url = opts.base_url:gsub("/+$", "")
  else
    local host = srv.host
    if host == "0.0.0.0" or host == "::" then host = "localhost" end
    if host:find(":", 1, true) then host = "[" .. host .. "]" end
    self.base_url = ("https://%s:%d"):format(host, srv.port)
  end
  local conn = opts.member.conn
  self.handler = conn:on("iq", { type = "get", ns = proto.NS_UPLOAD, child = "request" }, function(s)
    return on_request(self, s)
  end)
  local disco = opts.member.disco
  disco:add_feature(proto.NS_UPLOAD)
  disco:add_extension(M.disco_form(self.max_size))
  log.info("upload service at %s (largest upload %d bytes)", self.base_url, self.max_size)
  return self
end

function Service:close()
  if self.closed then return end
  self.closed = true
  if self.handler then self.handler.remove() end
  if self.server then self.server:close() end
end
Service.__close = Service.close

return M
