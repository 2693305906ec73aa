-- mod_sacm_ccm2: Client Certificate Management 2.0 (the ccm2 ProtoXEP) for a SACM grid, Prosody 0.12.
--
-- What it does (docs/protocol.md, "ccm2 profile", is the contract; docs/deploy.md the how-to):
--   * urn:xmpp:ccm2:add-cert:0     an account sends a PKCS#10 request (CSR); the module checks that
--                                  the CSR is signed by the key it carries (proof of possession)
--                                  and signs a certificate with the grid CA of sacm_ccm2_ca. The
--                                  certificate names the account's own bare JID (id-on-xmppAddr),
--                                  whatever the CSR asks for.
--   * urn:xmpp:ccm2:list-certs:0   the account's certificates: name, certificate, last use, and
--                                  the resources logged in with each.
--   * urn:xmpp:ccm2:revoke-cert:0  removes one by SHA-256 fingerprint and closes the sessions that
--                                  logged in with it.
--   * SASL EXTERNAL, through the auth provider mod_auth_sacm_ccm2 (authentication = "sacm_ccm2"):
--     a certificate is accepted only if it is on the list of an existing account, unexpired, and
--     chains to the CA. "The CA signed it" is not enough: mod_auth_ccert accepts any CA-signed
--     certificate, even one naming an account that was never registered.
--   * Enrollment: `prosodyctl mod_sacm_ccm2 enroll JID [--expires 1h]` creates the account with a
--     one-time password. It works for one login before it expires; after that login the account
--     is certificate-only (password logins refused) and the password is replaced by random bytes.
--
-- Storage (module:open_store, per account): sacm_ccm2_certs {fingerprint = record} and
-- sacm_ccm2_enrollment {created, expires, used}. Signing uses luaossl (Debian lua-luaossl); luasec,
-- Prosody's TLS binding, reads certificates but cannot sign.
local st = require "util.stanza";
local base64 = require "util.encodings".base64;
local jid_split = require "util.jid".split;
local nodeprep = require "util.encodings".stringprep.nodeprep;
local datetime = require "util.datetime";
local random = require "util.random";
local usermanager = require "core.usermanager";

local NS_ADD = "urn:xmpp:ccm2:add-cert:0";
local NS_LIST = "urn:xmpp:ccm2:list-certs:0";
local NS_REVOKE = "urn:xmpp:ccm2:revoke-cert:0";

---------------------------------------------------------------------------- the prosodyctl command
-- `prosodyctl mod_sacm_ccm2 ...` loads the module globally ("*") and calls module.command.

-- "90m", "1h", "2d", "3600" (seconds) -> seconds, or nil
local function parse_duration(s)
	local n, unit = tostring(s or ""):match("^(%d+)([smhd]?)$");
	if not n then return nil; end
	return math.tointeger(tonumber(n) * ({ [""] = 1, s = 1, m = 60, h = 3600, d = 86400 })[unit]);
end

local MAX_ENROLL_SECONDS = 7 * 86400; -- a one-time password should not wait for weeks

local function usage()
	print("usage: prosodyctl mod_sacm_ccm2 enroll USER@HOST [--expires DURATION]");
	print("  Creates the account USER@HOST with a one-time enrollment password and prints it.");
	print("  The password works for one login, within DURATION (default 1h; s, m, h, d; at most 7d).");
	print("  That login enrolls a certificate through ccm2 (examples/enroll.lua); from then on the");
	print("  account logs in with SASL EXTERNAL only.");
	return 1;
end

