--- sacm.grid.upload: a producer's and a reader's side of the data plane.
--
--   local up = upload.client(conn, { service = function() return repository_jid end, cafile = ... })
--   local receipt, err = up:upload(id, text)     -- XEP-0363 slot over XMPP, then HTTPS PUT
--   local text, err = up:fetch(ref)              -- GET a referenced document, size and digest checked
--
-- Errors are sacm.error values. An upload the repository refused (the document is wrong, too
-- large, or not ours to send) has err.permanent = true: sending it again cannot help. Anything
-- else (the repository is offline, the server restarts, a timeout) is worth retrying.
local http = require "sacm.http"
local xml = require "sacm.xml"
local st = require "sacm.xmpp.stanza"
local errors = require "sacm.error"
local proto = require "sacm.grid.protocol"
local payload = require "sacm.grid.payload"

local M = {}

M.TIMEOUT = 60 -- seconds for one slot request, upload or fetch

local Client = {}
Client.__index = Client

--- upload.client(conn, opts) -> client
-- opts: service (the upload service's full JID, or a function returning it or nil, err), cafile
-- (the CA the repository's HTTPS certificate chains to), cert, key (a client certificate, if the
-- repository asks for one), timeout (seconds, default M.TIMEOUT).
function M.client(conn, opts)
  return setmetatable({ conn = conn, service = opts.service, cafile = opts.cafile, cert = opts.cert,
    key = opts.key, timeout = opts.timeout or M.TIMEOUT }, Client)
end

local function permanent(condition, text)
  local e = errors.new(condition, text)
  e.permanent = true
  return e
end

local function service_jid(self)
  local s = self.service
  if type(s) == "function" then return s() end
  if type(s) ~= "string" then return nil, errors.new("item-not-found", "no repository is configured to upload to") end
  return s
end

-- XEP-0363: asks for a slot; returns {put = url, headers = {...}} | nil, err
function Client:slot(filename, size)
  local to, jerr = service_jid(self)
  if not to then return nil, jerr end
  local iq = st.iq({ type = "get", to = to })
  iq:tag("request", { xmlns = proto.NS_UPLOAD, filename = filename, size = tostring(size),
    ["content-type"] = "application/xml" }):up()
  local reply, err = self.conn:iq(iq, self.timeout)
  if not reply then
    local what = ("upload slot for %s (%d bytes) from %s"):format(filename, size, to)
    if err.condition == "not-acceptable" or err.condition == "bad-request" then
      return nil, permanent(err.condition, what .. ": " .. tostring(err.text or err))
    end
    return nil, errors.new(err.condition or "remote-server-timeout", what .. ": " .. tostring(err.text or err))
  end
  local slot = reply:child("slot", proto.NS_UPLOAD)
  local put = slot and slot:child("put", proto.NS_UPLOAD)
  if not put or type(put.attr.url) ~= "string" then
    return nil, errors.new("bad-response", ("%s answered a slot request without a put URL"):format(to))
  end
  local headers = {}
  for h in put:children("header", proto.NS_UPLOAD) do
    -- XEP-0363 section 5: only these may be passed on
    local name = (h.attr.name or ""):lower()
    if name == "authorization" or name == "cookie" or name == "expires" then headers[name] = h:get_text() end
  end
  return { put = put.attr.url, headers = headers }
end

local function tls_options(self, t)
  t.cafile, t.cert, t.key, t.timeout = self.cafile, self.cert, self.key, self.timeout
  return t
end

--- upload.parse_receipt(text, where) -> receipt | nil, err: the repository's answer to an upload.
function M.parse_receipt(body, url)
  local el = xml.parse(body or "")
  if not el or el.name ~= "receipt" or el.ns ~= proto.NS_GRID then
    return nil, errors.new("bad-response", url .. " answered the upload without a receipt")
  end
  local receipt = { id = el.attr.id, text = body, stored = tonumber(el.attr.stored) or 0,
    duplicates = tonumber(el.attr.duplicates) or 0, contents = {}, by_id = {} }
  for c in el:children("content", proto.NS_GRID) do
    local size = math.tointeger(tonumber(c.attr.size or ""))
    local digest = (c.attr.digest or ""):match("^sha%-256:(%x+)$")
    if not (c.attr.id and c.attr.href and size and digest) then
      return nil, errors.new("bad-response", url .. " sent a receipt entry without id, href, size or digest")
    end
    local entry = { id = c.attr.id, href = c.attr.href, size = size, digest = digest:lower() }
    receipt.contents[#receipt.contents + 1] = entry
    receipt.by_id[entry.id] = entry
  end
  return receipt
end

--- client:upload(id, text) -> receipt {id, stored, duplicates, contents = {{id, href, size,
-- digest}}, by_id} | nil, err. The repository has committed the document when this returns.
function Client:upload(id, text)
  local filename = id .. ".xml"
  local slot, err = self:slot(filename, #text)
  if not slot then return nil, err end
  local headers = { ["content-type"] = "application/xml" }
  for k, v in pairs(slot.headers) do headers[k] = v end
  local res
  res, err = http.request(tls_options(self, { url = slot.put, method = "PUT", headers = headers, body = text }))
  if not res then
    return nil, errors.new(err.condition or "connection-lost", ("upload of %s to %s: %s"):format(filename,
      slot.put:match("^https://[^/]+") or slot.put, tostring(err.text or err)))
  end
  if res.status == 200 or res.status == 201 then return M.parse_receipt(res.body, slot.put) end
  local reason = ("the repository answered the upload of %s with %d %s: %s"):format(filename, res.status,
    res.reason or "", (res.body or ""):gsub("%s+$", ""))
  if res.status >= 400 and res.status < 500 and res.status ~= 408 and res.status ~= 429 then
    return nil, permanent("upload-refused", reason)
  end
  return nil, errors.new("remote-server-error", reason)
end

--- client:fetch(ref) -> text | nil, err. ref: {href, size, digest} from a notification; the
-- document is accepted only if it has that size and SHA-256 digest.
function Client:fetch(ref)
  local res, err = http.request(tls_options(self, { url = ref.href, max_body = ref.size }))
  if not res then
    return nil, errors.new(err.condition or "connection-lost", ("fetching %s: %s"):format(
      ref.href:gsub("%?.*$", ""), tostring(err.text or err)))
  end
  local where = ref.href:gsub("%?.*$", "")
  if res.status ~= 200 then
    return nil, errors.new(res.status == 404 and "item-not-found" or "remote-server-error",
      ("fetching %s: %d %s"):format(where, res.status, res.reason or ""))
  end
  if #res.body ~= ref.size or payload.digest(res.body) ~= ref.digest then
    return nil, errors.new("bad-response", ("%s is not the document announced (%d bytes, sha-256 %s...): got %d bytes "
      .. "with another digest"):format(where, ref.size, ref.digest:sub(1, 12), #res.body))
  end
  return res.body
end

--- client:fetch_element(ref) -> the fetched document parsed (size and digest checked, memory
-- bounded by its announced size) | nil, err.
function Client:fetch_element(ref)
  local text, err = self:fetch(ref)
  if not text then return nil, err end
  local el, perr = xml.parse(text, { max_bytes = ref.size })
  if not el then
    return nil, errors.new("bad-response", ("%s is not well-formed XML: %s"):format(ref.href:gsub("%?.*$", ""), tostring(perr)))
  end
  return el
end

return M
