-- ccm2 (Client Certificate Management 2.0, docs/protocol.md "ccm2 profile"): keys and CSRs made
-- by sacmrun (runtime/x509.c, sacm.crypto), and the whole enrollment against a real Prosody
-- running the shipped configuration with the grid's modules (examples/servers/prosody-modules):
-- a one-time enrollment password, ccm2 add, SASL EXTERNAL, list with last use, revoke closing
-- live sessions, and the refusals that "the CA signed it" alone does not give.
local prosody = require "support.prosody"
local tmp = require "support.tmp"
local crypto = require "sacm.crypto"
local ccm2 = require "sacm.xmpp.ccm2"
local xmpp = require "sacm.xmpp"
local st = require "sacm.xmpp.stanza"
local fs = require "sacm.fs"
local task = require "sacm.task"
local time = require "sacm.time"
local proc = require "sacm.proc"

local KEY_MODE, CERT_MODE = tonumber("600", 8), tonumber("644", 8)

describe("sacm.crypto keys and certificate requests", function()
  it("makes an EC P-256 key by default and a CSR naming the JID, signed by that key", function()
    local key = assert(crypto.generate_key())
    assert.equal("EC P-256", key:description())
    local pem, der = assert(crypto.csr({ key = key, subject = { CN = "web1" }, xmpp_addr = "web1@grid.test" }))
    assert.matches("^%-%-%-%-%-BEGIN CERTIFICATE REQUEST%-%-%-%-%-\n", pem)
    for _, form in ipairs({ pem, der }) do
      local info = assert(crypto.csr_info(form))
      assert.is_true(info.signature_ok)
      assert.equal("CN=web1", info.subject)
      assert.same({ "web1@grid.test" }, info.xmpp_addrs)
      assert.equal(key:public_der(), info.public_der)
    end
    -- a JID may hold commas and the like: it goes into the DER as it is, not through a config string
    local _, odd = assert(crypto.csr({ key = key, xmpp_addr = { "a,b#c$d@grid.test", "x@y" } }))
    assert.same({ "a,b#c$d@grid.test", "x@y" }, crypto.csr_info(odd).xmpp_addrs)
  end)

  it("detects a CSR whose signature does not match its contents", function()
    local key = assert(crypto.generate_key())
    local _, der = assert(crypto.csr({ key = key, subject = { CN = "web1" }, xmpp_addr = "web1@grid.test" }))
    local at = der:find("web1@grid.test", 1, true)
    local forged = der:sub(1, at - 1) .. "evil@grid.test" .. der:sub(at + 14)
    local info = assert(crypto.csr_info(forged))
    assert.same({ "evil@grid.test" }, info.xmpp_addrs)
    assert.is_false(info.signature_ok)
  end)

  it("round-trips keys through PEM, makes RSA keys, and refuses what is not a key or a request", function()
    local key = assert(crypto.generate_key({ type = "ec", curve = "P-384" }))
    assert.equal("EC P-384", key:description())
    local again = assert(crypto.load_key(key:pem()))
    assert.equal(key:public_der(), again:public_der())
    local rsa = assert(crypto.generate_key({ type = "rsa", bits = 2048 }))
    assert.equal("RSA 2048", rsa:description())
    local nothing, err = crypto.load_key("not a key")
    assert.is_nil(nothing)
    assert.equal("bad-format", err.condition)
    assert.equal("bad-format", select(2, crypto.csr_info("junk")).condition)
    assert.equal("bad-format", select(2, crypto.cert_info("junk")).condition)
    assert.equal("bad-request", select(2, crypto.csr({ key = key })).condition) -- names nobody
    assert.has_error(function() crypto.generate_key({ type = "dsa" }) end)
    assert.has_error(function() crypto.generate_key({ type = "ec", curve = "P-192" }) end)
    assert.has_error(function() crypto.generate_key({ type = "rsa", bits = 1024 }) end)
  end)

  it("reads a certificate as PEM or DER alike, and refuses trailing bytes and the wrong PEM block", function()
    local dir = tmp.dir("x509-forms")
    finally(function() tmp.remove(dir) end)
    local ca = require("support.certs").ca(dir, "ca", "Forms CA")
    local pem = assert(fs.read(ca.cert))
    local der = assert(proc.run({ "openssl", "x509", "-in", ca.cert, "-outform", "DER" }, { timeout = 30 })).stdout
    local from_pem, from_der = assert(crypto.cert_info(pem)), assert(crypto.cert_info(der))
    assert.equal(from_pem.fingerprint, from_der.fingerprint)
    assert.equal("CN=Forms CA", from_der.subject)
    assert.equal("bad-format", select(2, crypto.cert_info(der .. "\0")).condition)
    -- a CSR is no certificate, nor a certificate a CSR, whichever form
    local _, csr_der = assert(crypto.csr({ key = assert(crypto.generate_key()), xmpp_addr = "x@grid.test" }))
    assert.equal("bad-format", select(2, crypto.cert_info(csr_der)).condition)
    assert.equal("bad-format", select(2, crypto.csr_info(pem)).condition)
  end)
end)

