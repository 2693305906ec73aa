-- The ROLIE provider against real clients: curl (status codes, headers, conditional GET, auth,
-- paging, POST), Python's feedparser reading the feeds, xmllint validating every document against
-- spec/fixtures/rolie/rolie.rng, openssl s_client for malformed requests, the Lua ROLIE client
-- (sacm.rolie.client over http.request), and a real evaluator on a private Prosody picking up a
-- POSTed policy.
local rolie = require "sacm.rolie"
local rclient = require "sacm.rolie.client"
local repository = require "sacm.roles.repository"
local evaluator = require "sacm.roles.evaluator"
local payload = require "sacm.grid.payload"
local prosody = require "support.prosody"
local certs = require "support.certs"
local proc = require "sacm.proc"
local fs = require "sacm.fs"
local xml = require "sacm.xml"
local crypto = require "sacm.crypto"
local time = require "sacm.time"
local task = require "sacm.task"

local RNG = "spec/fixtures/rolie/rolie.rng"
local RESULTS, POSTURE = 23, 4
local T0 = 1763900000 -- evaluated times of the results: T0 + i

local dir, ca, other_ca, server_pair, reader_pair, outsider_pair, stranger_pair
local repo, provider, base, policies
local result_ids = {} -- in the order stored (oldest first)

local function policy_text(id, tag)
  return ([[
return {
  id = %q, title = "Policy %s", description = "posted by spec/rolie_spec.lua",
  rules = {
    { id = %q, title = "The os posture has a hostname", severity = "low", rationale = "a test (%s)",
      requires = { "os" },
      check = function(p) return p.os.attributes.hostname and "pass" or "fail" end },
  },
}
]]):format(id, id, id .. "-hostname", tag or "v1")
end

