-- The sacmrun side of bench/http.sh: an HTTPS server whose handler answers every request with
-- the same small body nginx serves as a static file. Prints its port, then serves until SIGTERM.
-- usage: sacmrun bench/http_server.lua CERT KEY BODY_FILE
local http = require "sacm.http"
local fs = require "sacm.fs"

local cert, key, body_file = arg[1], arg[2], arg[3]
local body = assert(fs.read(body_file))
local headers = { ["Content-Type"] = "text/plain" }
local srv = assert(http.listen({
  host = "127.0.0.1", port = 0, cert = cert, key = key,
  limits = { connections = 1024 },
}, function() return 200, headers, body end))
io.stdout:write(srv.port, "\n")
io.stdout:flush()
