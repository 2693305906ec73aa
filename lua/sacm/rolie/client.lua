--- sacm.rolie.client: read another ROLIE provider (RFC 8322) from a playbook: discover its
-- collections through the service document, read feeds following RFC 5005 paging, fetch entries
-- and their content, and POST new members.
--
--   local client = require "sacm.rolie.client"
--   local c = client.new{ url = "https://repo.example:8443", cafile = "ca.pem", user = "alice", password = pw }
--   local cols = assert(c:collections{ information_type = "unknown", title = "Policies" })
--   for entry in c:entries(cols[1].href) do print(entry.title, entry.content.src) end
local http = require "sacm.http"
local xml = require "sacm.xml"
local crypto = require "sacm.crypto"
local errors = require "sacm.error"
local time = require "sacm.time"
local atom = require "sacm.rolie.atom"

local M = {}

M.MAX_PAGES = 1000 -- a feed whose next links go on longer than this is refused (a loop, or hostile)

---@class sacm.rolie.ClientOptions
---@field url string the provider's base URL or its service document's
---@field cafile? string
---@field cert? string
---@field key? string
---@field insecure? boolean
---@field timeout? number
---@field max_body? integer
---@field user? string HTTP Basic
---@field password? string
---@class sacm.rolie.Client a client of a ROLIE provider (rolie.client)
---@field service_url string
local Client = {}
Client.__index = Client
function Client:__tostring() return "ROLIE client for " .. self.service_url end -- never its credentials

--- new{url, cafile, cert, key, insecure, timeout, max_body, user, password} -> client.
-- url: the provider's base URL ("https://host:port") or its service document's URL.
---@param opts sacm.rolie.ClientOptions
---@return sacm.rolie.Client
function M.new(opts)
  if type(opts) ~= "table" or type(opts.url) ~= "string" then error("rolie.client.new: url is required", 2) end
  local url = opts.url:gsub("/+$", "")
  local service = url:find("/rolie/servicedocument$") and url or url .. "/rolie/servicedocument"
  local self = setmetatable({ service_url = service, tls = {
    cafile = opts.cafile, cert = opts.cert, key = opts.key, insecure = opts.insecure,
    timeout = opts.timeout, max_body = opts.max_body,
  } }, Client)
  if opts.user then
    self.authorization = "Basic " .. crypto.base64_encode(opts.user .. ":" .. (opts.password or ""))
  end
  return self
end

--- client:request(method, url [, headers [, body]]) -> res | nil, err. Any status is a result.
---@param method string
---@param url string
---@param headers? table<string, string>
---@param body? string
---@return sacm.http.Response? res any status
---@return sacm.Error? err
function Client:request(method, url, headers, body)
  local h = {}
  for k, v in pairs(headers or {}) do h[k] = v end
  if self.authorization then h.Authorization = self.authorization end
  local o = { method = method, url = url, headers = h, body = body }
  for k, v in pairs(self.tls) do o[k] = v end
  return http.request(o)
end

-- GET that wants a 200 and a body of one of the expected media types.
---@param url string
---@param accept string the media types wanted
---@return sacm.http.Response? res a 200 with a body
---@return sacm.Error? err not-authorized | forbidden | item-not-found | bad-response
function Client:get(url, accept)
  local res, err = self:request("GET", url, { Accept = accept })
  if not res then return nil, err end
  if res.status ~= 200 then
    local condition = ({ [401] = "not-authorized", [403] = "forbidden", [404] = "item-not-found" })[res.status]
      or "bad-response"
    return nil, errors.new(condition, ("GET %s: %d %s"):format(url, res.status, res.reason or ""), { status = res.status })
  end
  return res
end

local function parse(body, url, name, ns)
  local el, err = xml.parse(body)
  if not el then return nil, errors.new("bad-format", ("%s: %s"):format(url, tostring(err))) end
  if el.name ~= name or el.ns ~= ns then
    return nil, errors.new("bad-format", ("%s: expected %s, got %s"):format(url, name, el.name))
  end
  return el
end

