--- sacm.rolie.auth: who a request comes from (TLS client certificate or HTTP Basic over TLS),
-- stored password hashes, and the access rules of workspaces and collections.
--
--   local auth = require "sacm.rolie.auth"
--   local users = { alice = auth.hash_password("s3cret") }
--   local a = auth.new({ users = users, access = { private = { read = { "user:alice" } } } })
--   local who, err = a:identify(req)          -- principal, or nil, err (not-authorized)
--   if a:allowed(who, "private", "results", "read") then ... end
local crypto = require "sacm.crypto"
local http = require "sacm.http"
local errors = require "sacm.error"

local M = {}

M.DEFAULT_ITERATIONS = 20000
M.CACHE_SIZE = 256

local function b64(s) return crypto.base64_encode(s) end

-- checked in place of an unknown user's hash
local DUMMY = ("pbkdf2-sha256$%d$%s$%s"):format(M.DEFAULT_ITERATIONS, b64(("\0"):rep(16)), b64(("\0"):rep(32)))

--- hash_password(password [, opts]) -> "pbkdf2-sha256$ITERATIONS$SALT$KEY" (salt and key in base64).
-- opts.iterations (default M.DEFAULT_ITERATIONS). Verification runs on the loop thread, so the
-- count trades brute-force cost against a stall per login (20000 is about 10 ms); successful
-- logins are cached, so it is paid once per user and password.
---@param password string
---@param opts? {iterations?: integer}
---@return string hash "pbkdf2-sha256$ITERATIONS$SALT$KEY"
function M.hash_password(password, opts)
  if type(password) ~= "string" then error("hash_password: password must be a string", 2) end
  local iterations = opts and opts.iterations or M.DEFAULT_ITERATIONS
  local salt = crypto.random(16)
  return ("pbkdf2-sha256$%d$%s$%s"):format(iterations, b64(salt),
    b64(crypto.pbkdf2("sha256", password, salt, iterations, 32)))
end

-- Equal-length strings compared without an early exit, so timing does not tell how much matched.
local function same(a, b)
  if #a ~= #b then return false end
  local diff = 0
  for i = 1, #a do diff = diff | (a:byte(i) ~ b:byte(i)) end
  return diff == 0
end

