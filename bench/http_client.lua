-- The client side of bench/http_client.sh: sequential http.request GETs to one HTTPS server,
-- with keep-alive and without (keep_alive = false: a TLS handshake per request), in rounds that
-- take turns. Prints one line per round and mode, "ROUND <n> <keepalive|close> <requests/s>",
-- then checks that keep-alive really kept the connection (pool counters).
-- usage: sacmrun bench/http_client.lua URL CAFILE ROUNDS REQUESTS
local http = require "sacm.http"
local loop = require "sacm._loop"

local url, cafile = arg[1], arg[2]
local rounds, requests = tonumber(arg[3]), tonumber(arg[4])

local function measure(keep_alive)
  http.close_idle() -- every keep-alive round pays for its first handshake, as a fresh script would
  local t0 = loop.hrtime()
  for _ = 1, requests do
    local res, err = http.request{ url = url, cafile = cafile, keep_alive = keep_alive }
    if not res then error(tostring(err), 0) end
    if res.status ~= 200 then error("status " .. res.status, 0) end
  end
  return requests / ((loop.hrtime() - t0) / 1e9)
end

-- a warm-up of each: the CA file is loaded, the code paths are hot
measure(true)
measure(false)
local before = http.pool_stats()
for round = 1, rounds do
  local order = round % 2 == 1 and { true, false } or { false, true }
  for _, keep in ipairs(order) do
    print(("ROUND %d %s %.1f"):format(round, keep and "keepalive" or "close", measure(keep)))
  end
end
local after = http.pool_stats()
-- per keep-alive round one new connection, and per close round one per request
local want_opened = rounds + rounds * requests
if after.opened - before.opened ~= want_opened then
  error(("expected %d connections opened, saw %d"):format(want_opened, after.opened - before.opened), 0)
end
print(("POOL reused=%d opened=%d"):format(after.reused - before.reused, after.opened - before.opened))
