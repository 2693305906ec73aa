--- sacm.rolie.opensearch: the OpenSearch 1.1 description document of a collection (RFC 8322
-- section 6.1.3 and 7: a feed's rel="search" link points to it).
--
-- The template's parameters are namespace-qualified, as RFC 8322 asks: the time extension's
-- time:start and time:end, OpenSearch's own count, and sacmrun's filters (sacm:endpoint,
-- sacm:rule, ...) in NS_SEARCH. Filling the template gives the collection's feed URL with the
-- same query parameters the feed understands (endpoint, rule, result, since, until, max).
local M = {}

M.TYPE = "application/opensearchdescription+xml"
M.NS = "http://a9.com/-/spec/opensearch/1.1/"
M.NS_TIME = "http://a9.com/-/opensearch/extensions/time/1.0/"
M.NS_SEARCH = "urn:sacmrun:rolie:search:0"

-- feed query parameter -> its template parameter
M.PARAMETERS = {
  endpoint = "sacm:endpoint", kind = "sacm:kind", rule = "sacm:rule", policy = "sacm:policy",
  result = "sacm:result", correlation = "sacm:correlation", since = "time:start", ["until"] = "time:end",
  max = "count",
}

local ESCAPES = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;" }
local function esc(s) return (s:gsub('[&<>"]', ESCAPES)) end

--- template(feed_url, filters) -> the URL template; filters: the feed parameters offered, in order.
function M.template(feed_url, filters)
  local parts = {}
  for _, name in ipairs(filters) do
    parts[#parts + 1] = ("%s={%s?}"):format(name, assert(M.PARAMETERS[name], name))
  end
  return feed_url .. "?" .. table.concat(parts, "&")
end

--- description{short_name, description, feed_url, filters} -> the document text.
-- Written as text rather than with sacm.xml: the template refers to namespace prefixes that must
-- be declared by name, which a serializer that picks its own prefixes cannot promise.
function M.description(d)
  return table.concat({
    '<?xml version="1.0" encoding="UTF-8"?>\n',
    '<OpenSearchDescription xmlns="', M.NS, '" xmlns:time="', M.NS_TIME, '" xmlns:sacm="', M.NS_SEARCH, '">\n',
    '  <ShortName>', esc(d.short_name:sub(1, 16)), '</ShortName>\n',
    '  <Description>', esc(d.description), '</Description>\n',
    '  <Url type="application/atom+xml" rel="results" template="', esc(M.template(d.feed_url, d.filters)), '"/>\n',
    '  <InputEncoding>UTF-8</InputEncoding>\n',
    '  <OutputEncoding>UTF-8</OutputEncoding>\n',
    '</OpenSearchDescription>\n',
  })
end

return M
