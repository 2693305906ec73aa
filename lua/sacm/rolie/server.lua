--- sacm.rolie.server: a ROLIE provider (RFC 8322) serving a repository and a policy directory
-- over HTTPS (sacm.http). Routes, authorization, conditional GET and paging are here; the
-- documents are built by sacm.rolie.atom, sacm.rolie.opensearch and sacm.rolie.collections.
--
--   /                                   405 (RFC 8322 5.5)
--   /rolie/servicedocument              application/atomsvc+xml, the collections the client may read
--   /rolie/categories/COLLECTION        application/atomcat+xml
--   /rolie/opensearch/COLLECTION        application/opensearchdescription+xml
--   /rolie/WORKSPACE/COLLECTION         the feed (GET, with search and paging parameters); POST
--                                       adds a policy to public/policies
--   /rolie/WORKSPACE/COLLECTION/ID      the entry; ID.xml and ID.json its content (ID.lua for a policy)
--
-- Authorization is decided from the path alone, before anything is looked up, so a refused
-- request gets the same answer whether or not what it asked for exists: 401 with a Basic challenge
-- when it carried no identity, 403 when its identity may not (see docs/rolie.md).
local http = require "sacm.http"
local fs = require "sacm.fs"
local crypto = require "sacm.crypto"
local time = require "sacm.time"
local json = require "sacm.json"
local policy = require "sacm.policy"
local atom = require "sacm.rolie.atom"
local opensearch = require "sacm.rolie.opensearch"
local collections = require "sacm.rolie.collections"
local auth = require "sacm.rolie.auth"
local publish = require "sacm.rolie.publish"
local feed_cache = require "sacm.rolie.cache"
local payload = require "sacm.grid.payload"
local log = require("sacm.log").new("rolie")

local M = {}

M.PAGE_SIZE = 50
M.MAX_PAGE_SIZE = 500
-- rendered entries kept: the recently used ones survive, in two generations of this many
M.ENTRY_CACHE = 5000
-- finished feed pages kept until the store changes: two generations of this many bytes of body
M.FEED_CACHE_BYTES = 4 * 1024 * 1024

---@class sacm.rolie.Provider a serving ROLIE provider (rolie.serve)
---@field base_url string
---@field port integer
---@field server sacm.http.Server
local Provider = {}
Provider.__index = Provider

---------------------------------------------------------------------------- HTTP details

-- RFC 9110 13.1.2: weak comparison; "*" matches any current representation.
local function etag_matches(header, etag)
  if header == etag then return true end -- what a client sends back most of the time
  local bare = etag:gsub("^W/", "")
  for tag in header:gmatch("[^,]+") do
    tag = tag:match("^%s*(.-)%s*$"):gsub("^W/", "")
    if tag == "*" or tag == bare then return true end
  end
  return false
end

local function not_modified(req, etag, last_modified)
  local inm = req.headers["if-none-match"]
  if inm then return etag_matches(inm, etag) end -- If-Modified-Since is ignored when this is present
  local ims = http.parse_date(req.headers["if-modified-since"])
  return ims ~= nil and last_modified ~= nil and math.floor(last_modified) <= ims
end

local function text(status, message, headers)
  headers = headers or {}
  headers["Content-Type"] = "text/plain; charset=utf-8"
  return status, headers, (message or http.status_text(status)) .. "\n"
end

local function method_not_allowed(allow)
  return text(405, nil, { Allow = allow })
end

-- A body with its validators, worked out once: {body, ctype, etag, last_modified, last_modified_text}.
local function validated(ctype, body, last_modified)
  return { body = body, ctype = ctype, etag = '"' .. crypto.hex(crypto.sha256(body)):sub(1, 32) .. '"',
    last_modified = last_modified, last_modified_text = last_modified and http.date(last_modified) }
end

-- The answer for a validated body, 304 when the client's copy is current.
local function answer(req, who, v)
  local headers = {
    ["Content-Type"] = v.ctype,
    ETag = v.etag,
    Vary = "Authorization",
    -- shared caches must not hand one client's view to another
    ["Cache-Control"] = auth.anonymous(who) and "no-cache" or "private, no-cache",
    ["Last-Modified"] = v.last_modified_text,
  }
  if not_modified(req, v.etag, v.last_modified) then return 304, headers, nil end
  return 200, headers, v.body
end

-- A representation with validators, answered 304 when the client's copy is current.
local function represent(req, who, ctype, body, last_modified)
  return answer(req, who, validated(ctype, body, last_modified))
end

local function is_read(method) return method == "GET" or method == "HEAD" end

---------------------------------------------------------------------------- URLs