describe("ccm2 against Prosody with mod_sacm_ccm2 #e2e", function()
  local server, dir
  local opened = {}

  setup(function()
    server = prosody.start({ shipped = true, users = { repository = "pw-repository" } })
    dir = tmp.dir("ccm2")
  end)
  teardown(function()
    for _, c in ipairs(opened) do c:close() end
    if server then server:stop() end
    if dir then tmp.remove(dir) end
  end)

  local function track(c) if c then opened[#opened + 1] = c end return c end

  -- prosodyctl mod_sacm_ccm2 enroll NAME -> the one-time password
  local function enroll(name, ...)
    local out = server:prosodyctl("mod_sacm_ccm2", "enroll", server:jid(name), ...)
    return assert(out:match("\npassword=(%S+)") or out:match("^password=(%S+)"), out)
  end

  local function with_password(name, password, resource)
    return xmpp.connect({ jid = server:jid(name) .. "/" .. (resource or "enroll"), password = password,
      host = server.host, port = server.port, cafile = server.ca_file, reconnect = false })
  end

  local function with_cert(pair, resource)
    return xmpp.connect({ client_cert = pair.cert_file or pair.cert, client_key = pair.key_file or pair.key,
      resource = resource or "cert", host = server.host, port = server.port, cafile = server.ca_file,
      reconnect = false })
  end

  local function files(name)
    return { name = name, key_file = dir .. "/" .. name .. ".key", cert_file = dir .. "/" .. name .. ".crt" }
  end

  -- enrolls NAME through ccm2 and returns its certificate (files written)
  local function enrolled(name)
    local c = track(assert(with_password(name, enroll(name))))
    local cert = assert(ccm2.add(c, files(name)))
    c:close()
    return cert
  end

  it("enrolls end to end: one-time password, ccm2 add, then SASL EXTERNAL with the new certificate", function()
    local password = enroll("collector-web1", "--expires", "1h")
    local c = track(assert(with_password("collector-web1", password)))
    assert.same({ add = true, list = true, revoke = true }, assert(ccm2.features(c)))
    local cert = assert(ccm2.add(c, files("collector-web1")))
    c:close()

    assert.same({ server:jid("collector-web1") }, cert.xmpp_addrs)
    assert.matches("^" .. ("%x"):rep(64) .. "$", cert.fingerprint)
    assert.truthy(cert.not_after > os.time() + 29 * 86400, "the shipped lifetime is 30 days")
    -- the private key is the account's credential now: owner-only; the certificate is public
    assert.equal(KEY_MODE, assert(fs.stat(cert.key_file)).mode & tonumber("777", 8))
    assert.equal(CERT_MODE, assert(fs.stat(cert.cert_file)).mode & tonumber("777", 8))
    local on_disk = assert(crypto.cert_info(assert(fs.read(cert.cert_file))))
    assert.equal(cert.fingerprint, on_disk.fingerprint)
    assert.equal(assert(crypto.load_key(assert(fs.read(cert.key_file)))):public_der(), on_disk.public_der)
    -- the grid CA signed it
    local verify = assert(require("sacm.proc").run({ "openssl", "verify", "-CAfile", server.ca_file,
      "-purpose", "sslclient", cert.cert_file }))
    assert.is_true(verify.ok, verify.stdout .. verify.stderr)

    local e = track(assert(with_cert(cert, "collector")))
    assert.equal(server:jid("collector-web1") .. "/collector", e.jid)
    assert.is_number(assert(e:ping()))
  end)

  it("takes an enrolled collector from certificate login to posture stored in the repository", function()
    local grid = require "support.grid"
    local collector = require "sacm.roles.collector"
    local repository = require "sacm.roles.repository"
    local wait_until = require("support.wait").until_true
    local g = grid.new(server, dir)
    local cert = enrolled("collector-web3")
    local repo = assert(repository.start(g:options("repository", { password = "pw-repository",
      database = dir .. "/grid.db" })))
    -- the collector holds no password at all: its key and certificate are its only credential
    local copts = g:options("collector-web3", { endpoint = "web3", kinds = { "os" }, spool = dir .. "/web3-spool.db",
      client_cert = cert.cert_file, client_key = cert.key_file })
    copts.password = nil
    local coll, err = collector.start(copts)
    if not coll then repo:close() end
    assert.truthy(coll, tostring(err))
    local ok, perr = pcall(function()
      assert.equal(server:jid("collector-web3") .. "/spec", coll.member.conn.jid)
      wait_until(function() return (repo.members[server:jid("collector-web3")] or {}).collector end, 15,
        "the repository admitting the enrolled collector")
      assert.equal(1, coll:collect({ "os" }).published)
      local row = assert(repo.store.db:first("SELECT count(*) AS n, min(collector) AS c FROM posture WHERE endpoint = ?",
        { "web3" }))
      assert.equal(1, row.n)
      assert.equal(server:jid("collector-web3") .. "/spec", row.c)
      -- and the endpoint is bound to the enrolled identity from now on
      assert.equal(server:jid("collector-web3"), repo.store:endpoint_owner("web3"))
    end)
    coll:close()
    repo:close()
    assert(ok, perr)
  end)

  it("refuses the enrollment password once it has been used, and once it has expired", function()
    local password = enroll("web2")
    local first = track(assert(with_password("web2", password)))
    first:close()
    local again, err = with_password("web2", password, "again")
    assert.is_nil(again)
    assert.equal("not-authorized", err.condition)

    -- an enrollment nobody used in time: its record's expiry is moved into the past
    local late = enroll("web3")
    local encode = function(v) return (v:gsub("%W", function(ch) return ("%%%02x"):format(ch:byte()) end)) end
    local record = server.data_dir .. "/" .. encode(server.domain) .. "/sacm_ccm2_enrollment/web3.dat"
    local text = assert(fs.read(record))
    local moved = text:gsub("(%[?\"?expires\"?%]?%s*=%s*)(%d+)", function(k) return k .. tostring(os.time() - 5) end)
    assert.are_not.equal(text, moved)
    assert(fs.write(record, moved))
    local expired, eerr = with_password("web3", late)
    assert.is_nil(expired)
    assert.equal("not-authorized", eerr.condition)
    assert.matches("enrollment password expired", assert(fs.read(server.log_file)), 1, true)

    -- an account that exists is never handed a password
    assert.has_error(function() server:prosodyctl("mod_sacm_ccm2", "enroll", server:jid("repository")) end)
  end)

  it("names the enrolling account in the certificate whatever JID the CSR asks for", function()
    local c = track(assert(with_password("web4", enroll("web4"))))
    local opts = files("web4")
    opts.xmpp_addr = server:jid("repository")
    local cert = assert(ccm2.add(c, opts))
    c:close()
    assert.same({ server:jid("web4") }, cert.xmpp_addrs)
    assert.equal("CN=web4", cert.subject)
    local e = track(assert(with_cert(cert)))
    assert.equal(server:jid("web4") .. "/cert", e.jid)
  end)

  it("lists the certificate with its last use and the sessions using it", function()
    local cert = enrolled("web5")
    local before = os.time()
    local e = track(assert(with_cert(cert, "live")))
    local list = assert(ccm2.list(e))
    assert.equal(1, #list)
    local entry = list[1]
    assert.equal("web5", entry.name)
    assert.equal(cert.fingerprint, entry.fingerprint)
    assert.equal(cert.not_after, entry.not_after)
    assert.is_number(entry.last_used)
    assert.truthy(entry.last_used >= math.floor(before) - 1 and entry.last_used <= os.time() + 1,
      ("last used %s, logged in at %s"):format(tostring(entry.last_used), tostring(before)))
    assert.same({ "live" }, entry.resources)
  end)

  it("revokes by fingerprint: the live session closes within 1 s and the next login is refused", function()
    local old = enrolled("web6")
    local live = track(assert(with_cert(old, "live")))
    local closed_at
    live:on("status", function(event) if event == "disconnected" then closed_at = time.monotonic() end end)
    -- renewal before expiry: a session logged in with the certificate adds the next one
    local renewed = assert(ccm2.add(live, files("web6-next")))
    local manager = track(assert(with_cert(renewed, "manager")))
    local names = {}
    for _, c in ipairs(assert(ccm2.list(manager))) do names[#names + 1] = c.name end
    table.sort(names)
    assert.same({ "web6", "web6-next" }, names)

    local t0 = time.monotonic()
    assert(ccm2.revoke(manager, old.fingerprint))
    -- at once, not at its next login; 5 s is room for a loaded machine, not the expected time
    while not closed_at and time.monotonic() - t0 < 5 do task.sleep(0.01) end
    assert.is_not_nil(closed_at, "the session that logged in with the revoked certificate is still open after 5 s")
    assert.equal("disconnected", live.state)

    local refused, err = with_cert(old, "again")
    assert.is_nil(refused)
    assert.equal("not-authorized", err.condition)
    -- the other certificate and its session are untouched
    assert.is_number(assert(manager:ping()))
    local left = assert(ccm2.list(manager))
    assert.equal(1, #left)
    assert.equal(renewed.fingerprint, left[1].fingerprint)
    local gone, gerr = ccm2.revoke(manager, old.fingerprint)
    assert.is_nil(gone)
    assert.equal("item-not-found", gerr.condition)
  end)

  it("refuses a CA-signed certificate for an unregistered account, or one not on the account's list", function()
    -- signed by the very CA the server trusts (the grid CA): mod_auth_ccert would let both in
    local ghost = server:client_cert(server:jid("ghost"))
    local c, err = with_cert(ghost)
    assert.is_nil(c)
    assert.equal("not-authorized", err.condition)
    local unlisted = server:client_cert(server:jid("repository"))
    c, err = with_cert(unlisted)
    assert.is_nil(c)
    assert.equal("not-authorized", err.condition)
    local log = assert(fs.read(server.log_file))
    assert.matches("there is no account ghost@", log, 1, true)
    assert.matches("not on the account's ccm2 list", log, 1, true)
  end)

  it("runs the enrollment playbook examples/enroll.lua: enroll, list, renew, revoke", function()
    local proc = require "sacm.proc"
    local bin = os.getenv("SACMRUN_BIN") or "./sacmrun"
    local f = files("playbook")
    local common = { "--host", server.host, "--port", tostring(server.port), "--cafile", server.ca_file,
      "--key", f.key_file, "--cert", f.cert_file }
    local function run(env, ...)
      local argv = { bin, "examples/enroll.lua", ... }
      for _, a in ipairs(common) do argv[#argv + 1] = a end
      return assert(proc.run(argv, { timeout = 60, env = env }))
    end
    local password = enroll("playbook")
    local r = run({ SACM_ENROLL_PASSWORD = password }, "enroll", "--jid", server:jid("playbook"), "--name", "pb")
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("SASL EXTERNAL login as " .. server:jid("playbook"), r.stdout, 1, true)
    assert.equal(KEY_MODE, assert(fs.stat(f.key_file)).mode & tonumber("777", 8))
    assert(assert(crypto.cert_info(assert(fs.read(f.cert_file)))).fingerprint)
    -- the password is spent: enrolling again with it fails and says what to do
    assert(fs.remove(f.key_file)); assert(fs.remove(f.cert_file))
    r = run({ SACM_ENROLL_PASSWORD = password }, "enroll", "--jid", server:jid("playbook"))
    assert.equal(1, r.code)
    assert.matches("ask the administrator for a new enrollment", r.stderr, 1, true)

    -- a fresh enrollment under another name, then renewal replaces the pair and revokes the old one
    password = enroll("playbook2")
    r = run({ SACM_ENROLL_PASSWORD = password }, "enroll", "--jid", server:jid("playbook2"))
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local first = assert(crypto.cert_info(assert(fs.read(f.cert_file)))).fingerprint
    r = run(nil, "renew")
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("not due for renewal", r.stdout, 1, true)
    -- a running component using the pair: renewal revokes its certificate, which closes its
    -- session, and it comes back on its own with the new files
    local live = track(assert(xmpp.connect({ client_cert = f.cert_file, client_key = f.key_file, resource = "live",
      host = server.host, port = server.port, cafile = server.ca_file, max_backoff = 0.5 })))
    local events = {}
    live:on("status", function(event) events[#events + 1] = event end)
    r = run(nil, "renew", "--force")
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local second = assert(crypto.cert_info(assert(fs.read(f.cert_file)))).fingerprint
    require("support.wait").until_true(function() return events[2] == "reconnected" end, 10,
      "the component reconnecting with the renewed certificate")
    assert.equal("disconnected", events[1])
    assert.is_number(assert(live:ping()))
    local in_use = assert(ccm2.list(live))
    assert.equal(1, #in_use)
    assert.equal(second, in_use[1].fingerprint)
    assert.same({ "live" }, in_use[1].resources)
    live:close()
    assert.are_not.equal(first, second)
    assert.equal(KEY_MODE, assert(fs.stat(f.key_file)).mode & tonumber("777", 8))
    r = run(nil, "list")
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches(second, r.stdout, 1, true)
    assert.is_nil(r.stdout:find(first, 1, true))
    r = run(nil, "revoke", second)
    assert.equal(0, r.code, r.stdout .. r.stderr)
    r = run(nil, "list")
    assert.equal(1, r.code)
    assert.matches("enroll this endpoint again", r.stderr, 1, true)
  end)

  it("answers malformed requests with the profile's errors", function()
    local c = track(assert(xmpp.connect({ jid = server:jid("repository") .. "/errors", password = "pw-repository",
      host = server.host, port = server.port, cafile = server.ca_file, reconnect = false })))
    local function add(csr_b64, name)
      return c:iq(st.iq({ type = "set" }):tag("add-certificate-request", { xmlns = ccm2.NS_ADD })
        :tag("name"):text(name or "x"):up()
        :tag("x509certificate-signing-request"):text(csr_b64):up():up())
    end
    local key = assert(crypto.generate_key())
    local _, der = assert(crypto.csr({ key = key, xmpp_addr = server:jid("repository") }))
    local at = der:find("repository@", 1, true)
    local forged = der:sub(1, at - 1) .. "REPOSITORY@" .. der:sub(at + 11)
    local _, err = add(crypto.base64_encode(forged))
    assert.equal("not-acceptable", err.condition)
    assert.matches("proof of possession", err.text, 1, true)
    _, err = add("not base64!")
    assert.equal("bad-request", err.condition)
    _, err = add(crypto.base64_encode(der), "")
    assert.equal("bad-request", err.condition)
    _, err = c:iq(st.iq({ type = "set" }):tag("revoke-certificate", { xmlns = ccm2.NS_REVOKE })
      :tag("fingerprint", { hash = "sha-1" }):text(("ab"):rep(20)):up():up())
    assert.equal("feature-not-implemented", err.condition)
    local ok, rerr = ccm2.revoke(c, ("0"):rep(64))
    assert.is_nil(ok)
    assert.equal("item-not-found", rerr.condition)
    -- a password account may hold certificates too (its password is worth as much); none yet
    assert.same({}, assert(ccm2.list(c)))
  end)
end)

-- ejabberd has no ccm2: docs/deploy.md section 8 issues certificates ahead with the same tooling
-- (key and CSR by sacm.crypto on the endpoint, signed by the CA with openssl). This checks that
-- recipe against the shipped ejabberd, and what the section warns about.
describe("certificates issued ahead for ejabberd #e2e", function()
  local ejabberd = require "support.ejabberd"
  local proc = require "sacm.proc"
  local server, dir

  setup(function()
    server = ejabberd.start({ shipped = true, users = { ["collector-web1"] = "pw-collector" } })
    dir = tmp.dir("ccm2-ejabberd")
  end)
  teardown(function()
    if server then server:stop() end
    if dir then tmp.remove(dir) end
  end)

  -- the endpoint's half: a key that stays here, and a CSR; the CA's half: openssl x509 -req
  local function issue(account)
    local key = assert(crypto.generate_key())
    local base = dir .. "/" .. account
    assert(fs.write(base .. ".key", key:pem(), { mode = KEY_MODE }))
    local csr = assert(crypto.csr({ key = key, subject = { CN = account }, xmpp_addr = server:jid(account) }))
    assert(fs.write(base .. ".csr", csr))
    assert(fs.write(base .. ".ext", table.concat({
      "basicConstraints = critical,CA:FALSE",
      "keyUsage = critical,digitalSignature",
      "extendedKeyUsage = clientAuth",
      "subjectAltName = otherName:1.3.6.1.5.5.7.8.5;UTF8:" .. server:jid(account), "" }, "\n")))
    local r = assert(proc.run({ "openssl", "x509", "-req", "-in", base .. ".csr", "-CA", server.ca_file,
      "-CAkey", server.dir .. "/certs/ca.key", "-days", "30", "-set_serial", "0x1" .. crypto.hex(crypto.random(8)),
      "-extfile", base .. ".ext", "-out", base .. ".crt" }, { timeout = 20, env = { OPENSSL_CONF = "/dev/null" } }))
    assert.is_true(r.ok, r.stdout .. r.stderr)
    return { cert = base .. ".crt", key = base .. ".key" }
  end

  local function login(pair)
    return xmpp.connect({ client_cert = pair.cert, client_key = pair.key, resource = "ahead",
      host = server.host, port = server.cert_port, cafile = server.ca_file, reconnect = false })
  end

  it("logs in with SASL EXTERNAL on the shipped client-certificate listener", function()
    local pair = issue("collector-web1")
    assert.equal(KEY_MODE, assert(fs.stat(pair.key)).mode & tonumber("777", 8))
    local c = assert(login(pair))
    assert.equal(server:jid("collector-web1") .. "/ahead", c.jid)
    c:close()
  end)

  it("admits a CA-signed certificate of an account that does not exist (why the CA must be careful there)", function()
    local c = login(issue("never-registered"))
    assert.is_not_nil(c, "ejabberd refused it: deploy.md section 8 can say ejabberd checks accounts")
    c:close()
  end)
end)
