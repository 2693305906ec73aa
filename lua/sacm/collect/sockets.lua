--- Collection kind "sockets": listening TCP sockets and bound UDP sockets, from /proc/net
-- (tcp, tcp6, udp, udp6), each mapped to the process that holds it where /proc/PID/fd says so.
local fs = require "sacm.fs"
local procfs = require "sacm.procfs"
local text = require("sacm.collect").text

local M = {
  kind = "sockets",
  description = "listening TCP and bound UDP sockets with their owning processes",
  version = 1,
}

-- The kernel's socket states (include/net/tcp_states.h) that mean "waiting for peers".
local TCP_LISTEN = "0A"
local UDP_UNCONNECTED = "07" -- TCP_CLOSE: a bound, unconnected UDP socket

local TABLES = {
  { path = "/proc/net/tcp", proto = "tcp", family = "inet" },
  { path = "/proc/net/tcp6", proto = "tcp", family = "inet6" },
  { path = "/proc/net/udp", proto = "udp", family = "inet" },
  { path = "/proc/net/udp6", proto = "udp", family = "inet6" },
}

-- /proc/net prints each 32-bit word of an address as the integer the host holds in memory:
-- packing it back in native order gives the address bytes in network order.
local function address_bytes(hex, little_endian)
  local fmt = little_endian == nil and "=I4" or (little_endian and "<I4" or ">I4")
  local out = {}
  for i = 1, #hex, 8 do
    out[#out + 1] = string.pack(fmt, tonumber(hex:sub(i, i + 7), 16))
  end
  return table.concat(out)
end

local function format_inet(b)
  return ("%d.%d.%d.%d"):format(b:byte(1, 4))
end

-- RFC 5952 text: lowercase, no leading zeros, the longest run (first if tied) of two or more
-- zero groups as "::", IPv4-mapped addresses with a dotted tail.
local function format_inet6(b)
  if b:sub(1, 10) == ("\0"):rep(10) and b:sub(11, 12) == "\255\255" then
    return "::ffff:" .. format_inet(b:sub(13, 16))
  end
  local groups = {}
  for i = 1, 16, 2 do groups[#groups + 1] = (b:byte(i) << 8) | b:byte(i + 1) end
  local best_start, best_len, start = nil, 1, nil
  for i = 1, 9 do
    if i <= 8 and groups[i] == 0 then
      start = start or i
    elseif start then
      if i - start > best_len then best_start, best_len = start, i - start end
      start = nil
    end
  end
  local parts = {}
  for i = 1, 8 do parts[i] = ("%x"):format(groups[i]) end
  if not best_start then return table.concat(parts, ":") end
  local head = table.concat(parts, ":", 1, best_start - 1)
  local tail = table.concat(parts, ":", best_start + best_len, 8)
  return head .. "::" .. tail
end

--- format_address(hex [, little_endian]) -> text of a /proc/net address ("0100007F" ->
-- "127.0.0.1"; 32 hex digits -> IPv6). Byte order defaults to the host's.
function M.format_address(hex, little_endian)
  local b = address_bytes(hex, little_endian)
  return #b == 4 and format_inet(b) or format_inet6(b)
end

--- parse_proc_net(text, proto, family [, little_endian]) -> items {proto, family, address,
-- port, uid, inode} for the listening (TCP, state 0A) or bound (UDP, state 07) sockets of one
-- /proc/net/{tcp,tcp6,udp,udp6} table. Sockets with port 0 are left out.
function M.parse_proc_net(s, proto, family, little_endian)
  local want = proto == "tcp" and TCP_LISTEN or UDP_UNCONNECTED
  local items = {}
  for line in s:gmatch("[^\n]+") do
    local f = {}
    for field in line:gmatch("%S+") do f[#f + 1] = field end
    if #f >= 10 and f[1]:match("^%d+:$") and f[4] == want then
      local addr, port = f[2]:match("^(%x+):(%x+)$")
      port = port and tonumber(port, 16)
      if addr and port ~= 0 then
        items[#items + 1] = {
          proto = proto, family = family,
          address = M.format_address(addr, little_endian), port = port,
          uid = tonumber(f[8]), inode = tonumber(f[10]),
        }
      end
    end
  end
  return items
end

local function compare(a, b)
  if a.proto ~= b.proto then return a.proto < b.proto end
  if a.family ~= b.family then return a.family < b.family end
  if a.port ~= b.port then return a.port < b.port end
  if a.address ~= b.address then return a.address < b.address end
  return a.inode < b.inode
end

function M.applicable()
  if fs.exists("/proc/net/tcp") then return true end
  return false, "/proc/net is not available"
end

--- collect() -> {attributes = {count}, items = {proto, family, address, port, uid, inode,
-- pid, process}} sorted by proto, family, port, address. pid and process (the owner's comm)
-- are absent when no process we may look into holds the socket.
function M.collect()
  local items = {}
  for _, t in ipairs(TABLES) do
    local s = fs.read(t.path) -- tcp6/udp6 are missing when IPv6 is disabled
    if s then
      for _, item in ipairs(M.parse_proc_net(s, t.proto, t.family)) do items[#items + 1] = item end
    end
  end
  table.sort(items, compare)
  local inodes = {}
  for _, item in ipairs(items) do
    if item.inode ~= 0 then inodes[item.inode] = true end
  end
  local owners = procfs.socket_owners(inodes)
  local names = {}
  for _, item in ipairs(items) do
    local pid = owners[item.inode]
    if pid then
      if names[pid] == nil then
        local p = procfs.process(pid)
        names[pid] = p and p.comm or false
      end
      item.pid = pid
      item.process = names[pid] and text(names[pid]) or nil
    end
  end
  return { attributes = { count = #items }, items = items }
end

return M
