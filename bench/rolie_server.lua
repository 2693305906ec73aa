-- The sacmrun side of bench/rolie.sh: a repository of COUNT evaluation results served as ROLIE
-- feeds (Basic auth, the private results collection). Prints its port, then serves until SIGTERM.
-- usage: sacmrun bench/rolie_server.lua CERT KEY DATABASE COUNT
local repository = require "sacm.roles.repository"
local payload = require "sacm.grid.payload"
local crypto = require "sacm.crypto"
local rolie = require "sacm.rolie"

local cert, key, database, count = arg[1], arg[2], arg[3], math.tointeger(tonumber(arg[4] or "20000"))
local repo = assert(repository.open(database))
-- a throw-away store: loading it need not survive a crash, so one fsync at the end will do
assert(repo.db:exec("PRAGMA synchronous = OFF"))
local results = { "pass", "pass", "pass", "fail", "error", "notapplicable" }
for i = 1, count do
  assert(repo:store_result(payload.result({
    id = crypto.uuid(), endpoint = ("host%d@grid.example/agent"):format(i % 200),
    hostname = ("host%d"):format(i % 200), rule_id = ("rule-%d"):format(i % 40), policy_id = "baseline",
    policy_version = ("%064d"):format(1), result = results[i % #results + 1], severity = "medium",
    evaluated = 1763900000 + i, evidence = { "sshd_config: PermitRootLogin no" },
  })))
end
assert(repo.db:exec("PRAGMA synchronous = FULL"))
local provider = assert(rolie.serve({
  repository = repo,
  listen = { host = "127.0.0.1", port = 0, cert = cert, key = key, limits = { connections = 1024 } },
  users = { bench = rolie.hash_password("bench-pw") },
  access = { private = { read = { "user:bench" } } },
}))
io.stdout:write(provider.port, "\n")
io.stdout:flush()
