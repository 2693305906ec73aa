--- sacm.rolie.atom: the XML documents of a ROLIE provider (RFC 8322):
-- Atom feeds and entries (RFC 4287, paged as in RFC 5005), AtomPub service and category
-- documents (RFC 5023), as text. What goes into them (collections, rows, links) is the caller's
-- business; this file only knows the vocabularies.
local time = require "sacm.time"

local M = {}

M.NS_ATOM = "http://www.w3.org/2005/Atom"
M.NS_APP = "http://www.w3.org/2007/app"
M.NS_ROLIE = "urn:ietf:params:xml:ns:rolie-1.0"
-- RFC 8322 section 7.1: the category scheme naming a collection's information type
M.SCHEME_INFORMATION_TYPE = "urn:ietf:params:rolie:category:information-type"

M.TYPE_FEED = "application/atom+xml;type=feed"
M.TYPE_ENTRY = "application/atom+xml;type=entry"
M.TYPE_SERVICE = "application/atomsvc+xml"
M.TYPE_CATEGORIES = "application/atomcat+xml"

local DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'

-- Documents are written as text, so that an entry rendered once can be kept and spliced into
-- every feed page that shows it (server.lua caches them; bench/rolie.sh). The output is what
-- sacm.xml would write; values that XML cannot carry (invalid UTF-8, control
-- characters, as a policy's title might hold) are replaced rather than raised on, since they
-- come from files and the network.
local ESCAPES = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["\t"] = "&#9;",
  ["\n"] = "&#10;", ["\r"] = "&#13;" }
local REPLACEMENT = "\u{FFFD}"