local function command_enroll(arg)
	local target, expires = nil, 3600;
	local i = 1;
	while arg[i] do
		local a = arg[i];
		if a == "--expires" then
			expires = parse_duration(arg[i + 1]);
			if not expires or expires < 60 or expires > MAX_ENROLL_SECONDS then
				print(("enroll: --expires wants a duration from 60s to 7d such as 1h, got %q"):format(tostring(arg[i + 1])));
				return 1;
			end
			i = i + 2;
		elseif a:sub(1, 2) == "--" or target then
			print(("enroll: unexpected argument %q"):format(a));
			return usage();
		else
			target, i = a, i + 1;
		end
	end
	if not target then return usage(); end
	local node, host = jid_split(target);
	node = node and nodeprep(node);
	if not node or not host then
		print(("enroll: %q is not a bare JID USER@HOST"):format(target));
		return 1;
	end
	if not prosody.hosts[host] then
		print(("enroll: %s is not a VirtualHost in this configuration"):format(host));
		return 1;
	end
	local storagemanager = require "core.storagemanager";
	storagemanager.initialize_host(host);
	if not prosody.hosts[host].users or prosody.hosts[host].users.name == "null" then
		usermanager.initialize_host(host);
	end
	if prosody.hosts[host].users.name ~= "sacm_ccm2" then
		print(("enroll: %s authenticates with %q; enrollment needs authentication = \"sacm_ccm2\""):format(
			host, tostring(prosody.hosts[host].users.name)));
		return 1;
	end
	if usermanager.user_exists(node, host) then
		-- handing out a password for an account that exists would let its holder take it over
		print(("enroll: the account %s@%s exists already; remove it first (prosodyctl deluser %s@%s) "
			.. "or enroll the endpoint under a new name"):format(node, host, node, host));
		return 1;
	end
	-- 18 random bytes: 144 bits, base64 without padding, safe in a shell
	local password = base64.encode(random.bytes(18)):gsub("[+/]", { ["+"] = "-", ["/"] = "_" });
	local now = os.time();
	-- The record first: an account without it would be an ordinary password account for a moment.
	local enrollments = storagemanager.open(host, "sacm_ccm2_enrollment");
	local ok, err = enrollments:set(node, { created = now, expires = now + expires });
	if not ok then
		print(("enroll: storing the enrollment of %s@%s failed: %s"):format(node, host, tostring(err)));
		return 1;
	end
	ok, err = usermanager.create_user(node, password, host);
	if not ok then
		enrollments:set(node, nil);
		print(("enroll: creating the account %s@%s failed: %s"):format(node, host, tostring(err)));
		return 1;
	end
	print(("jid=%s@%s"):format(node, host));
	print(("password=%s"):format(password));
	print(("expires=%s"):format(datetime.datetime(now + expires)));
	return 0;
end

if module.host == "*" then
	function module.command(arg) -- luacheck: ignore 212/module
		local cmd = table.remove(arg, 1);
		if cmd == "enroll" then return command_enroll(arg); end
		return usage();
	end
	return;
end

---------------------------------------------------------------------------- a virtual host
local host = module.host;
local certs_store = module:open_store("sacm_ccm2_certs");
local enroll_store = module:open_store("sacm_ccm2_enrollment");

local lifetime_days = module:get_option_number("sacm_ccm2_certificate_days", 30);
local max_certificates = module:get_option_number("sacm_ccm2_max_certificates", 8);
local ca_option = module:get_option("sacm_ccm2_ca");

