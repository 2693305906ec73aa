--- sacm.grid.shard: evaluators that share the fleet (docs/protocol.md, section 9).
--
-- The evaluators of one shard group divide the endpoints among themselves by rendezvous hashing
-- over the live members of the group: endpoint e belongs to the member m with the highest
-- score(m, e). Each evaluator sees the others through presence and entity caps (the same grid
-- account with one resource per evaluator gets its other resources' presence from the server;
-- separate accounts through the presence subscription of `peers`); a member is one that
-- advertises the evaluator role feature and the group's feature. A member that leaves cleanly, or
-- whose stream the server sees close, is gone with its unavailable presence; one that stops
-- answering pings (a crashed host, or a session the server keeps for resumption) is set aside
-- after at most probe_interval + probe_timeout seconds, and counts again when it answers.
--
--   local shard = require "sacm.grid.shard"
--   local s = shard.join(member, { group = "default", on_takeover = function(endpoints) ... end })
--   if s:take(endpoint) then evaluate(endpoint) end
--
-- Views differ for a moment while presence travels. Rendezvous hashing keeps the damage one-sided:
-- the owner of an endpoint in a set of members is its owner in every subset that holds it, so
-- two live evaluators can both believe they own an endpoint (both judge it, and judgment ids make
-- the repository keep one) but, while every member seen is alive, never both believe it is the
-- other's. What a member that died left unjudged is judged by its successors: on a takeover, the
-- endpoints whose posture arrived in the last handover_window seconds are handed to on_takeover.
local crypto = require "sacm.crypto"
local jidlib = require "sacm.jid"
local task = require "sacm.task"
local timer = require "sacm.timer"
local time = require "sacm.time"
local proto = require "sacm.grid.protocol"

local M = {}
local log = require("sacm.log").new("shard")

M.PROBE_INTERVAL = 5   -- seconds between pings of each other member
M.PROBE_TIMEOUT = 5    -- seconds a ping may take before the member is set aside
M.HANDOVER_WINDOW = 60 -- seconds of recent posture a successor judges again on a takeover
M.CAPS_RETRY = 3       -- seconds before a failed caps lookup of a member is tried again

local FEATURE_PREFIX = proto.NS_GRID .. ":shard:"

--- shard.feature(group) -> the disco feature a member of the group advertises.
function M.feature(group) return FEATURE_PREFIX .. group end

--- shard.score(jid, endpoint) -> integer: the first 8 bytes of SHA-256(jid "\n" endpoint), big-endian,
-- signed. jid is the member's full JID as the server routes it.
function M.score(jid, endpoint)
  return (string.unpack(">i8", crypto.sha256(jid .. "\n" .. endpoint)))
end

--- shard.owner(members, endpoint) -> the member (full JID) with the highest score; ties go to the
-- smaller JID (byte order). nil when members is empty.
function M.owner(members, endpoint)
  local best, best_score
  for _, m in ipairs(members) do
    local s = M.score(m, endpoint)
    if not best or s > best_score or (s == best_score and m < best) then best, best_score = m, s end
  end
  return best
end

-- A UUID-shaped identifier (RFC 9562 version 8: the bits are ours) from a hash of parts.
local function uuid_of(parts)
  local h = crypto.hex(crypto.sha256(table.concat(parts, "\n")))
  local n = tonumber(h:sub(17, 17), 16) % 4 + 1
  local variant = ("89ab"):sub(n, n)
  return ("%s-%s-8%s-%s%s-%s"):format(h:sub(1, 8), h:sub(9, 12), h:sub(14, 16), variant, h:sub(18, 20), h:sub(21, 32))
end