local function categories_of(el)
  local list = {}
  for c in el:children("category", atom.NS_ATOM) do
    list[#list + 1] = { scheme = c.attr.scheme, term = c.attr.term, label = c.attr.label }
  end
  return list
end

local function information_type(categories)
  for _, c in ipairs(categories) do
    if c.scheme == atom.SCHEME_INFORMATION_TYPE then return c.term end
  end
end

local function links_of(el)
  local list, by_rel = {}, {}
  for l in el:children("link", atom.NS_ATOM) do
    local link = { rel = l.attr.rel or "alternate", href = l.attr.href, type = l.attr.type, title = l.attr.title }
    list[#list + 1] = link
    by_rel[link.rel] = by_rel[link.rel] or link.href
  end
  return list, by_rel
end

local function text_of(el, name)
  local c = el:child(name, atom.NS_ATOM)
  return c and c:get_text() or nil
end

--- client:service() -> {workspaces = {{title, collections = {{title, href, accept = {...},
-- categories = {...}, information_type}}}}} | nil, err
---@return {workspaces: table[]}? service
---@return sacm.Error? err
function Client:service()
  local res, err = self:get(self.service_url, atom.TYPE_SERVICE)
  if not res then return nil, err end
  local el, perr = parse(res.body, self.service_url, "service", atom.NS_APP)
  if not el then return nil, perr end
  local out = { workspaces = {} }
  for w in el:children("workspace", atom.NS_APP) do
    local ws = { title = text_of(w, "title"), collections = {} }
    for c in w:children("collection", atom.NS_APP) do
      local col = { title = text_of(c, "title"), href = c.attr.href, accept = {}, categories = {} }
      for a in c:children("accept", atom.NS_APP) do
        if a:get_text() ~= "" then col.accept[#col.accept + 1] = a:get_text() end
      end
      for cats in c:children("categories", atom.NS_APP) do
        for _, cat in ipairs(categories_of(cats)) do col.categories[#col.categories + 1] = cat end
      end
      col.information_type = information_type(col.categories)
      -- RFC 8322 5.1.2: without an information-type category it is not a ROLIE collection
      if col.href and col.information_type then ws.collections[#ws.collections + 1] = col end
    end
    out.workspaces[#out.workspaces + 1] = ws
  end
  return out
end

--- client:collections([filter]) -> list of collections (as in service()) | nil, err.
-- filter: information_type, title, workspace (titles), writable (accepts POSTs).
---@param filter? {information_type?: string, title?: string, workspace?: string, writable?: boolean}
---@return table[]? collections
---@return sacm.Error? err
function Client:collections(filter)
  filter = filter or {}
  local s, err = self:service()
  if not s then return nil, err end
  local list = {}
  for _, w in ipairs(s.workspaces) do
    for _, c in ipairs(w.collections) do
      if (not filter.information_type or c.information_type == filter.information_type)
        and (not filter.title or c.title == filter.title)
        and (not filter.workspace or w.title == filter.workspace)
        and (not filter.writable or #c.accept > 0) then
        c.workspace = w.title
        list[#list + 1] = c
      end
    end
  end
  return list
end

local function entry_of(el)
  local links, by_rel = links_of(el)
  local content = el:child("content", atom.NS_ATOM)
  local format = el:child("format", atom.NS_ROLIE)
  local categories = categories_of(el)
  return {
    id = text_of(el, "id"), title = text_of(el, "title"), summary = text_of(el, "summary"),
    updated = time.parse(text_of(el, "updated") or ""),
    links = links, link = by_rel, categories = categories, information_type = information_type(categories),
    content = content and { type = content.attr.type, src = content.attr.src, text = not content.attr.src and content:get_text() or nil },
    format = format and { ns = format.attr.ns, version = format.attr.version },
  }
end

--- client:feed(url) -> {id, title, updated, links, link = {rel = href}, categories,
-- information_type, entries = {...}} | nil, err. One page; link.next is the following one.
---@param url string
---@return table? feed id, title, updated, links, link, categories, information_type, entries
---@return sacm.Error? err
function Client:feed(url)
  local res, err = self:get(url, atom.TYPE_FEED)
  if not res then return nil, err end
  local el, perr = parse(res.body, url, "feed", atom.NS_ATOM)
  if not el then return nil, perr end
  local links, by_rel = links_of(el)
  local categories = categories_of(el)
  local f = { id = text_of(el, "id"), title = text_of(el, "title"), updated = time.parse(text_of(el, "updated") or ""),
    links = links, link = by_rel, categories = categories, information_type = information_type(categories),
    entries = {}, etag = res.headers.etag }
  for e in el:children("entry", atom.NS_ATOM) do f.entries[#f.entries + 1] = entry_of(e) end
  return f
end

--- client:entries(url [, opts]) -> iterator over every entry of the feed, following rel="next"
-- from page to page (opts.max_pages, default M.MAX_PAGES). A failing page raises from the
-- iterator as an error value; use client:each for nil, err.
---@param url string
---@param opts? {max_pages?: integer}
---@return fun(): table? iterator raises an error value when a page fails
function Client:entries(url, opts)
  local pages, seen = 0, {}
  local max_pages = opts and opts.max_pages or M.MAX_PAGES
  local page, i = nil, 0
  local next_url = url
  return function()
    while true do
      if page and i < #page.entries then
        i = i + 1
        return page.entries[i]
      end
      if not next_url then return nil end
      if seen[next_url] or pages >= max_pages then
        error(errors.new("bad-response", "feed paging loops or exceeds " .. max_pages .. " pages at " .. next_url), 0)
      end
      seen[next_url] = true
      pages = pages + 1
      local err
      page, err = self:feed(next_url)
      if not page then error(err, 0) end
      i, next_url = 0, page.link.next
    end
  end
end

--- client:each(url, fn [, opts]) -> count | nil, err: fn(entry) for every entry of every page.
---@param url string
---@param fn fun(entry: table)
---@param opts? {max_pages?: integer}
---@return integer? count
---@return sacm.Error? err
function Client:each(url, fn, opts)
  local n = 0
  local ok, err = pcall(function()
    for e in self:entries(url, opts) do
      n = n + 1
      fn(e)
    end
  end)
  if not ok then return nil, errors.is(err) and err or errors.new("bad-response", errors.message(err)) end
  return n
end

--- client:entry(url) -> entry | nil, err: an entry document (the href of its rel="self" link).
---@param url string
---@return table? entry
---@return sacm.Error? err
function Client:entry(url)
  local res, err = self:get(url, atom.TYPE_ENTRY)
  if not res then return nil, err end
  local el, perr = parse(res.body, url, "entry", atom.NS_ATOM)
  if not el then return nil, perr end
  return entry_of(el)
end

--- client:content(entry [, media_type]) -> body, content_type | nil, err.
-- Without media_type: the entry's atom:content. With one (e.g. "application/json"): the
-- alternate link of that type, or the content when it has that type.
---@param entry table
---@param media_type? string
---@return string? body
---@return string|sacm.Error|nil content_type, or err
function Client:content(entry, media_type)
  local url
  if entry.content and (not media_type or entry.content.type == media_type) then
    if entry.content.text then return entry.content.text, entry.content.type end
    url = entry.content.src
  else
    for _, l in ipairs(entry.links) do
      if l.rel == "alternate" and l.type == media_type then url = l.href break end
    end
  end
  if not url then
    return nil, errors.new("item-not-found", ("entry %s has no %s content"):format(tostring(entry.id), media_type or ""))
  end
  local res, err = self:get(url, media_type or entry.content.type)
  if not res then return nil, err end
  return res.body, res.headers["content-type"]
end

--- client:post(collection_href, body, content_type [, slug]) -> location, entry | nil, err.
-- A new member (RFC 5023 9.2); for a sacmrun provider's policies collection, a policy file as
-- "application/x-lua". err.status is the HTTP status; err.text has the server's reason.
---@param href string the collection's
---@param body string
---@param content_type string
---@param slug? string
---@return string? location
---@return table|sacm.Error|nil entry, or err (err.status: the HTTP status)
function Client:post(href, body, content_type, slug)
  local res, err = self:request("POST", href, { ["Content-Type"] = content_type, Slug = slug }, body)
  if not res then return nil, err end
  if res.status ~= 201 then
    local condition = ({ [400] = "bad-request", [401] = "not-authorized", [403] = "forbidden", [409] = "conflict",
      [413] = "policy-violation", [415] = "bad-request" })[res.status] or "bad-response"
    return nil, errors.new(condition, ("POST %s: %d %s"):format(href, res.status, (res.body or ""):gsub("%s+$", "")),
      { status = res.status })
  end
  local entry
  local el = xml.parse(res.body or "")
  if el and el.name == "entry" and el.ns == atom.NS_ATOM then entry = entry_of(el) end
  return res.headers.location, entry
end

return M