-- luaossl, and the grid CA that signs. Not in prosodyctl: it loads the host's modules to create
-- accounts and has no business with the CA key (which may not be readable by whoever runs it).
local ossl, ca_cert, ca_key, ca_problem;
if prosody.process_type ~= "prosodyctl" then
	local ok, err = pcall(function()
		ossl = {
			x509 = require "openssl.x509",
			csr = require "openssl.x509.csr",
			pkey = require "openssl.pkey",
			name = require "openssl.x509.name",
			extension = require "openssl.x509.extension",
			bignum = require "openssl.bignum",
			digest = require "openssl.digest",
			rand = require "openssl.rand",
		};
	end);
	if not ok then
		ca_problem = "luaossl is not installed (Debian: apt-get install lua-luaossl): " .. tostring(err);
	elseif type(ca_option) ~= "table" or type(ca_option.certificate) ~= "string" or type(ca_option.key) ~= "string" then
		ca_problem = "sacm_ccm2_ca is not set: it must be { certificate = \"/path/ca.crt\", key = \"/path/ca.key\" }";
	else
		local function read(path)
			local f, e = io.open(path, "rb");
			if not f then return nil, e; end
			local data = f:read("a");
			f:close();
			return data;
		end
		local cert_pem, e1 = read(ca_option.certificate);
		local key_pem, e2 = read(ca_option.key);
		if not cert_pem or not key_pem then
			ca_problem = ("cannot read the grid CA: %s"):format(tostring(e1 or e2));
		else
			local ok2, err2 = pcall(function()
				ca_cert = ossl.x509.new(cert_pem);
				ca_key = ossl.pkey.new(key_pem);
			end);
			if not ok2 then
				ca_problem = ("the grid CA in sacm_ccm2_ca cannot be loaded: %s"):format(tostring(err2));
			elseif not ca_cert:getBasicConstraints("CA") then
				-- OpenSSL refuses leaf certificates under an issuer without CA:TRUE ("invalid CA certificate")
				ca_problem = ("%s is not a CA certificate (basicConstraints CA:TRUE)"):format(ca_option.certificate);
				ca_cert, ca_key = nil, nil;
			end
		end
	end
	if ca_problem then
		module:log("error", "ccm2 cannot sign certificates: %s; add-cert requests fail until this is fixed", ca_problem);
	end
end

---------------------------------------------------------------------------- the certificate list

-- The account's certificates, {fingerprint = {name, der, issued, not_after, last_used}}.
local function certificates(username)
	local list, err = certs_store:get(username);
	if list == nil and err then return nil, err; end
	return list or {};
end

-- Whether username may log in with the certificate of this fingerprint; true, or nil, reason.
function certificate_allowed(username, fingerprint) -- luacheck: ignore 131
	if not usermanager.user_exists(username, host) then
		return nil, "there is no account " .. username .. "@" .. host;
	end
	local list, err = certificates(username);
	if not list then return nil, "the certificate list cannot be read: " .. tostring(err); end
	local record = list[fingerprint];
	if not record then
		return nil, "the certificate is not on the account's ccm2 list (never enrolled, or revoked)";
	end
	if record.not_after <= os.time() then
		return nil, "the certificate expired at " .. datetime.datetime(record.not_after);
	end
	return true;
end

local function touch(username, fingerprint)
	local list = certificates(username);
	if list and list[fingerprint] then
		list[fingerprint].last_used = os.time();
		local ok, err = certs_store:set(username, list);
		if not ok then module:log("warn", "recording the last use of a certificate of %s failed: %s", username, tostring(err)); end
	end
end

---------------------------------------------------------------------------- enrollment passwords

-- Whether username may log in with a password: true (with the enrollment record, if it is one),
-- or false, reason (the account is certificate-only, or its enrollment password expired).
function password_allowed(username) -- luacheck: ignore 131
	local record = enroll_store:get(username);
	if not record then return true; end -- an ordinary account (prosodyctl register)
	if record.used then
		return false, "the account's one-time enrollment password was used at " .. datetime.datetime(record.used)
			.. "; the account logs in with SASL EXTERNAL only (renew its certificate before it expires, "
			.. "or enroll it again)";
	end
	if record.expires <= os.time() then
		return false, "the enrollment password expired at " .. datetime.datetime(record.expires)
			.. "; create a new enrollment (prosodyctl mod_sacm_ccm2 enroll)";
	end
	return true, record;
end

