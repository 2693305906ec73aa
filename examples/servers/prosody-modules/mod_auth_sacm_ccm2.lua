-- mod_auth_sacm_ccm2: the auth provider of a SACM grid host (authentication = "sacm_ccm2").
--
-- Passwords (SCRAM-SHA-1, PLAIN over TLS) are Prosody's own internal_hashed accounts, with two
-- refusals added by mod_sacm_ccm2's enrollment: an account whose one-time enrollment password was
-- used or expired is certificate-only. SASL EXTERNAL is offered on TLS sessions and accepts a
-- client certificate only when
--   1. it chains to the CA of c2s_ssl.cafile (the TLS layer's verification) and is in its validity;
--   2. one of its id-on-xmppAddr names is a bare JID of this host, for an account that exists;
--   3. it is on that account's ccm2 list (mod_sacm_ccm2), unexpired and not revoked.
-- Step 3 is what mod_auth_ccert lacks: it accepts any CA-signed certificate, even for an account
-- that was never registered. Only one auth provider can serve a host, hence this module; it loads
-- mod_sacm_ccm2 (the ccm2 features and the certificate list) itself.
local new_sasl = require "util.sasl".new;
local jid_split = require "util.jid".split;
local jid_bare = require "util.jid".bare;

local host = module.host;
local ccm2 = module:depends("sacm_ccm2");

-- The password side is internal_hashed's provider, found among this host's providers (it offers
-- itself under its own name, which the host does not select, so it serves only through us).
module:depends("auth_internal_hashed");
local base;
for _, item in ipairs(module:get_host_items("auth-provider")) do
	if item.name == "internal_hashed" then base = item; end
end
assert(base, "mod_auth_sacm_ccm2: mod_auth_internal_hashed loaded but provides no auth provider");

local SAN = "2.5.29.17";
local XMPP_ADDR = "1.3.6.1.5.5.7.8.5";

-- The account a verified certificate names on this host: username, or nil, reason.
local function account_of(cert, authzid)
	local san = cert:extensions()[SAN];
	local names = san and san[XMPP_ADDR] or {};
	-- libstrophe sends its full JID as the authzid; the account is what it names
	local want = authzid ~= nil and authzid ~= "" and jid_bare(authzid) or nil;
	for _, addr in ipairs(names) do
		local node, addr_host, resource = jid_split(addr);
		if node and addr_host == host and not resource and (not want or want == addr or want == node) then
			return node;
		end
	end
	return nil, ("no xmppAddr of the certificate is a bare JID of %s%s"):format(host,
		want and (" matching the authzid " .. want) or "");
end

local function external(session, authzid)
	local log = session.log or module._log;
	local conn = session.conn;
	local sock = conn and conn.socket and conn:socket();
	if not (session.secure and sock and sock.getpeercertificate) then
		log("info", "SASL EXTERNAL refused: the session is not on TLS");
		return nil;
	end
	local cert = sock:getpeercertificate();
	if not cert then
		log("info", "SASL EXTERNAL refused: no client certificate was presented");
		return nil;
	end
	local chain_ok, errors = sock:getpeerverification();
	if not chain_ok then
		local why = {};
		for depth, errs in pairs(errors or {}) do why[#why + 1] = ("depth %s: %s"):format(depth, table.concat(errs, ", ")); end
		log("info", "SASL EXTERNAL refused: the certificate does not verify against c2s_ssl.cafile (%s)", table.concat(why, "; "));
		return nil;
	end
	if not cert:validat(os.time()) then
		log("info", "SASL EXTERNAL refused: the certificate is outside its validity period");
		return nil;
	end
	local username, why = account_of(cert, authzid);
	if not username then
		log("info", "SASL EXTERNAL refused: %s", why);
		return nil;
	end
	local fingerprint = cert:digest("sha256"):lower();
	local ok, reason = ccm2.certificate_allowed(username, fingerprint);
	if not ok then
		log("info", "SASL EXTERNAL refused for %s@%s (certificate %s): %s", username, host, fingerprint, reason);
		return nil;
	end
	session.sacm_ccm2_login = { kind = "certificate", fingerprint = fingerprint };
	return username, true;
end

-- base's methods copied, not inherited: usermanager replaces the provider's metatable with its own.
local provider = {};
for k, v in pairs(base) do provider[k] = v; end
provider.name = "sacm_ccm2";

-- The password refusals of mod_sacm_ccm2, logged with the reason.
local function password_ok(session, username)
	local ok, why = ccm2.password_allowed(username);
	if not ok then
		(session.log or module._log)("info", "password login refused for %s@%s: %s", username, host, why);
		return false;
	end
	session.sacm_ccm2_login = { kind = "password" };
	return true;
end

function provider.get_sasl_handler(session)
	-- internal_hashed's profile, its backends wrapped; a fresh table, since util.sasl caches the
	-- mechanism list in it
	local profile = {};
	for backend, fn in pairs(base.get_sasl_handler(session).profile) do
		if backend ~= "mechanisms" then profile[backend] = fn; end
	end
	for backend, fn in pairs(profile) do
		if backend == "plain_test" then
			profile[backend] = function(sasl, username, password, realm)
				if not password_ok(session, username) then return false, false; end -- account-disabled
				return fn(sasl, username, password, realm);
			end
		elseif backend:match("^scram_") then
			profile[backend] = function(sasl, username, realm)
				if not password_ok(session, username) then return nil, nil, nil, nil, false; end -- account-disabled
				return fn(sasl, username, realm);
			end
		elseif backend ~= "cb" then
			-- a backend this module does not know would bypass the refusals: leave it out
			profile[backend] = nil;
			module:log("warn", "SASL backend %s of internal_hashed is not offered through sacm_ccm2", backend);
		end
	end
	if session.secure then
		profile.external = function(authzid) return external(session, authzid); end
	end
	return new_sasl(host, profile);
end

module:provides("auth", provider);
module:log("debug", "auth provider sacm_ccm2 on %s (passwords: internal_hashed; EXTERNAL: the ccm2 list)", host);
