-- The sacmrun side of bench/slowloris.sh: a ROLIE provider over a small repository, with the
-- HTTPS server's default limits (256 connections, 64 per address, the default deadlines): those
-- are what is under test. Prints its port once it listens, and every second a line of the
-- server's counters on stderr; serves until SIGTERM.
-- usage: sacmrun bench/slowloris_server.lua CERT KEY DATABASE PORT
local repository = require "sacm.roles.repository"
local payload = require "sacm.grid.payload"
local crypto = require "sacm.crypto"
local rolie = require "sacm.rolie"
local task = require "sacm.task"

local cert, key, database, port = arg[1], arg[2], arg[3], math.tointeger(tonumber(arg[4]))
assert(cert and key and database and port, "usage: sacmrun bench/slowloris_server.lua CERT KEY DATABASE PORT")
local repo = assert(repository.open(database))
assert(repo.db:exec("PRAGMA synchronous = OFF")) -- a throw-away store
for i = 1, 200 do
  assert(repo:store_result(payload.result({
    id = crypto.uuid(), endpoint = ("host%d@grid.example/agent"):format(i % 20),
    hostname = ("host%d"):format(i % 20), rule_id = ("rule-%d"):format(i % 40), policy_id = "baseline",
    policy_version = ("%064d"):format(1), result = i % 3 == 0 and "fail" or "pass", severity = "medium",
    evaluated = 1763900000 + i, evidence = { "sshd_config: PermitRootLogin no" },
  })))
end
local provider = assert(rolie.serve({
  repository = repo,
  listen = { host = "127.0.0.1", port = port, cert = cert, key = key },
  users = { bench = rolie.hash_password("bench-pw") },
  access = { private = { read = { "user:bench" } } },
}))
io.stdout:write(provider.port, "\n")
io.stdout:flush()
task.spawn(function()
  while true do
    task.sleep(1)
    local s = provider.server:stats()
    io.stderr:write(("stats accepted=%d active=%d shed=%d refused=%d timeouts=%d requests=%d\n"):format(
      s.accepted, s.active, s.shed, s.refused, s.timeouts, s.requests))
  end
end)