-- The auth provider records how a session is authenticating (session.sacm_ccm2_login = {kind =
-- "password"|"certificate", fingerprint}); this settles it once SASL has succeeded.
module:hook("authentication-success", function(event)
	local session = event.session;
	local login = session.sacm_ccm2_login;
	session.sacm_ccm2_login = nil;
	if not login or session.host ~= host then return; end
	local username = session.username;
	if login.kind == "certificate" then
		session.sacm_ccm2_fingerprint = login.fingerprint;
		touch(username, login.fingerprint);
		return;
	end
	local record = enroll_store:get(username);
	if not record then return; end
	-- An enrollment password: spent by this login. Checked again here, not only when the SASL
	-- exchange began, so that two exchanges racing with the same password cannot both win.
	if record.used or record.expires <= os.time() then
		module:log("warn", "closing %s@%s: its enrollment password was used or expired during the login", username, host);
		session:close({ condition = "not-authorized", text = "the enrollment password was already used" });
		return;
	end
	record.used = os.time();
	local ok, err = enroll_store:set(username, record);
	if not ok then
		module:log("error", "marking the enrollment of %s as used failed (%s): closing the session", username, tostring(err));
		session:close({ condition = "internal-server-error", text = "the enrollment could not be recorded" });
		return;
	end
	-- random bytes nobody knows: the password is of no use even if the record is lost. Through the
	-- provider, not usermanager.set_password, whose event would close the account's sessions.
	local provider = prosody.hosts[host].users;
	provider.set_password(username, base64.encode(random.bytes(32)));
	session.sacm_ccm2_enrollment = true;
	module:log("info", "%s@%s logged in with its enrollment password (now spent)", username, host);
end, 10);

---------------------------------------------------------------------------- CSR checks (DER)
-- luaossl 20220711 parses CSRs but cannot verify their signature, so the proof of possession is
-- checked here: the signature over the DER CertificationRequestInfo, with the CSR's own key.

-- One DER TLV at pos: tag, start of contents, position after it; nil if malformed.
local function tlv(s, pos)
	local tag, first = s:byte(pos, pos + 1);
	if not first then return nil; end
	local p, n = pos + 2, first;
	if first >= 0x80 then
		local count = first & 0x7f;
		if count == 0 or count > 3 then return nil; end -- no indefinite lengths in DER; CSRs < 16 MB
		n = 0;
		for _ = 1, count do
			local b = s:byte(p);
			if not b then return nil; end
			n, p = n * 256 + b, p + 1;
		end
	end
	if p + n - 1 > #s then return nil; end
	return tag, p, p + n;
end

-- signatureAlgorithm OIDs (DER contents) -> digest
local SIGNATURE_DIGESTS = {
	["\42\134\72\206\61\4\3\2"] = "sha256", -- ecdsa-with-SHA256
	["\42\134\72\206\61\4\3\3"] = "sha384",
	["\42\134\72\206\61\4\3\4"] = "sha512",
	["\42\134\72\134\247\13\1\1\11"] = "sha256", -- sha256WithRSAEncryption
	["\42\134\72\134\247\13\1\1\12"] = "sha384",
	["\42\134\72\134\247\13\1\1\13"] = "sha512",
};