--- shard.judgment_id(endpoint, posture_ids, policies, [filter]) -> the id of the result set that
-- judges exactly this posture with exactly these policies: the same on every evaluator, so two
-- that both judged it during a handover deliver one set (the repository keeps a set by its id).
-- policies: list of {id, version}; filter: text naming any restriction (rules of some kinds only).
function M.judgment_id(endpoint, posture_ids, policies, filter)
  local parts = { "sacmrun judgment 1", endpoint, filter or "" }
  local ids = { table.unpack(posture_ids) }
  table.sort(ids)
  for _, id in ipairs(ids) do parts[#parts + 1] = "posture " .. id end
  local pols = {}
  for _, p in ipairs(policies) do pols[#pols + 1] = "policy " .. p.id .. " " .. p.version end
  table.sort(pols)
  for _, p in ipairs(pols) do parts[#parts + 1] = p end
  return uuid_of(parts)
end

--- shard.result_id(set_id, rule_id) -> the id of one result of a judgment.
function M.result_id(set_id, rule_id)
  return uuid_of({ "sacmrun result 1", set_id, rule_id })
end

local Shard = {}
Shard.__index = Shard

--- s:members() -> sorted list of the full JIDs counted now, this evaluator's included.
function Shard:members()
  if self.cached then return self.cached end
  local out = { self.me }
  for jid, p in pairs(self.peers) do
    if not p.suspect then out[#out + 1] = jid end
  end
  table.sort(out)
  self.cached = out
  return out
end

--- s:owner(endpoint) -> the full JID of the member that judges the endpoint, as seen here.
function Shard:owner(endpoint)
  return M.owner(self:members(), endpoint)
end

--- s:owns(endpoint) -> whether this evaluator judges the endpoint.
function Shard:owns(endpoint)
  return self:owner(endpoint) == self.me
end

--- s:take(endpoint) -> owns(endpoint); also notes that posture of the endpoint arrived now (what a
-- takeover judges again).
function Shard:take(endpoint)
  self.arrived[endpoint] = time.monotonic()
  return self:owns(endpoint)
end

-- Called whenever the set of members may have changed: hands over what this evaluator gained.
local function changed(self, why)
  local before = self.cached or self:members()
  self.cached = nil
  local after = self:members()
  if table.concat(before, " ") == table.concat(after, " ") then return end
  self.changes = self.changes + 1
  log.info("shard %s: %d member(s) (%s): %s", self.group, #after, why, table.concat(after, ", "))
  local gained, horizon = {}, time.monotonic() - self.handover_window
  for endpoint, at in pairs(self.arrived) do
    if at < horizon then
      self.arrived[endpoint] = nil -- old enough to have been judged by whoever owned it then
    elseif M.owner(after, endpoint) == self.me and M.owner(before, endpoint) ~= self.me then
      gained[#gained + 1] = endpoint
    end
  end
  if #gained > 0 then
    table.sort(gained)
    self.taken_over = self.taken_over + #gained
    log.info("shard %s: took over %d endpoint(s) with recent posture", self.group, #gained)
    if self.on_takeover then task.spawn({ name = "shard takeover" }, self.on_takeover, gained) end
  end
  for _, fn in ipairs(self.watchers) do task.spawn({ name = "shard change" }, fn, after) end
end

local function is_member(self, info)
  return info and info.features[proto.FEATURE.evaluator] and info.features[self.feature] or false
end

local function on_caps(self, jid, info)
  if self.closed or jidlib.equal(jid, self.me) or jidlib.bare(jid) == jid then return end
  if info then
    if is_member(self, info) then
      if not self.peers[jid] then
        self.peers[jid] = { suspect = false }
        changed(self, jid .. " joined")
      end
    elseif self.peers[jid] then
      self.peers[jid] = nil
      changed(self, jid .. " left the group")
    end
  elseif self.peers[jid] and not self.cache:entity(jid) then
    -- unavailable; a new ver still being verified (info nil, entity present) keeps its place
    self.peers[jid] = nil
    changed(self, jid .. " went offline")
  end
end

local function probe(self)
  for jid, p in pairs(self.peers) do
    if not p.probing then
      p.probing = true
      task.spawn({ name = "shard probe " .. jid }, function()
        local rtt, err = self.conn:ping(jid, self.probe_timeout)
        p.probing = false
        if self.closed or self.peers[jid] ~= p then return end
        if rtt and p.suspect then
          p.suspect = false
          changed(self, jid .. " answers again")
        elseif not rtt and not p.suspect then
          p.suspect = true
          log.warn("shard %s: %s did not answer a ping within %g s (%s); its endpoints go to the others",
            self.group, jid, self.probe_timeout, tostring(err))
          changed(self, jid .. " stopped answering")
        end
      end)
    end
  end
end

--- shard.join(member, opts) -> shard. member: a sacm.grid.member joined with a caps cache.
-- opts: group (default "default"), on_takeover (fn(endpoints) run as a task with the endpoints this
-- evaluator gained that had posture in the last handover_window seconds), probe_interval,
-- probe_timeout, handover_window (seconds; defaults M.PROBE_INTERVAL, M.PROBE_TIMEOUT,
-- M.HANDOVER_WINDOW).
function M.join(member, opts)
  opts = opts or {}
  local group = opts.group or "default"
  assert(type(group) == "string" and proto.valid_id(group), "a shard group is an identifier")
  local cache = assert(member.caps_cache, "shard.join needs a member joined with a caps cache")
  local self = setmetatable({
    group = group, feature = M.feature(group), conn = member.conn, cache = cache,
    me = jidlib.normalize(member.conn.jid) or member.conn.jid, peers = {}, arrived = {}, watchers = {},
    on_takeover = opts.on_takeover, changes = 0, taken_over = 0,
    probe_timeout = opts.probe_timeout or M.PROBE_TIMEOUT,
    handover_window = opts.handover_window or M.HANDOVER_WINDOW,
  }, Shard)
  self.watch = cache:on_update(function(jid, info) on_caps(self, jid, info) end)
  for _, jid in ipairs(cache:jids()) do on_caps(self, jid, cache:info_for(jid)) end
  self.prober = timer.every(opts.probe_interval or M.PROBE_INTERVAL, function() probe(self) end)
  return self
end

--- s:on_change(fn): fn(members) runs as a task each time the members counted here change.
function Shard:on_change(fn)
  self.watchers[#self.watchers + 1] = fn
end

function Shard:close()
  if self.closed then return end
  self.closed = true
  self.watch:remove()
  self.prober:cancel()
end

return M
