--- bench/pubsub.lua: the sacmrun side of the `pubsub` benchmark (bench/pubsub.sh), written as a
-- playbook would be: sacm.xmpp connections, a sacm.xmpp.pubsub service, tasks for what happens at once.
--
--   ./sacmrun bench/pubsub.lua host port domain pubsub_jid ca_file pub_jid pub_pw sub_jid sub_pw node N W
--
-- The same work as bench/pubsub_ref.c (see there for the details): two connections in one process,
-- a transient node (persist_items = false, max_items = 10), a subscriber listening with
-- svc:events(), and a publisher keeping W publishes in flight (W tasks, each waiting for its
-- publish result before it takes the next item). Each payload is
--   <bench xmlns='urn:sacmrun:bench:pubsub' seq='SEQ' t='T'>PADDING</bench>
-- with T the monotonic clock when the publish was made; the subscriber takes each notification's
-- latency from it. Prints one line, as the other two clients do:
--   impl=sacmrun window=W items=N items_per_s= p50_ms= p99_ms= cpu_s= maxrss_kib= connect_s=
-- and exits 1 (reason on stderr) unless every item was published and notified exactly once.
-- Environment: PUBSUB_DEADLINE seconds for the whole run (default 300).
local xmpp = require "sacm.xmpp"
local pubsub = require "sacm.xmpp.pubsub"
local xml = require "sacm.xml"
local task = require "sacm.task"
local time = require "sacm.time"

local NS_BENCH = "urn:sacmrun:bench:pubsub"
local PADDING = ("0123456789abcdef"):rep(8) -- 128 bytes: about 200 with the element around it

local function die(fmt, ...)
  io.stderr:write("pubsub.lua: ", fmt:format(...), "\n")
  os.exit(1)
end

local function whole(what, text, min)
  local v = math.tointeger(tonumber(text))
  if not v or v < min then
    io.stderr:write(("pubsub.lua: %s must be a whole number >= %d, not '%s'\n"):format(what, min, tostring(text)))
    os.exit(2)
  end
  return v
end

if select("#", ...) ~= 12 then
  io.stderr:write("usage: sacmrun bench/pubsub.lua host port domain pubsub_jid ca_file pub_jid pub_pw " ..
    "sub_jid sub_pw node N W\n")
  os.exit(2)
end
local host, port_text, _, pubsub_jid, ca_file, pub_jid, pub_pw, sub_jid, sub_pw, node, n_text, w_text = ...
local port = whole("port", port_text, 1)
local n = whole("N", n_text, 1)
local window = whole("W", w_text, 1)
local deadline = tonumber(os.getenv("PUBSUB_DEADLINE") or "") or 300

-- Peak resident set size as the kernel counts it (the same counter as getrusage's ru_maxrss).
local function maxrss_kib()
  local f = io.open("/proc/self/status")
  if not f then return -1 end
  local text = f:read("a")
  f:close()
  return tonumber(text:match("VmHWM:%s*(%d+)")) or -1
end

local function connect(jid, password)
  -- PUBSUB_CONNECT_TIMEOUT: more than the default 15 s, for runs under valgrind on a loaded machine
  local conn, err = xmpp.connect({ jid = jid, password = password, host = host, port = port, cafile = ca_file,
    reconnect = false, connect_timeout = tonumber(os.getenv("PUBSUB_CONNECT_TIMEOUT")) })
  if not conn then die("cannot connect as %s: %s", jid, tostring(err)) end
  return conn
end

local function run()
  local t_connect = time.monotonic()
  local pub_task = task.spawn(connect, pub_jid, pub_pw)
  local sub_task = task.spawn(connect, sub_jid, sub_pw)
  local pub, sub = pub_task:await(), sub_task:await()
  local connect_s = time.monotonic() - t_connect

  local svc = pubsub.service(pub, pubsub_jid)
  local sub_svc = pubsub.service(sub, pubsub_jid)
  local ok, err = svc:create(node, { persist_items = false, max_items = 10 })
  if not ok then die("%s", tostring(err)) end
  -- listen before subscribing, so no notification can come before the stream exists
  local events = sub_svc:events(node, { limit = n + 16 })
  ok, err = sub_svc:subscribe(node)
  if not ok then die("%s", tostring(err)) end

  local seen, latency_ms = {}, {}
  local received, duplicates, acked, next_seq = 0, 0, 0, 0
  local t_first, cpu_first = time.monotonic(), os.clock()

  local receiver = task.spawn(function()
    while received < n do
      local ev = events:get()
      if not ev then return end
      local arrived = time.monotonic()
      for _, item in ipairs(ev.items or {}) do
        local p = item.payload
        local seq = p and p.ns == NS_BENCH and math.tointeger(tonumber(p.attr.seq))
        local t = p and tonumber(p.attr.t)
        if not seq or not t then die("a notification without a bench payload") end
        if seq < 1 or seq > n then die("a notification for item %d, not one of 1..%d", seq, n) end
        if seen[seq] then
          duplicates = duplicates + 1
        else
          seen[seq] = true
          latency_ms[#latency_ms + 1] = (arrived - t) * 1e3
          received = received + 1
        end
      end
    end
  end)

  local function publisher()
    while next_seq < n do
      next_seq = next_seq + 1
      local seq = next_seq
      local payload = xml.element("bench", { xmlns = NS_BENCH, seq = tostring(seq),
        t = ("%.9f"):format(time.monotonic()) }):text(PADDING)
      local id, e = svc:publish(node, "i" .. seq, payload)
      if not id then die("publish %d refused: %s", seq, tostring(e)) end
      acked = acked + 1
    end
  end
  local publishers = {}
  for i = 1, math.min(window, n) do publishers[i] = task.spawn(publisher) end
  for _, p in ipairs(publishers) do p:await() end
  receiver:await(math.max(1, deadline - (time.monotonic() - t_connect)))
  if received < n then
    die("deadline passed: %d of %d notifications, %d of %d publishes acknowledged", received, n, acked, n)
  end
  local t_last, cpu_last = time.monotonic(), os.clock()
  events:close()

  -- measuring is over; a refused delete only leaves a node behind
  ok, err = svc:delete(node)
  if not ok then io.stderr:write("pubsub.lua: ", tostring(err), "\n") end
  pub:close()
  sub:close()

  if received ~= n or acked ~= n or duplicates > 0 then
    die("%d of %d notifications, %d acknowledged, %d duplicates", received, n, acked, duplicates)
  end
  table.sort(latency_ms)
  local function percentile(p)
    local i = math.max(1, math.min(n, math.ceil(p * n)))
    return latency_ms[i]
  end
  print(("impl=sacmrun window=%d items=%d items_per_s=%.1f p50_ms=%.3f p99_ms=%.3f cpu_s=%.3f maxrss_kib=%d " ..
    "connect_s=%.4f"):format(window, received, n / (t_last - t_first), percentile(0.50), percentile(0.99),
    cpu_last - cpu_first, maxrss_kib(), connect_s))
end

-- the script runs as a task already; the deadline bounds a run whose server stopped answering
local done, err = task.with_timeout(deadline, function() run(); return true end)
if not done then die("%s", tostring(err)) end