-- der -> the parsed CSR, or nil, condition, text
local function check_csr(der)
	local tag, body, stop = tlv(der, 1);
	if tag ~= 0x30 or stop ~= #der + 1 then return nil, "bad-request", "the CSR is not one DER SEQUENCE"; end
	local itag, _, istop = tlv(der, body);
	if itag ~= 0x30 then return nil, "bad-request", "the CSR has no CertificationRequestInfo"; end
	local signed = der:sub(body, istop - 1);
	local atag, abody, astop = tlv(der, istop);
	local otag, obody, ostop;
	if atag == 0x30 then otag, obody, ostop = tlv(der, abody); end
	if otag ~= 0x06 then return nil, "bad-request", "the CSR has no signatureAlgorithm"; end
	local md = SIGNATURE_DIGESTS[der:sub(obody, ostop - 1)];
	if not md then
		return nil, "not-acceptable", "the CSR's signature algorithm is not ECDSA or RSA PKCS#1 with SHA-256/384/512";
	end
	local stag, sbody, sstop = tlv(der, astop);
	if stag ~= 0x03 or sstop ~= stop or der:byte(sbody) ~= 0 then
		return nil, "bad-request", "the CSR's signature is not a BIT STRING at its end";
	end
	local ok, csr = pcall(ossl.csr.new, der, "DER");
	if not ok then return nil, "bad-request", "the CSR cannot be parsed: " .. tostring(csr); end
	local key = csr:getPublicKey();
	-- luaossl names key types by their OpenSSL long names
	local key_type = key:type();
	if key_type == "rsaEncryption" or key_type == "RSA" then
		local ok_bits, bits = pcall(function() return #key:getParameters().n:toBinary() * 8; end);
		if not ok_bits or bits < 2048 then
			return nil, "not-acceptable", "the CSR's RSA key is shorter than 2048 bits";
		end
	elseif key_type ~= "id-ecPublicKey" and key_type ~= "EC" then
		return nil, "not-acceptable", "the CSR's key is " .. tostring(key_type) .. "; EC or RSA keys only";
	end
	local digest = ossl.digest.new(md);
	digest:update(signed);
	local ok_sig, valid = pcall(key.verify, key, der:sub(sbody + 1, sstop - 1), digest);
	if not ok_sig or not valid then
		return nil, "not-acceptable", "the CSR's signature does not verify with the key it carries (no proof of possession)";
	end
	return csr;
end

-- DER of a subjectAltName holding one id-on-xmppAddr otherName (RFC 6120 13.7.1.4). Built here
-- rather than from an OpenSSL config string, which splits on the commas a JID may contain.
local function der_len(n)
	if n < 128 then return string.char(n); end
	local s = "";
	while n > 0 do s, n = string.char(n & 255) .. s, n >> 8; end
	return string.char(0x80 | #s) .. s;
end
local function der(tag, contents) return string.char(tag) .. der_len(#contents) .. contents; end
local XMPP_ADDR_OID = "\43\6\1\5\5\7\8\5"; -- 1.3.6.1.5.5.7.8.5
local function xmpp_addr_san(jid)
	return der(0x30, der(0xA0, der(0x06, XMPP_ADDR_OID) .. der(0xA0, der(0x0C, jid))));
end

-- Signs a certificate for the CSR's key naming bare_jid; returns the certificate (luaossl), or
-- nil, text.
local function issue(csr, bare_jid, username)
	local ok, cert = pcall(function()
		local c = ossl.x509.new();
		c:setVersion(3);
		-- 16 random bytes, top bit clear: a positive serial no other certificate of this CA has
		local serial = ossl.rand.bytes(16);
		c:setSerial(ossl.bignum.fromBinary(string.char(serial:byte(1) & 0x7f) .. serial:sub(2)));
		local subject = ossl.name.new();
		subject:add("CN", username);
		c:setSubject(subject);
		c:setIssuer(ca_cert:getSubject());
		c:setPublicKey(csr:getPublicKey());
		local now = os.time();
		-- five minutes back: a client whose clock is a little behind can use it at once
		c:setLifetime(now - 300, now + lifetime_days * 86400);
		c:addExtension(ossl.extension.new("basicConstraints", "critical,CA:FALSE"));
		c:addExtension(ossl.extension.new("keyUsage", "critical,digitalSignature"));
		c:addExtension(ossl.extension.new("extendedKeyUsage", "clientAuth"));
		c:addExtension(ossl.extension.new("subjectAltName", "DER", xmpp_addr_san(bare_jid)));
		c:addExtension(ossl.extension.new("subjectKeyIdentifier", "hash", { subject = c }));
		c:addExtension(ossl.extension.new("authorityKeyIdentifier", "keyid", { issuer = ca_cert }));
		assert(c:sign(ca_key, "sha256"));
		return c;
	end);
	if not ok then return nil, tostring(cert); end
	return cert;
end

---------------------------------------------------------------------------- the three features
module:add_feature(NS_ADD);
module:add_feature(NS_LIST);
module:add_feature(NS_REVOKE);

local function error_reply(origin, stanza, condition, text)
	local kind = (condition == "internal-server-error" or condition == "resource-constraint") and "wait" or "modify";
	if condition == "forbidden" or condition == "not-acceptable" then kind = "cancel"; end
	if condition == "item-not-found" or condition == "feature-not-implemented" then kind = "cancel"; end
	origin.send(st.error_reply(stanza, kind, condition, text, host));
	return true;
end

-- The account's certificates, or nil once an internal-server-error reply went out (logged).
local function certificates_or_reply(origin, stanza, username)
	local list, err = certificates(username);
	if not list then
		module:log("error", "reading the certificates of %s failed: %s", username, tostring(err));
		error_reply(origin, stanza, "internal-server-error", "the certificate list cannot be read");
	end
	return list;
end

local function decode_b64(text)
	if type(text) ~= "string" then return nil; end
	text = text:gsub("%s", "");
	if text == "" or #text % 4 ~= 0 or text:find("[^%w+/=]") then return nil; end
	return base64.decode(text);
end

module:hook("iq-set/self/" .. NS_ADD .. ":add-certificate-request", function(event)
	local origin, stanza = event.origin, event.stanza;
	local username = origin.username;
	local request = stanza.tags[1];
	local name = request:get_child_text("name");
	local csr_der = decode_b64(request:get_child_text("x509certificate-signing-request"));
	if type(name) ~= "string" or name == "" or #name > 128 then
		return error_reply(origin, stanza, "bad-request", "<name> must hold a label of 1 to 128 bytes");
	end
	if not csr_der then
		return error_reply(origin, stanza, "bad-request",
			"<x509certificate-signing-request> must hold the base64 of a DER PKCS#10 request");
	end
	if origin.sacm_ccm2_enrolled then
		-- one enrollment per enrollment login: a stolen session cannot mint certificates at will
		return error_reply(origin, stanza, "forbidden", "this enrollment session has added its certificate already");
	end
	if not ca_cert then
		module:log("error", "add-cert for %s refused: %s", username, ca_problem or "no CA");
		return error_reply(origin, stanza, "internal-server-error", "the server cannot sign certificates now");
	end
	local list = certificates_or_reply(origin, stanza, username);
	if not list then return true; end
	-- Expired certificates can never log in again: they leave the list when a new one comes.
	local now, live = os.time(), 0;
	for fp, record in pairs(list) do
		if record.not_after <= now then list[fp] = nil; else live = live + 1; end
	end
	if live >= max_certificates then
		return error_reply(origin, stanza, "resource-constraint",
			("the account holds %d unexpired certificates, the most allowed; revoke one first"):format(live));
	end
	local csr, condition, text = check_csr(csr_der);
	if not csr then return error_reply(origin, stanza, condition, text); end
	local bare = username .. "@" .. host;
	local cert, why = issue(csr, bare, username);
	if not cert then
		module:log("error", "signing a certificate for %s failed: %s", bare, why);
		return error_reply(origin, stanza, "internal-server-error", "signing the certificate failed");
	end
	local cert_der = cert:tostring("DER");
	local fingerprint = cert:digest("sha256", "x"):lower();
	local _, not_after = cert:getLifetime();
	list[fingerprint] = { name = name, der = base64.encode(cert_der), issued = now, not_after = math.floor(not_after) };
	local ok, serr = certs_store:set(username, list);
	if not ok then
		module:log("error", "storing the certificate of %s failed: %s", bare, tostring(serr));
		return error_reply(origin, stanza, "internal-server-error", "the certificate could not be stored");
	end
	if origin.sacm_ccm2_enrollment then origin.sacm_ccm2_enrolled = true; end
	module:log("info", "issued certificate %s (%q) to %s, valid until %s", fingerprint, name, bare,
		datetime.datetime(not_after));
	origin.send(st.reply(stanza)
		:tag("add-certificate-result", { xmlns = NS_ADD })
			:text_tag("x509certificate", base64.encode(cert_der)));
	return true;
end);

-- The resources of username's live sessions that logged in with this certificate.
local function sessions_of(username, fingerprint)
	local found = {};
	local user = prosody.hosts[host].sessions[username];
	for resource, session in pairs(user and user.sessions or {}) do
		if session.sacm_ccm2_fingerprint == fingerprint then found[resource] = session; end
	end
	return found;
end

module:hook("iq-get/self/" .. NS_LIST .. ":list-certificates-request", function(event)
	local origin, stanza = event.origin, event.stanza;
	local list, err = certificates(origin.username);
	if not list then
		module:log("error", "reading the certificates of %s failed: %s", origin.username, tostring(err));
		return error_reply(origin, stanza, "internal-server-error", "the certificate list cannot be read");
	end
	-- The ProtoXEP's wrapper opens as <list-of-certficiates> and closes as </list-of-certificates>;
	-- the correctly spelt one is used (docs/protocol.md).
	local reply = st.reply(stanza):tag("list-of-certificates", { xmlns = NS_LIST });
	local order = {};
	for fp, record in pairs(list) do order[#order + 1] = { fp = fp, record = record }; end
	table.sort(order, function(a, b) return a.record.issued < b.record.issued; end);
	for _, entry in ipairs(order) do
		local record = entry.record;
		reply:tag("x509certificate", { ["last-used"] = record.last_used and datetime.datetime(record.last_used) or nil })
			:text_tag("name", record.name)
			:text_tag("x509cert", record.der);
		local users = sessions_of(origin.username, entry.fp);
		if next(users) then
			reply:tag("users");
			for resource in pairs(users) do reply:text_tag("resource", resource); end
			reply:up();
		end
		reply:up();
	end
	origin.send(reply);
	return true;
end);

module:hook("iq-set/self/" .. NS_REVOKE .. ":revoke-certificate", function(event)
	local origin, stanza = event.origin, event.stanza;
	local username = origin.username;
	local fp_el = stanza.tags[1]:get_child("fingerprint");
	if not fp_el then return error_reply(origin, stanza, "bad-request", "<revoke-certificate> needs a <fingerprint>"); end
	if fp_el.attr.hash ~= "sha-256" then
		return error_reply(origin, stanza, "feature-not-implemented",
			("fingerprints are SHA-256: hash='sha-256', not %q"):format(tostring(fp_el.attr.hash)));
	end
	local fingerprint = fp_el:get_text():gsub("[%s:]", ""):lower();
	if not fingerprint:match("^" .. ("%x"):rep(64) .. "$") then
		return error_reply(origin, stanza, "bad-request", "the fingerprint must be 64 hex digits (SHA-256 of the DER certificate)");
	end
	local list = certificates_or_reply(origin, stanza, username);
	if not list then return true; end
	if not list[fingerprint] then
		return error_reply(origin, stanza, "item-not-found", "the account has no certificate with that fingerprint");
	end
	local name = list[fingerprint].name;
	list[fingerprint] = nil;
	local ok, serr = certs_store:set(username, list);
	if not ok then
		module:log("error", "storing the certificates of %s failed: %s", username, tostring(serr));
		return error_reply(origin, stanza, "internal-server-error", "the revocation could not be stored");
	end
	module:log("info", "%s revoked its certificate %s (%q)", username, fingerprint, name);
	-- the answer first: the session asking may be one of those closed next
	origin.send(st.reply(stanza));
	for resource, session in pairs(sessions_of(username, fingerprint)) do
		module:log("info", "closing %s@%s/%s: it logged in with the revoked certificate", username, host, resource);
		session:close({ condition = "not-authorized", text = "the certificate this session logged in with was revoked" });
	end
	return true;
end);

-- A session that authenticated with a certificate revoked before it bound a resource (it is in
-- no session list yet, so the revocation could not close it) must not bind.
module:hook("pre-resource-bind", function(event)
	local session = event.session;
	local fingerprint = session.sacm_ccm2_fingerprint;
	if not fingerprint then return; end
	local ok, why = certificate_allowed(session.username, fingerprint);
	if not ok then
		event.error = { type = "auth", condition = "not-authorized", text = why };
		return false;
	end
end);

-- Deleting an account removes its certificates and its enrollment with it.
module:hook_global("user-deleted", function(event)
	if event.host ~= host then return; end
	certs_store:set(event.username, nil);
	enroll_store:set(event.username, nil);
end);