local function curl(args, opts)
  local argv = { "curl", "-sS", "--cacert", ca.cert, "--max-time", "20" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return assert(proc.run(argv, opts or { timeout = 30 }))
end

-- GET url with extra curl arguments -> status, headers (lower-case names), body
local function get(url, extra)
  local args = { "-D", "-" }
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  args[#args + 1] = url
  local r = curl(args)
  assert.equal(0, r.code, r.stderr)
  local head, body = r.stdout:match("^(.-\r\n)\r\n(.*)$")
  local status = tonumber(head:match("^HTTP/1%.1 (%d+)"))
  local headers = {}
  for name, value in head:gmatch("\r\n([^:\r\n]+):[ \t]*([^\r\n]*)") do headers[name:lower()] = value end
  return status, headers, body
end

local ALICE = { "-u", "alice:alice-pw" }
local function alice(url, extra)
  local args = { table.unpack(ALICE) }
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  return get(url, args)
end

local function write_tmp(name, text)
  local path = dir .. "/" .. name
  assert(fs.write(path, text))
  return path
end

-- xmllint --relaxng: true, or false and the report
local function validates(text, name)
  local path = write_tmp(name or "doc.xml", text)
  local r = assert(proc.run({ "xmllint", "--noout", "--relaxng", RNG, path }, { timeout = 20 }))
  return r.code == 0, r.stderr
end

local function python(code, input)
  local r = assert(proc.run({ "/usr/bin/python3", "-c", code }, { stdin = input, timeout = 30 }))
  assert.equal(0, r.code, r.stderr)
  return r.stdout
end

local function entry_ids(feed_text)
  local el = assert(xml.parse(feed_text))
  local ids = {}
  for e in el:children("entry") do ids[#ids + 1] = e:find("id#") end
  return ids, el
end

local function link(el, rel)
  for l in el:children("link") do
    if l.attr.rel == rel then return l.attr.href end
  end
end

local wait_until = require("support.wait").until_true
local grid = require "support.grid"

describe("sacm.rolie #e2e", function()
  lazy_setup(function()
    local r = assert(proc.run({ "mktemp", "-d", "/tmp/sacmrun-rolie-XXXXXXXXXX" }))
    dir = r.stdout:gsub("%s+$", "")
    ca = certs.ca(dir, "ca", "sacmrun rolie test CA")
    other_ca = certs.ca(dir, "other-ca", "sacmrun untrusted CA")
    server_pair = certs.server(ca, dir .. "/server", { dns = { "localhost" }, ips = { "127.0.0.1" } })
    reader_pair = certs.client(ca, dir .. "/orchestrator", { cn = "orchestrator", xmpp = { "orchestrator@grid.example" } })
    outsider_pair = certs.client(ca, dir .. "/outsider", { cn = "outsider", xmpp = { "outsider@grid.example" } })
    stranger_pair = certs.client(other_ca, dir .. "/stranger", { cn = "orchestrator", xmpp = { "orchestrator@grid.example" } })
    policies = dir .. "/policies"
    assert(fs.mkdir(policies))
    assert(fs.write(policies .. "/baseline.lua", policy_text("baseline")))

    repo = assert(repository.open(dir .. "/grid.db"))
    for i = 1, RESULTS do
      local id = crypto.uuid()
      result_ids[i] = id
      assert(repo:store_result(payload.result({
        id = id, endpoint = i % 2 == 0 and "web1@grid.example/agent" or "db1@grid.example/agent",
        hostname = i % 2 == 0 and "web1" or "db1", rule_id = "rule-" .. (i % 3), policy_id = "baseline",
        policy_version = "v1", result = i % 4 == 0 and "fail" or "pass", severity = "low",
        evaluated = T0 + i, evidence = { "evidence " .. i },
      })))
    end
    for i = 1, POSTURE do
      assert(repo:store_posture(payload.posture({
        id = crypto.uuid(), kind = "os", endpoint = "web1@grid.example/agent", hostname = "web1",
        collected = T0 + i, data = { attributes = { hostname = "web1", release = "12." .. i }, items = {} },
      })))
    end
    provider = assert(rolie.serve({
      repository = repo, policies_dir = policies, page_size = 5,
      listen = { host = "127.0.0.1", port = 0, cert = server_pair.cert, key = server_pair.key, ca = ca.cert,
        verify_client = "optional", limits = { body = 64 * 1024 } },
      users = {
        alice = rolie.hash_password("alice-pw", { iterations = 1000 }),
        bob = "sha256$pepper$" .. crypto.hex(crypto.sha256("pepper" .. "bob-pw")),
        admin = rolie.hash_password("admin-pw", { iterations = 1000 }),
      },
      access = {
        public = { read = { "*" } },
        private = { read = { "user:alice", "san:xmpp:orchestrator@grid.example" } },
        ["public/policies"] = { write = { "user:admin" } },
      },
    }))
    base = provider.base_url
  end)

  lazy_teardown(function()
    if provider then provider:close() end
    if repo then repo:close() end
    if dir then proc.run({ "rm", "-rf", "--", dir }) end
  end)

  describe("documents", function()
    it("serves the service document with the collections each client may read", function()
      local status, headers, body = get(base .. "/rolie/servicedocument")
      assert.equal(200, status)
      assert.equal("application/atomsvc+xml", headers["content-type"])
      assert.truthy(validates(body, "service-anon.xml"))
      local svc = assert(xml.parse(body))
      local hrefs = {}
      for c in svc:child("workspace"):children("collection") do hrefs[#hrefs + 1] = c.attr.href end
      assert.same({ base .. "/rolie/public/policies" }, hrefs)
      -- nobody may POST anonymously, so the collection says so with an empty accept
      assert.equal("", svc:find("workspace/collection/accept#"))

      status, headers, body = alice(base .. "/rolie/servicedocument")
      assert.equal(200, status)
      assert.matches("private", headers["cache-control"])
      assert.truthy(validates(body, "service-alice.xml"))
      svc = assert(xml.parse(body))
      local titles, infotypes = {}, {}
      for w in svc:children("workspace") do
        for c in w:children("collection") do
          titles[#titles + 1] = c.attr.href:match("/rolie/(.*)$")
          local cat = c:child("categories"):child("category")
          infotypes[#infotypes + 1] = cat.attr.scheme .. " " .. cat.attr.term
        end
      end
      assert.same({ "public/policies", "private/posture", "private/results" }, titles)
      for _, it in ipairs(infotypes) do
        assert.equal("urn:ietf:params:rolie:category:information-type unknown", it)
      end

      -- admin may write: the policies collection accepts Lua and Atom entries
      local _
      status, _, body = get(base .. "/rolie/servicedocument", { "-u", "admin:admin-pw" })
      assert.equal(200, status)
      assert.matches("<accept>application/x%-lua</accept>", body)
    end)

    it("serves category and OpenSearch description documents", function()
      local status, headers, body = get(base .. "/rolie/categories/policies")
      assert.equal(200, status)
      assert.equal("application/atomcat+xml", headers["content-type"])
      assert.truthy(validates(body, "categories.xml"))
      status, headers, body = alice(base .. "/rolie/opensearch/results")
      assert.equal(200, status)
      assert.equal("application/opensearchdescription+xml", headers["content-type"])
      local d = assert(xml.parse(body))
      assert.equal("http://a9.com/-/spec/opensearch/1.1/", d.ns)
      assert.matches("{sacm:endpoint%?}", d:find("Url@template"))
      assert.matches("{time:start%?}", d:find("Url@template"))
    end)

    it("validates every document against the schema, and the schema rejects what lacks a required part", function()
      local _, _, feed = alice(base .. "/rolie/private/results")
      local ok, report = validates(feed, "feed.xml")
      assert.is_true(ok, report)
      local _, _, pfeed = get(base .. "/rolie/public/policies")
      assert.is_true((validates(pfeed, "policies.xml")))
      local ids = entry_ids(feed)
      local _, _, entry = alice(base .. "/rolie/private/results/" .. ids[1]:gsub("^urn:uuid:", ""))
      assert.is_true((validates(entry, "entry.xml")))
      -- negative cases: the same feed without atom:updated, without its information type, and an
      -- entry without rolie:format
      ok = validates(feed:gsub("<updated>[^<]*</updated>", "", 1), "no-updated.xml")
      assert.is_false(ok)
      ok = validates(feed:gsub('<category scheme="urn:ietf:params:rolie:category:information%-type" term="unknown"/>', "", 1), "no-type.xml")
      assert.is_false(ok)
      ok = validates(entry:gsub("<format [^>]*/>", ""), "no-format.xml")
      assert.is_false(ok)
    end)

    it("is read by feedparser without complaint", function()
      local _, _, feed = alice(base .. "/rolie/private/results")
      local out = python([[
import sys, feedparser
d = feedparser.parse(sys.stdin.read())
print(int(bool(d.bozo)), len(d.entries))
print(" ".join(l.rel for l in d.feed.links))
e = d.entries[0]
print(e.id, e.content[0].src, e.content[0].type, [l.href for l in e.links if l.rel == "alternate"][0])
print(" ".join(t.term for t in e.tags))
]], feed)
      local lines = {}
      for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
      assert.equal("0 5", lines[1])
      assert.equal("service search self first last next", lines[2])
      local newest = result_ids[RESULTS]
      assert.equal(("urn:uuid:%s %s/rolie/private/results/%s.xml application/xml %s/rolie/private/results/%s.json"):format(
        newest, base, newest, base, newest), lines[3])
      assert.equal("unknown results pass", lines[4])
    end)
  end)

  describe("feeds", function()
    it("pages newest first with first, last, next and previous links (RFC 5005)", function()
      local seen, url, pages = {}, base .. "/rolie/private/results", 0
      local el
      while url do
        local status, _, body = alice(url)
        assert.equal(200, status)
        local ids
        ids, el = entry_ids(body)
        for _, id in ipairs(ids) do seen[#seen + 1] = id:gsub("^urn:uuid:", "") end
        pages = pages + 1
        assert.equal(base .. "/rolie/private/results", link(el, "first"))
        assert.equal(base .. "/rolie/private/results?after=0", link(el, "last"))
        if pages > 1 then assert.truthy(link(el, "previous")) else assert.is_nil(link(el, "previous")) end
        url = link(el, "next")
      end
      assert.equal(5, pages)
      local want = {}
      for i = RESULTS, 1, -1 do want[#want + 1] = result_ids[i] end
      assert.same(want, seen)

      -- the last page holds the oldest entries; previous walks back to the newest
      local status, _, body = alice(base .. "/rolie/private/results?after=0")
      assert.equal(200, status)
      local ids
      ids, el = entry_ids(body)
      assert.same({ "urn:uuid:" .. result_ids[5], "urn:uuid:" .. result_ids[4], "urn:uuid:" .. result_ids[3],
        "urn:uuid:" .. result_ids[2], "urn:uuid:" .. result_ids[1] }, ids)
      assert.is_nil(link(el, "next"))
      local back, prev = 0, link(el, "previous")
      while prev do
        status, _, body = alice(prev)
        assert.equal(200, status)
        _, el = entry_ids(body)
        back = back + 1
        prev = link(el, "previous")
      end
      assert.equal(4, back)
    end)

    it("answers conditional GETs with 304 and sees a new entry", function()
      local url = base .. "/rolie/private/results"
      local status, headers = alice(url)
      assert.equal(200, status)
      local etag, modified = headers.etag, headers["last-modified"]
      assert.matches('^"%x+"$', etag)
      assert.equal(os.date("!%a, %d %b %Y %H:%M:%S GMT", T0 + RESULTS), modified)
      local body
      status, headers, body = alice(url, { "-H", "If-None-Match: " .. etag })
      assert.equal(304, status)
      assert.equal("", body)
      assert.equal(etag, headers.etag)
      status = alice(url, { "-H", "If-Modified-Since: " .. modified })
      assert.equal(304, status)
      status = alice(url, { "-H", 'If-None-Match: "stale"' })
      assert.equal(200, status)
      -- If-None-Match decides when both are sent (RFC 9110 13.2.2)
      status = alice(url, { "-H", 'If-None-Match: "stale"', "-H", "If-Modified-Since: " .. modified })
      assert.equal(200, status)

      local id = crypto.uuid()
      assert(repo:store_result(payload.result({ id = id, endpoint = "web1@grid.example/agent", hostname = "web1",
        rule_id = "rule-new", policy_id = "baseline", policy_version = "v1", result = "error",
        evaluated = T0 + 1000 })))
      result_ids[#result_ids + 1] = id
      status, headers, body = alice(url, { "-H", "If-None-Match: " .. etag })
      assert.equal(200, status)
      assert.are_not.equal(etag, headers.etag)
      assert.equal("urn:uuid:" .. id, entry_ids(body)[1])
    end)

    it("never serves a page from before a write, with other writes going on (feed cache)", function()
      -- Pages are cached until the store changes (sacm.rolie.cache). Foreground writes go to web1,
      -- through this connection and through a second one on the same file (as another process
      -- would write); a background task keeps writing db1 results all the while, so cached pages
      -- are being invalidated while requests are in flight.
      -- a store and provider of its own, so that its writes leave the other tests' feeds alone
      local path = dir .. "/cache.db"
      local mine = assert(repository.open(path))
      local other = assert(repository.open(path))
      local p = assert(rolie.serve({
        repository = mine, page_size = 5,
        listen = { host = "127.0.0.1", port = 0, cert = server_pair.cert, key = server_pair.key },
        users = { alice = rolie.hash_password("alice-pw", { iterations = 1000 }) },
        access = { private = { read = { "user:alice" } } },
      }))
      local url = p.base_url .. "/rolie/private/results?endpoint=web1&max=3"
      local stop, background = false, 0
      local writer = task.spawn(function()
        while not stop do
          background = background + 1
          assert(mine:store_result(payload.result({ id = crypto.uuid(), endpoint = "db1@grid.example/agent",
            hostname = "db1", rule_id = "rule-bg", policy_id = "baseline", policy_version = "v1", result = "pass",
            evaluated = T0 + 3000 + background })))
          task.sleep(0.003)
        end
      end)
      local seen = {}
      local status, headers, body = alice(url)
      assert.equal(200, status)
      seen[headers.etag] = true
      -- the same page again: answered from the cache, byte for byte
      local status2, _, body2 = alice(url)
      assert.equal(200, status2)
      assert.equal(body, body2)
      for i = 1, 8 do
        local id = crypto.uuid()
        assert((i % 2 == 0 and other or mine):store_result(payload.result({ id = id,
          endpoint = "web1@grid.example/agent", hostname = "web1", rule_id = "rule-fg", policy_id = "baseline",
          policy_version = "v1", result = "pass", evaluated = T0 + 2000 + i })))
        status, headers, body = alice(url, { "-H", "If-None-Match: " .. table.concat((function()
          local list = {}
          for tag in pairs(seen) do list[#list + 1] = tag end
          return list
        end)(), ", ") })
        assert.equal(200, status)
        assert.is_nil(seen[headers.etag], "write " .. i .. " was followed by a page seen before it")
        assert.equal("urn:uuid:" .. id, entry_ids(body)[1])
        seen[headers.etag] = true
        -- and fetched again with its own ETag, the client's copy is current
        assert.equal(304, (alice(url, { "-H", "If-None-Match: " .. headers.etag })))
      end
      stop = true
      writer:await(10)
      assert.is_true(writer:done())
      p:close()
      other:close()
      mine:close()
      assert.is_true(background > 8)
    end)

    it("links each entry to its stored payload in XML and to JSON", function()
      local id = result_ids[7]
      local status, headers, body = alice(base .. "/rolie/private/results/" .. id .. ".xml")
      assert.equal(200, status)
      assert.equal("application/xml", headers["content-type"])
      assert.is_true(xml.equal(repo:get(id), assert(xml.parse(body))))
      status, headers, body = alice(base .. "/rolie/private/results/" .. id .. ".json")
      assert.equal(200, status)
      assert.equal("application/json", headers["content-type"])
      local out = python([[
import sys, json
d = json.load(sys.stdin)
print(d["id"], d["rule_id"], d["result"], d["evaluated"], d["evidence"][0])
]], body)
      assert.equal(("%s rule-1 pass %s evidence 7\n"):format(id, time.format(T0 + 7, 3)), out)
      status, headers, body = alice(base .. "/rolie/private/results/" .. id)
      assert.equal(200, status)
      assert.equal("application/atom+xml;type=entry", headers["content-type"])
      assert.equal("urn:uuid:" .. id, assert(xml.parse(body)):find("id#"))
      -- a result's id is not a posture entry, and unknown ids are 404
      assert.equal(404, (alice(base .. "/rolie/private/posture/" .. id)))
      assert.equal(404, (alice(base .. "/rolie/private/results/" .. crypto.uuid())))
      -- the policies' content is the Lua file
      status, headers, body = get(base .. "/rolie/public/policies/baseline.lua")
      assert.equal(200, status)
      assert.equal("text/x-lua; charset=utf-8", headers["content-type"])
      assert.equal(policy_text("baseline"), body)
    end)

    it("searches through the OpenSearch template by endpoint, rule, result and time", function()
      local _, _, desc = alice(base .. "/rolie/opensearch/results")
      local template = assert(xml.parse(desc)):find("Url@template")
      local values = { ["sacm:endpoint"] = "web1", ["sacm:rule"] = "rule-0", ["sacm:result"] = "fail",
        ["time:start"] = time.format(T0 + 10, 0), ["time:end"] = time.format(T0 + 20, 0) }
      local url = template:gsub("{([%w:]+)%?}", function(name)
        return (values[name] or ""):gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end)
      end)
      local status, _, body = alice(url)
      assert.equal(200, status)
      local ids = entry_ids(body)
      -- web1 has the even i, rule-0 is i % 3 == 0, fail is i % 4 == 0: i = 12 in 10..20
      assert.same({ "urn:uuid:" .. result_ids[12] }, ids)
      status = alice(base .. "/rolie/private/results?since=yesterday")
      assert.equal(400, status)
    end)
  end)

  describe("access", function()
    it("asks for credentials, refuses wrong ones, and tells a refused client nothing", function()
      local existing = base .. "/rolie/private/results/" .. result_ids[3]
      local missing = base .. "/rolie/private/results/" .. crypto.uuid()
      for _, url in ipairs { existing, missing, base .. "/rolie/private/results", base .. "/rolie/opensearch/results" } do
        local status, headers = get(url)
        assert.equal(401, status)
        assert.equal('Basic realm="sacm", charset="UTF-8"', headers["www-authenticate"])
      end
      assert.equal(401, (get(existing, { "-u", "alice:wrong" })))
      assert.equal(401, (get(existing, { "-u", "nobody:alice-pw" })))
      assert.equal(401, (get(base .. "/rolie/public/policies", { "-u", "alice:wrong" })))
      -- bob is someone, but not allowed: the same 403 for what exists and what does not
      local s1, _, b1 = get(existing, { "-u", "bob:bob-pw" })
      local s2, _, b2 = get(missing, { "-u", "bob:bob-pw" })
      assert.equal(403, s1)
      assert.equal(403, s2)
      assert.equal(b1, b2)
      assert.equal(200, (get(base .. "/rolie/public/policies", { "-u", "bob:bob-pw" })))
    end)

    it("authenticates TLS client certificates and refuses certificates from another CA", function()
      local url = base .. "/rolie/private/results"
      assert.equal(200, (get(url, { "--cert", reader_pair.cert, "--key", reader_pair.key })))
      assert.equal(403, (get(url, { "--cert", outsider_pair.cert, "--key", outsider_pair.key })))
      local r = curl({ "-o", "/dev/null", "--cert", stranger_pair.cert, "--key", stranger_pair.key, url })
      assert.are_not.equal(0, r.code) -- the handshake fails: no HTTP answer at all
      assert.equal(200, (alice(url)))
    end)
  end)

  describe("bad requests", function()
    it("answers each with the right status and keeps serving", function()
      local status, headers = get(base .. "/")
      assert.equal(405, status)
      assert.equal("", headers.allow)
      assert.equal(400, (get(base .. "/rolie/../etc/passwd", { "--path-as-is" })))
      assert.equal(400, (get(base .. "/rolie/public/%2e%2e/%2e%2e/etc/passwd")))
      assert.equal(400, (get(base .. "/rolie/public%2Fpolicies")))
      assert.equal(400, (get(base .. "/rolie//servicedocument")))
      assert.equal(404, (get(base .. "/rolie/private/policies")))
      assert.equal(404, (get(base .. "/etc/passwd")))
      assert.equal(405, (alice(base .. "/rolie/private/results", { "-X", "DELETE" })))
      assert.equal(431, (get(base .. "/rolie/servicedocument", { "-H", "X-Padding: " .. ("x"):rep(20000) })))
      local big = write_tmp("big.lua", ("-- padding\n"):rep(10000))
      assert.equal(413, (get(base .. "/rolie/public/policies", { "-u", "admin:admin-pw",
        "-H", "Content-Type: application/x-lua", "--data-binary", "@" .. big })))
      -- a request that does not parse, over verified TLS
      local r = assert(proc.run({ "openssl", "s_client", "-connect", "127.0.0.1:" .. provider.port, "-servername",
        "localhost", "-CAfile", ca.cert, "-verify_return_error", "-quiet" },
        { stdin = "GET /rolie/servicedocument HTTP/1.1\r\nHost localhost\r\n\r\n", timeout = 15 }))
      assert.matches("^HTTP/1%.1 400", r.stdout)
      assert.equal(200, (get(base .. "/rolie/servicedocument")))
      assert.is_true(provider.server:stats().bad_requests >= 2)
    end)
  end)

  describe("AtomPub", function()
    it("validates a POSTed policy before writing it, and answers 201 with its Location", function()
      local url = base .. "/rolie/public/policies"
      local function post(body, ctype, who)
        local path = write_tmp("post.body", body)
        return get(url, { "-u", who or "admin:admin-pw", "-H", "Content-Type: " .. ctype, "--data-binary", "@" .. path })
      end
      local before = assert(fs.list(policies))
      local status, _, body = post("return { id = 'broken', rules = { { id = 'x' check } }", "application/x-lua")
      assert.equal(400, status)
      assert.matches("posted policy:1:", body)
      status, _, body = post("while true do end", "application/x-lua")
      assert.equal(400, status)
      assert.matches("instruction budget", body)
      status, _, body = post("return { id = 'nope', title = 'x', rules = {} }", "application/x-lua")
      assert.equal(400, status)
      assert.matches("rules is empty", body)
      assert.equal(409, (post(policy_text("baseline", "again"), "application/x-lua")))
      assert.equal(415, (post(policy_text("fresh"), "text/plain")))
      assert.equal(401, (get(url, { "-H", "Content-Type: application/x-lua", "--data-binary", "x" })))
      assert.equal(403, (post(policy_text("fresh"), "application/x-lua", "alice:alice-pw")))
      assert.same(before, assert(fs.list(policies)))

      local headers
      status, headers, body = post(policy_text("fresh"), "application/x-lua")
      assert.equal(201, status, body)
      assert.equal(url .. "/fresh", headers.location)
      assert.equal("application/atom+xml;type=entry", headers["content-type"])
      assert.is_true((validates(body, "created.xml")))
      assert.equal(policy_text("fresh"), assert(fs.read(policies .. "/fresh.lua")))
      assert.equal(409, (post(policy_text("fresh"), "application/x-lua")))

      -- the same as an Atom entry with the file inline
      local entry = xml.element("entry", { xmlns = "http://www.w3.org/2005/Atom" })
        :tag("title"):text("Entry policy"):up()
        :tag("content", { type = "application/x-lua" }):text(policy_text("from-entry")):up()
      status, headers = post(xml.serialize(entry), "application/atom+xml;type=entry")
      assert.equal(201, status)
      assert.equal(url .. "/from-entry", headers.location)
      status = post("<!DOCTYPE x [<!ENTITY a 'b'>]><entry xmlns='http://www.w3.org/2005/Atom'/>", "application/atom+xml")
      assert.equal(400, status)

      -- the provider's own view follows through the directory watch
      wait_until(function()
        local s, _, b = get(url)
        return s == 200 and b:find("/rolie/public/policies/fresh.lua", 1, true)
      end, 10, "the new policy in the feed")
      assert.equal(200, (get(headers.location)))
    end)
  end)

  describe("the Lua client", function()
    it("discovers collections, follows paging and fetches entries and content", function()
      local c = rclient.new({ url = base, cafile = ca.cert, user = "alice", password = "alice-pw" })
      local cols = assert(c:collections())
      local titles = {}
      for _, col in ipairs(cols) do titles[#titles + 1] = col.workspace .. ": " .. col.title end
      assert.same({ "Public: Policies (configuration checklists)", "Private: Posture attributes",
        "Private: Evaluation results" }, titles)
      local results = assert(c:collections({ title = "Evaluation results" }))[1]
      assert.equal("unknown", results.information_type)
      local ids = {}
      assert.equal(#result_ids, assert(c:each(results.href, function(e) ids[#ids + 1] = e.id end)))
      assert.equal("urn:uuid:" .. result_ids[#result_ids], ids[1])
      assert.equal("urn:uuid:" .. result_ids[1], ids[#ids])
      local feed = assert(c:feed(results.href))
      local e = feed.entries[1]
      assert.equal("urn:sacmrun:result:1", e.format.ns)
      local body, ctype = assert(c:content(e))
      assert.equal("application/xml", ctype)
      assert.equal("result", assert(xml.parse(body)).name)
      body, ctype = assert(c:content(e, "application/json"))
      assert.equal("application/json", ctype)
      assert.matches('"id": "' .. result_ids[#result_ids] .. '"', body, 1, true)
      local again = assert(c:entry(e.link.self))
      assert.equal(e.id, again.id)

      local anon = rclient.new({ url = base .. "/rolie/servicedocument", cafile = ca.cert })
      local _, err = anon:feed(results.href)
      assert.equal("not-authorized", err.condition)
      local loc, perr = anon:post(base .. "/rolie/public/policies", policy_text("anon"), "application/x-lua")
      assert.is_nil(loc)
      assert.equal(401, perr.status)
      local admin = rclient.new({ url = base, cafile = ca.cert, user = "admin", password = "admin-pw" })
      local writable = assert(admin:collections({ writable = true }))
      assert.equal(1, #writable)
      local created
      loc, created = assert(admin:post(writable[1].href, policy_text("via-client"), "application/x-lua"))
      assert.equal(base .. "/rolie/public/policies/via-client", loc)
      assert.equal("Policy via-client", created.title)
      local _, cerr = admin:post(writable[1].href, policy_text("via-client"), "application/x-lua")
      assert.equal("conflict", cerr.condition)
    end)
  end)

  describe("in a grid", function()
    local server, eval, grid_repo, gdir

    lazy_teardown(function()
      if eval then eval:close() end
      if grid_repo then grid_repo:close() end
      if server then server:stop() end
      if gdir then proc.run({ "rm", "-rf", "--", gdir }) end
    end)

    it("gets a POSTed policy to a running evaluator", function()
      server = prosody.start({ users = { evaluator = "pw", repository = "pw", orchestrator = "pw" }, shipped = true })
      gdir = dir .. "/grid"
      assert(fs.mkdir(gdir))
      assert(fs.mkdir(gdir .. "/policies"))
      assert(fs.write(gdir .. "/policies/baseline.lua", policy_text("baseline")))
      local g = grid.new(server, gdir)
      -- the repository first: it makes the grid's nodes and admits the evaluator
      grid_repo = assert(repository.start(g:options("repository", { database = gdir .. "/grid.db", rolie = {
        policies_dir = gdir .. "/policies",
        listen = { host = "127.0.0.1", port = 0, cert = server_pair.cert, key = server_pair.key },
        users = { admin = rolie.hash_password("admin-pw", { iterations = 1000 }) },
        access = { public = { read = { "*" } }, ["public/policies"] = { write = { "user:admin" } } },
      } })))
      eval = assert(evaluator.start(g:options("evaluator", { policies = gdir .. "/policies" })))
      local admin = rclient.new({ url = grid_repo.rolie.base_url, cafile = ca.cert, user = "admin", password = "admin-pw" })
      local col = assert(admin:collections({ writable = true }))[1]
      assert(admin:post(col.href, policy_text("grid-posted"), "application/x-lua"))
      local rules = wait_until(function()
        for _, r in ipairs(eval.engine:rules()) do
          if r.rule_id == "grid-posted-hostname" then return r end
        end
      end, 10, "the evaluator loading the POSTed policy")
      assert.equal("grid-posted", rules.policy_id)
      assert.equal(crypto.hex(crypto.sha256(policy_text("grid-posted"))), rules.policy_version)
    end)
  end)
end)
