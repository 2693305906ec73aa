--- sacm.rolie.atom: the XML documents of a ROLIE provider (RFC 8322), built with sacm.xml:
-- Atom feeds and entries (RFC 4287, paged as in RFC 5005), AtomPub service and category
-- documents (RFC 5023). What goes into them (collections, rows, links) is the caller's business;
-- this file only knows the vocabularies.
local xml = require "sacm.xml"
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

--- document(el) -> the element as a UTF-8 XML document (with declaration).
function M.document(el)
  return DECLARATION .. xml.serialize(el) .. "\n"
end

--- date(seconds) -> an RFC 3339 date-time (Atom's atom:updated), UTC, whole seconds.
function M.date(t)
  return time.format(t or 0, 0)
end

local function add_category(el, c)
  el:tag("category", { xmlns = M.NS_ATOM, scheme = c.scheme, term = c.term, label = c.label }):up()
end

local function add_link(el, l)
  el:tag("link", { xmlns = M.NS_ATOM, rel = l.rel, href = l.href, type = l.type, title = l.title }):up()
end

--- entry(e [, standalone]) -> <atom:entry> element.
-- e: id (IRI), title, updated (seconds), published (seconds, optional), summary, author (name),
-- categories = {{scheme, term, label}}, links = {{rel, href, type, title}},
-- content = {type, src} (RFC 8322 6.2.2: out of line, so the entry stays small),
-- format = {ns, version} (RFC 8322 6.2.4, rolie:format).
function M.entry(e)
  local el = xml.element("entry", { xmlns = M.NS_ATOM })
  el:tag("id"):text(e.id):up()
  el:tag("title", { type = "text" }):text(e.title):up()
  el:tag("updated"):text(M.date(e.updated)):up()
  if e.published then el:tag("published"):text(M.date(e.published)):up() end
  if e.author then el:tag("author"):tag("name"):text(e.author):up():up() end
  for _, c in ipairs(e.categories or {}) do add_category(el, c) end
  for _, l in ipairs(e.links or {}) do add_link(el, l) end
  if e.summary then el:tag("summary", { type = "text" }):text(e.summary):up() end
  el:tag("content", { type = e.content.type, src = e.content.src }):up()
  el:tag("format", { xmlns = M.NS_ROLIE, ns = e.format.ns, version = e.format.version }):up()
  return el
end

--- feed(f) -> <atom:feed> element.
-- f: id, title, subtitle, updated (seconds), author (name; every entry is attributed to it),
-- categories, links (self, service, search, first, last, next, previous, ...), entries (as for
-- entry()).
function M.feed(f)
  local el = xml.element("feed", { xmlns = M.NS_ATOM })
  el:tag("id"):text(f.id):up()
  el:tag("title", { type = "text" }):text(f.title):up()
  if f.subtitle then el:tag("subtitle", { type = "text" }):text(f.subtitle):up() end
  el:tag("updated"):text(M.date(f.updated)):up()
  el:tag("author"):tag("name"):text(f.author):up():up()
  el:tag("generator"):text("sacmrun"):up()
  for _, c in ipairs(f.categories or {}) do add_category(el, c) end
  for _, l in ipairs(f.links or {}) do add_link(el, l) end
  for _, e in ipairs(f.entries or {}) do el:add(M.entry(e)) end
  return el
end

--- service(workspaces) -> <app:service> element.
-- workspaces: {{title, collections = {{href, title, accept = {media types} (empty: read-only),
-- categories = {...}, links = {...}}}}}
function M.service(workspaces)
  local el = xml.element("service", { xmlns = M.NS_APP })
  for _, w in ipairs(workspaces) do
    el:tag("workspace")
    el:tag("title", { xmlns = M.NS_ATOM, type = "text" }):text(w.title):up()
    for _, c in ipairs(w.collections) do
      el:tag("collection", { href = c.href })
      el:tag("title", { xmlns = M.NS_ATOM, type = "text" }):text(c.title):up()
      if #c.accept == 0 then
        el:tag("accept"):up() -- RFC 5023 8.3.4: an empty accept means no POST
      else
        for _, a in ipairs(c.accept) do el:tag("accept"):text(a):up() end
      end
      -- RFC 8322 5.1.2: the same categories as the feed, inline
      el:tag("categories", { fixed = "yes" })
      for _, cat in ipairs(c.categories) do add_category(el, cat) end
      el:up()
      for _, l in ipairs(c.links or {}) do add_link(el, l) end
      el:up()
    end
    el:up()
  end
  return el
end

--- categories(list [, scheme]) -> <app:categories fixed="yes"> element (a category document).
function M.categories(list, scheme)
  local el = xml.element("categories", { xmlns = M.NS_APP, fixed = "yes", scheme = scheme })
  for _, c in ipairs(list) do add_category(el, c) end
  return el
end

return M