local function escape(s)
  return (s:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

function Provider:collection_url(c)
  return ("%s/rolie/%s/%s"):format(self.base_url, c.workspace, c.name)
end

-- the feed URL with the given filters (in the collection's order) and extra parameters
local function feed_link(url, filters, extra)
  local parts = {}
  for _, f in ipairs(filters) do parts[#parts + 1] = f end
  for _, f in ipairs(extra or {}) do parts[#parts + 1] = f end
  if #parts == 0 then return url end
  return url .. "?" .. table.concat(parts, "&")
end

---------------------------------------------------------------------------- documents

function Provider:deny(who)
  if auth.anonymous(who) then
    return text(401, "credentials required", { ["WWW-Authenticate"] = self.auth:challenge() })
  end
  return text(403)
end

function Provider:service_document(req, who)
  local workspaces = {}
  for _, w in ipairs(collections.WORKSPACES) do
    local list = {}
    for _, c in ipairs(collections.LIST) do
      if c.workspace == w.name and self:offers(c) and self.auth:allowed(who, c.workspace, c.name, "read") then
        local writable = #c.accept > 0 and self.auth:allowed(who, c.workspace, c.name, "write")
        list[#list + 1] = {
          href = self:collection_url(c), title = c.title, accept = writable and c.accept or {},
          categories = self:categories(c),
          links = { { rel = "related", href = self.base_url .. "/rolie/categories/" .. c.name, type = atom.TYPE_CATEGORIES } },
        }
      end
    end
    if #list > 0 then workspaces[#workspaces + 1] = { title = w.title, collections = list } end
  end
  return represent(req, who, atom.TYPE_SERVICE, atom.service(workspaces))
end

function Provider:categories(c)
  return collections.categories(c, self.information_types)
end

function Provider:offers(c)
  if c.name == "policies" then return self.engine ~= nil end
  return self.repository ~= nil
end

local function common_links(self, c)
  return {
    { rel = "service", href = self.base_url .. "/rolie/servicedocument", type = atom.TYPE_SERVICE },
    { rel = "search", href = self.base_url .. "/rolie/opensearch/" .. c.name, type = opensearch.TYPE },
  }
end

-- The feed of a repository collection: newest first, paged with the repository's cursors.
-- Without a cursor: the newest page. before=C: the page just older than C. after=C: the page just
-- newer than C (after=0 is the oldest page, RFC 5005's "last").
function Provider:repository_feed(req, who, c)
  local q = { type = c.query_type }
  local filters = {}
  for _, f in ipairs(c.filters) do
    local v = req.query[f]
    if v and v ~= "" then
      q[f] = v
      filters[#filters + 1] = f .. "=" .. escape(v)
    end
  end
  local max = math.tointeger(tonumber(q.max or self.page_size))
  if not max or max < 1 then return text(400, "max must be a positive integer") end
  q.max = math.min(max, M.MAX_PAGE_SIZE)
  local function cursor(name)
    local v = req.query[name]
    if v ~= nil and v ~= "" then return v end
  end
  q.before, q.after = cursor("before"), cursor("after")
  if not q.before and not q.after then q.newest = true end
  -- Finished pages are kept until the store changes (sacm.rolie.cache): the version is read
  -- before the query, so a write committed after this point makes the entry unreachable. The
  -- key is the normalized query (filters in the collection's order, escaped, the page size in
  -- effect, the cursors) and the access view; authorization was decided before this.
  local va, vb
  if self.repository.version then va, vb = self.repository:version() end
  local key
  if va then
    key = table.concat({ c.name, auth.anonymous(who) and "anonymous" or "identified", table.concat(filters, "&"),
      q.max, q.before and escape(q.before) or "", q.after and escape(q.after) or "" }, "\0")
    local hit = self.feed_cache:get(key, va, vb)
    if hit then return answer(req, who, hit) end
  end
  local page, err = self.repository:query(q)
  if not page then return text(err.condition == "bad-request" and 400 or 500, err.text) end
  local rows = page.rows
  local ascending = q.after ~= nil
  if ascending then -- shown newest first like every other page
    for i = 1, #rows // 2 do rows[i], rows[#rows + 1 - i] = rows[#rows + 1 - i], rows[i] end
  end
  local url = self:collection_url(c)
  local categories = self:categories(c)
  local entries, updated = {}, 0
  local cache = self.entry_cache
  for i, row in ipairs(rows) do
    -- stored rows never change, so their entries are rendered once
    local key = c.name .. "/" .. row.id
    local hit = cache.new[key] or cache.old[key]
    if not hit then
      local e = collections.entry_of(c, row, url, categories)
      hit = { text = atom.entry_element(e), updated = e.updated }
      cache.new[key] = hit
      cache.size = cache.size + 1
      if cache.size >= M.ENTRY_CACHE then cache.old, cache.new, cache.size = cache.new, {}, 0 end
    elseif not cache.new[key] then
      cache.new[key] = hit
      cache.size = cache.size + 1
      if cache.size >= M.ENTRY_CACHE then cache.old, cache.new, cache.size = cache.new, {}, 0 end
    end
    entries[i] = hit.text
    if hit.updated > updated then updated = hit.updated end
  end
  -- older rows exist beyond this page; newer rows exist before it
  local older, newer
  if ascending then older, newer = tonumber(q.after) ~= 0 and #rows > 0, page.next ~= nil
  else older, newer = page.next ~= nil, q.before ~= nil and #rows > 0 end
  local links = common_links(self, c)
  local function add(rel, extra) links[#links + 1] = { rel = rel, href = feed_link(url, filters, extra), type = atom.TYPE_FEED } end
  local self_extra = q.before and { "before=" .. escape(q.before) } or q.after and { "after=" .. escape(q.after) } or nil
  add("self", self_extra)
  add("first")
  add("last", { "after=0" })
  if older then add("next", { "before=" .. page.oldest }) end
  if newer then add("previous", { "after=" .. page.newest }) end
  local body = atom.feed({
    id = url, title = c.title, author = self.author, updated = updated, categories = categories,
    links = links, entries = entries,
  })
  local v = validated(atom.TYPE_FEED, body, updated > 0 and updated or nil)
  if key then self.feed_cache:put(key, v, va, vb) end
  return answer(req, who, v)
end

-- Policies with the mtime of their files; a file gone between the listing and stat is skipped.
function Provider:policy_list()
  local list = {}
  for _, p in ipairs(self.engine:policies()) do
    local st = fs.stat(self.policies_dir .. "/" .. p.file)
    if st then
      p.mtime = st.mtime
      list[#list + 1] = p
    end
  end
  return list
end

function Provider:policy_feed(req, who, c)
  local url = self:collection_url(c)
  local categories = self:categories(c)
  local entries, updated = {}, 0
  for i, p in ipairs(self:policy_list()) do
    entries[i] = collections.policy_entry(p, url, categories)
    if p.mtime > updated then updated = p.mtime end
  end
  local links = common_links(self, c)
  -- one page: the policy set is small, RFC 5005's first and last are the feed itself
  for _, rel in ipairs { "self", "first", "last" } do links[#links + 1] = { rel = rel, href = url, type = atom.TYPE_FEED } end
  local body = atom.feed({
    id = url, title = c.title, author = self.author, updated = updated, categories = categories,
    links = links, entries = entries,
  })
  return represent(req, who, atom.TYPE_FEED, body, updated > 0 and updated or nil)
end

local function split_id(seg)
  local id, ext = seg:match("^(.-)%.(%a+)$")
  if id and id ~= "" and (ext == "xml" or ext == "json" or ext == "lua" or ext == "xccdf" or ext == "arf") then
    return id, ext
  end
  return seg, nil
end

function Provider:repository_member(req, who, c, seg)
  local id, ext = split_id(seg)
  if ext == "lua" then return text(404) end
  local el = self.repository:get(id)
  local want = c.name == "posture" and "posture" or "result"
  if not el or el.name ~= want then return text(404) end
  local row, err
  if want == "posture" then
    row, err = payload.parse_posture(el)
    if row then
      row.collected = time.format(row.collected, 3)
      row.status = row.error and "error" or "ok"
    end
  else
    row, err = payload.parse_result(el)
    if row then row.rule, row.policy, row.evaluated = row.rule_id, row.policy_id, time.format(row.evaluated, 3) end
  end
  if not row then return text(500, "stored payload does not parse: " .. tostring(err)) end
  if ext == "xccdf" or ext == "arf" then
    if want ~= "result" then return text(404) end
    return self:assessment_export(req, who, el, ext)
  end
  local url = self:collection_url(c)
  local e = collections.entry_of(c, row, url, self:categories(c))
  if ext == "xml" then return represent(req, who, "application/xml", collections.payload_xml(el), e.updated) end
  if ext == "json" then
    local body, jerr = collections.payload_json(el)
    if not body then return text(500, tostring(jerr)) end
    return represent(req, who, "application/json", body, e.updated)
  end
  e.author = self.author
  return represent(req, who, atom.TYPE_ENTRY, atom.entry(e), e.updated)
end

-- A result's assessment (every result of its correlation id; the result alone without one) as
-- XCCDF or ARF, the rules described by this provider's policies (sacm.xccdf.export).
function Provider:assessment_export(req, who, el, format)
  local export = require "sacm.xccdf.export"
  local row = assert(payload.parse_result(el)) -- parsed by the caller already
  local results, err = { row }, nil
  if row.correlation then results, err = export.results_of(self.repository, row.correlation) end
  if not results then return text(500, "cannot read the assessment: " .. tostring(err and err.text or err)) end
  local body, rerr = export.render(format, results, { rules = self.engine:rules(), policies = self.engine:policies(),
    benchmark = { id = "sacmrun", title = "sacmrun assessment " .. tostring(row.correlation or row.id) } })
  if not body then return text(500, tostring(rerr and rerr.text or rerr)) end
  local updated = 0
  for _, r in ipairs(results) do if r.evaluated > updated then updated = r.evaluated end end
  return represent(req, who, "application/xml", body, updated)
end

function Provider:policy_member(req, who, c, seg)
  local id, ext = split_id(seg)
  local p
  for _, candidate in ipairs(self:policy_list()) do
    if candidate.id == id then p = candidate break end
  end
  if not p or ext == "xml" then return text(404) end
  if ext == "lua" then
    local body = fs.read(self.policies_dir .. "/" .. p.file, { max_bytes = policy.MAX_FILE_BYTES })
    if not body then return text(404) end
    return represent(req, who, collections.TYPE_LUA .. "; charset=utf-8", body, p.mtime)
  end
  if ext == "json" then
    local rules = {}
    for _, r in ipairs(self.engine:rules()) do
      if r.policy_id == p.id then
        rules[#rules + 1] = { id = r.rule_id, title = r.title, severity = r.severity, rationale = r.rationale,
          requires = json.as_array(r.requires) }
      end
    end
    local doc = { id = p.id, title = p.title, description = p.description, version = p.version, file = p.file,
      updated = time.format(p.mtime, 0), rules = json.as_array(rules) }
    return represent(req, who, "application/json", json.encode(doc, { indent = "  " }) .. "\n", p.mtime)
  end
  local e = collections.policy_entry(p, self:collection_url(c), self:categories(c))
  e.author = self.author
  return represent(req, who, atom.TYPE_ENTRY, atom.entry(e), p.mtime)
end

function Provider:post_policy(req, c)
  local policy_text, status, message = publish.policy_text(req)
  if not policy_text then return text(status, message) end
  local summary, perr
  summary, status, perr = publish.create(self.engine, self.policies_dir, policy_text, self.reserved)
  if not summary then return text(status, perr) end
  local url = self:collection_url(c)
  local e = collections.policy_entry({ id = summary.id, title = summary.title, description = summary.description,
    version = summary.version, mtime = time.now() }, url, self:categories(c))
  e.author = self.author
  log.info("policy %s (%d rules) added as %s", summary.id, #summary.rules, summary.file)
  local location = url .. "/" .. escape(summary.id)
  local body = atom.entry(e)
  return 201, {
    ["Content-Type"] = atom.TYPE_ENTRY, Location = location, ["Content-Location"] = location,
    ETag = validated(atom.TYPE_ENTRY, body).etag,
  }, body
end

---------------------------------------------------------------------------- routing

-- raw path -> list of decoded segments | nil (a path this server never serves: dot segments,
-- empty segments, encoded slashes or backslashes, anything that could climb out of a directory)
local function segments(raw)
  if raw:sub(1, 1) ~= "/" then return nil end
  local list = {}
  for seg in raw:sub(2):gmatch("([^/]*)") do list[#list + 1] = seg end
  if #list > 0 and list[#list] == "" then list[#list] = nil end -- one trailing slash
  for i, seg in ipairs(list) do
    local d = http.url_decode(seg)
    if d == "" or d == "." or d == ".." or d:find("[/\\%z%c]") then return nil end
    list[i] = d
  end
  return list
end

function Provider:handle(req)
  local segs = segments(req.raw_path)
  if not segs then return text(400, "malformed path") end
  if #segs == 0 then return method_not_allowed("") end -- RFC 8322 5.5: GET on "/" is 405
  if segs[1] ~= "rolie" then return text(404) end
  local who, err = self.auth:identify(req)
  if not who then
    return text(401, err.text, { ["WWW-Authenticate"] = self.auth:challenge() })
  end
  local n, s2, s3 = #segs, segs[2], segs[3]
  if n == 2 and s2 == "servicedocument" then
    if not is_read(req.method) then return method_not_allowed("GET, HEAD") end
    return self:service_document(req, who)
  end
  if n == 3 and (s2 == "categories" or s2 == "opensearch") then
    local c = collections.BY_NAME[s3]
    if not c or not self:offers(c) then return text(404) end
    if not is_read(req.method) then return method_not_allowed("GET, HEAD") end
    if not self.auth:allowed(who, c.workspace, c.name, "read") then return self:deny(who) end
    if s2 == "categories" then
      return represent(req, who, atom.TYPE_CATEGORIES, atom.categories(self:categories(c)))
    end
    return represent(req, who, opensearch.TYPE, opensearch.description({
      short_name = "sacmrun " .. c.name, description = c.title .. " of " .. self.base_url,
      feed_url = self:collection_url(c), filters = c.filters,
    }))
  end
  local c = n >= 3 and n <= 4 and collections.BY_NAME[s3]
  if not c or c.workspace ~= s2 or not self:offers(c) then return text(404) end
  if n == 3 and req.method == "POST" and #c.accept > 0 then
    if not self.auth:allowed(who, c.workspace, c.name, "write") then return self:deny(who) end
    return self:post_policy(req, c)
  end
  if not is_read(req.method) then
    return method_not_allowed(n == 3 and #c.accept > 0 and "GET, HEAD, POST" or "GET, HEAD")
  end
  if not self.auth:allowed(who, c.workspace, c.name, "read") then return self:deny(who) end
  if n == 3 then
    if c.name == "policies" then return self:policy_feed(req, who, c) end
    return self:repository_feed(req, who, c)
  end
  if c.name == "policies" then return self:policy_member(req, who, c, segs[4]) end
  return self:repository_member(req, who, c, segs[4])
end

---------------------------------------------------------------------------- the provider

local OPTIONS = { repository = true, policies_dir = true, listen = true, base_url = true, access = true,
  users = true, information_types = true, page_size = true, author = true, realm = true }

--- serve(opts) -> provider | nil, err. Must run in a task (it loads the policy directory).
-- See docs/api/rolie.md.
---@param opts {repository?: table, policies_dir?: string, listen: sacm.http.ListenOptions, base_url?: string, users?: table<string, string>, access?: table, information_types?: table<string, string>, page_size?: integer, author?: string, realm?: string}
---@return sacm.rolie.Provider? provider
---@return sacm.Error? err
function M.serve(opts)
  if type(opts) ~= "table" then error("rolie.serve: opts must be a table", 2) end
  for k in pairs(opts) do
    if not OPTIONS[k] then error("rolie.serve: unknown option " .. tostring(k), 2) end
  end
  if type(opts.listen) ~= "table" then error("rolie.serve: listen (the sacm.http listen options) is required", 2) end
  if not opts.repository and not opts.policies_dir then
    error("rolie.serve: give a repository, a policies_dir or both", 2)
  end
  local self = setmetatable({
    repository = opts.repository,
    policies_dir = opts.policies_dir and opts.policies_dir:gsub("(.)/+$", "%1"),
    information_types = opts.information_types,
    page_size = opts.page_size or M.PAGE_SIZE,
    author = opts.author or "sacmrun repository",
    reserved = {},
    entry_cache = { new = {}, old = {}, size = 0 },
    feed_cache = feed_cache.new(M.FEED_CACHE_BYTES),
  }, Provider)
  self.auth = auth.new({ users = opts.users, access = opts.access, realm = opts.realm })
  if self.policies_dir then
    self.engine = policy.engine({ dir = self.policies_dir })
    local report, err = self.engine:load_all()
    if not report then return nil, err end
    local ok, werr = self.engine:watch()
    if not ok then return nil, werr end
  end
  local srv, err = http.listen(opts.listen, function(req) return self:handle(req) end)
  if not srv then
    if self.engine then self.engine:close() end
    return nil, err
  end
  self.server, self.port = srv, srv.port
  if opts.base_url then
    self.base_url = opts.base_url:gsub("/+$", "")
  else
    local host = srv.host
    if host == "127.0.0.1" or host == "::1" or host == "0.0.0.0" or host == "::" then host = "localhost" end
    self.base_url = ("https://%s:%d"):format(host, srv.port)
  end
  log.info("ROLIE service document at %s/rolie/servicedocument", self.base_url)
  return self
end

--- provider:close(): stops serving and watching the policy directory. Idempotent.
---(no parameters, no results)
function Provider:close()
  if self.server then self.server:close() end
  if self.engine then self.engine:close() end
end
Provider.__close = require("sacm.error").closer(Provider.close)

function Provider:__tostring()
  return ("ROLIE provider on %s"):format(self.server and tostring(self.server) or "(not listening)")
end

return M