--- verify_password(stored, password) -> boolean. stored: "pbkdf2-sha256$N$SALT$KEY" or the
-- plain salted form "sha256$SALT$HEX" (hex of SHA-256(salt .. password)). Raises on a stored
-- value of neither form (a configuration error).
function M.verify_password(stored, password)
  local n, salt, key = stored:match("^pbkdf2%-sha256%$(%d+)%$([^$]+)%$([^$]+)$")
  if n then
    salt, key = crypto.base64_decode(salt), crypto.base64_decode(key)
    local iterations = math.tointeger(tonumber(n))
    if not salt or not key or not iterations or iterations < 1 or #key < 16 then
      error("malformed pbkdf2-sha256 password hash", 2)
    end
    return same(crypto.pbkdf2("sha256", password, salt, iterations, #key), key)
  end
  local s, hex = stored:match("^sha256%$([^$]*)%$(%x+)$")
  if s and #hex == 64 then
    return same(crypto.hex(crypto.sha256(s .. password)), hex:lower())
  end
  error("password hashes must be pbkdf2-sha256$N$SALT$KEY or sha256$SALT$HEX", 2)
end

local Auth = {}
Auth.__index = Auth
function Auth:__tostring() -- never the users' password hashes
  local n = 0
  for _ in pairs(self.users or {}) do n = n + 1 end
  return ("ROLIE authentication (realm %s, %d users)"):format(tostring(self.realm), n)
end

--- new{users = {name = hash}, access = {["workspace"] | ["workspace/collection"] = {read = {...},
-- write = {...}}}, realm} -> auth. Entries of read and write lists: "*" (anyone, also without
-- credentials), "authenticated", "user:NAME", "subject:DN" (RFC 2253, as in req.tls.peer.subject),
-- "san:VALUE" ("san:xmpp:orchestrator@grid.example", "san:DNS:host"), "fingerprint:HEX".
function M.new(opts)
  opts = opts or {}
  local users = {}
  for name, hash in pairs(opts.users or {}) do
    if type(name) ~= "string" or type(hash) ~= "string" then error("auth: users maps names to password hashes", 2) end
    -- fail at start-up, not at the first login
    local ok, err = pcall(M.verify_password, hash, "")
    if not ok then error(("auth: user %s: %s"):format(name, errors.message(err)), 2) end
    users[name] = hash
  end
  for key, rule in pairs(opts.access or {}) do
    if type(key) ~= "string" or type(rule) ~= "table" then error("auth: access maps paths to {read, write}", 2) end
    for op, list in pairs(rule) do
      if (op ~= "read" and op ~= "write") or type(list) ~= "table" then
        error(("auth: access[%q] may only have read and write lists"):format(key), 2)
      end
    end
  end
  return setmetatable({ users = users, access = opts.access or {}, realm = opts.realm or "sacm",
    verified = {}, verified_count = 0 }, Auth)
end

function Auth:challenge()
  return ('Basic realm="%s", charset="UTF-8"'):format(self.realm)
end

-- A successful (user, password) is remembered by a digest of both, so the slow hash runs once.
function Auth:_check(user, password)
  local stored = self.users[user]
  local key = crypto.sha256(user .. "\0" .. password .. "\0" .. (stored or ""))
  if stored and self.verified[key] then return true end
  -- an unknown user costs as much as a wrong password, so timing does not reveal names
  local ok = M.verify_password(stored or DUMMY, password) and stored ~= nil
  if ok then
    if self.verified_count >= M.CACHE_SIZE then self.verified, self.verified_count = {}, 0 end
    self.verified[key] = true
    self.verified_count = self.verified_count + 1
  end
  return ok
end

--- auth:identify(req) -> principal | nil, err (not-authorized: bad Basic credentials).
-- principal = {user = name} for Basic, {peer = req.tls.peer} for a verified client certificate,
-- {} for nobody. Credentials that were sent must be right, whatever the resource.
function Auth:identify(req)
  local who = { peer = req.tls and req.tls.peer }
  if req.headers.authorization then
    local user, password = http.basic_auth(req)
    if not user then return nil, password end
    if not self:_check(user, password) then
      return nil, errors.new("not-authorized", "wrong user name or password")
    end
    who.user = user
  end
  return who
end

local function matches(who, entry)
  if entry == "*" then return true end
  if entry == "authenticated" then return who.user ~= nil or who.peer ~= nil end
  local kind, value = entry:match("^(%a+):(.+)$")
  if kind == "user" then return who.user == value end
  local peer = who.peer
  if not peer then return false end
  if kind == "subject" then return peer.subject == value end
  if kind == "fingerprint" then return peer.fingerprint == value:lower():gsub(":", "") end
  if kind == "san" then
    for _, san in ipairs(peer.sans or {}) do
      if san == value then return true end
    end
  end
  return false
end

--- auth:rule(workspace, collection, op) -> the list that decides (collection's, else workspace's).
function Auth:rule(workspace, collection, op)
  local c = self.access[workspace .. "/" .. collection]
  if c and c[op] then return c[op] end
  local w = self.access[workspace]
  return w and w[op] or {}
end

--- auth:allowed(principal, workspace, collection, op) -> boolean. op: "read" or "write".
function Auth:allowed(who, workspace, collection, op)
  for _, entry in ipairs(self:rule(workspace, collection, op)) do
    if matches(who, entry) then return true end
  end
  return false
end

--- anonymous(principal) -> true when the request carried no identity at all.
function M.anonymous(who)
  return who.user == nil and who.peer == nil
end

return M