local function clean(v)
  local s = tostring(v)
  if not utf8.len(s) then
    local out = {}
    while true do
      local n, bad = utf8.len(s)
      if n then break end
      out[#out + 1] = s:sub(1, bad - 1) .. REPLACEMENT
      s = s:sub(bad + 1)
    end
    out[#out + 1] = s
    s = table.concat(out)
  end
  return (s:gsub("[%z\1-\8\11\12\14-\31]", REPLACEMENT):gsub("\xEF\xBF[\xBE\xBF]", REPLACEMENT))
end

-- most values (ids, URLs, dates) are plain ASCII and need nothing: find that out with one scan
local function text(v)
  if type(v) == "string" and not v:find('[%c&<>"\128-\255]') then return v end
  return (clean(v):gsub("[&<>\r]", ESCAPES))
end
local function attr(v)
  if type(v) == "string" and not v:find('[%c&<>"\128-\255]') then return v end
  return (clean(v):gsub('[&<>"\t\n\r]', ESCAPES))
end
M.escape_text, M.escape_attr = text, attr

-- <name a="v" .../> or <name ...> with attributes in the order given ({name, value} pairs;
-- nil values skipped)
local function open(out, name, attrs, empty)
  out[#out + 1] = "<" .. name
  for i = 1, #attrs, 2 do
    local v = attrs[i + 1]
    if v ~= nil then out[#out + 1] = " " .. attrs[i] .. '="' .. attr(v) .. '"' end
  end
  out[#out + 1] = empty and "/>" or ">"
end

local function leaf(out, name, value, attrs)
  open(out, name, attrs or {}, false)
  out[#out + 1] = text(value)
  out[#out + 1] = "</" .. name .. ">"
end

--- date(seconds) -> an RFC 3339 date-time (Atom's atom:updated), UTC, whole seconds.
function M.date(t)
  return time.format(t or 0, 0)
end

local function add_category(out, c, xmlns)
  open(out, "category", { "xmlns", xmlns, "label", c.label, "scheme", c.scheme, "term", c.term }, true)
end

local function add_link(out, l, xmlns)
  open(out, "link", { "xmlns", xmlns, "href", l.href, "rel", l.rel, "title", l.title, "type", l.type }, true)
end

local function add_entry(out, e, xmlns)
  open(out, "entry", { "xmlns", xmlns }, false)
  leaf(out, "id", e.id)
  leaf(out, "title", e.title, { "type", "text" })
  leaf(out, "updated", M.date(e.updated))
  if e.published then leaf(out, "published", M.date(e.published)) end
  if e.author then
    out[#out + 1] = "<author>"
    leaf(out, "name", e.author)
    out[#out + 1] = "</author>"
  end
  for _, c in ipairs(e.categories or {}) do add_category(out, c) end
  for _, l in ipairs(e.links or {}) do add_link(out, l) end
  if e.summary then leaf(out, "summary", e.summary, { "type", "text" }) end
  open(out, "content", { "src", e.content.src, "type", e.content.type }, true)
  open(out, "format", { "xmlns", M.NS_ROLIE, "ns", e.format.ns, "version", e.format.version }, true)
  out[#out + 1] = "</entry>"
end

--- entry_element(e) -> the atom:entry element as text for a feed (no declaration, no xmlns):
-- what feed() accepts in place of an entry table, so a caller may cache it.
function M.entry_element(e)
  local out = {}
  add_entry(out, e)
  return table.concat(out)
end

--- entry(e) -> an Atom entry document (text).
-- e: id (IRI), title, updated (seconds), published (seconds, optional), summary, author (name),
-- categories = {{scheme, term, label}}, links = {{rel, href, type, title}},
-- content = {type, src} (RFC 8322 6.2.2: out of line, so the entry stays small),
-- format = {ns, version} (RFC 8322 6.2.4, rolie:format).
function M.entry(e)
  local out = { DECLARATION }
  add_entry(out, e, M.NS_ATOM)
  out[#out + 1] = "\n"
  return table.concat(out)
end

--- feed(f) -> an Atom feed document (text).
-- f: id, title, subtitle, updated (seconds), author (name; every entry is attributed to it),
-- categories, links (service and search first, then self, first, last, next, previous, ...),
-- entries (tables as for entry(), or the text of entry_element()).
function M.feed(f)
  local out = { DECLARATION }
  open(out, "feed", { "xmlns", M.NS_ATOM }, false)
  leaf(out, "id", f.id)
  leaf(out, "title", f.title, { "type", "text" })
  if f.subtitle then leaf(out, "subtitle", f.subtitle, { "type", "text" }) end
  leaf(out, "updated", M.date(f.updated))
  out[#out + 1] = "<author>"
  leaf(out, "name", f.author)
  out[#out + 1] = "</author><generator>sacmrun</generator>"
  for _, c in ipairs(f.categories or {}) do add_category(out, c) end
  for _, l in ipairs(f.links or {}) do add_link(out, l) end
  for _, e in ipairs(f.entries or {}) do
    if type(e) == "string" then out[#out + 1] = e else add_entry(out, e) end
  end
  out[#out + 1] = "</feed>\n"
  return table.concat(out)
end

--- service(workspaces) -> an AtomPub service document (text).
-- workspaces: {{title, collections = {{href, title, accept = {media types} (empty: read-only),
-- categories = {...}, links = {...}}}}}
function M.service(workspaces)
  local out = { DECLARATION, '<service xmlns="', M.NS_APP, '" xmlns:atom="', M.NS_ATOM, '">' }
  for _, w in ipairs(workspaces) do
    out[#out + 1] = "<workspace>"
    leaf(out, "atom:title", w.title, { "type", "text" })
    for _, c in ipairs(w.collections) do
      open(out, "collection", { "href", c.href }, false)
      leaf(out, "atom:title", c.title, { "type", "text" })
      if #c.accept == 0 then
        out[#out + 1] = "<accept/>" -- RFC 5023 8.3.4: an empty accept means no POST
      else
        for _, a in ipairs(c.accept) do leaf(out, "accept", a) end
      end
      -- RFC 8322 5.1.2: the same categories as the feed, inline
      out[#out + 1] = '<categories fixed="yes">'
      for _, cat in ipairs(c.categories) do add_category(out, cat, M.NS_ATOM) end
      out[#out + 1] = "</categories>"
      for _, l in ipairs(c.links or {}) do add_link(out, l, M.NS_ATOM) end
      out[#out + 1] = "</collection>"
    end
    out[#out + 1] = "</workspace>"
  end
  out[#out + 1] = "</service>\n"
  return table.concat(out)
end

--- categories(list [, scheme]) -> an AtomPub category document (text), fixed="yes".
function M.categories(list, scheme)
  local out = { DECLARATION }
  open(out, "categories", { "xmlns", M.NS_APP, "xmlns:atom", M.NS_ATOM, "fixed", "yes", "scheme", scheme }, false)
  for _, c in ipairs(list) do add_category(out, c, M.NS_ATOM) end
  out[#out + 1] = "</categories>\n"
  return table.concat(out)
end

return M
