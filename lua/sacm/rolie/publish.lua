--- sacm.rolie.publish: AtomPub POST of a new policy to the policies collection (RFC 5023 9.2).
--
-- The request body is the policy file itself (Content-Type application/x-lua or text/x-lua), or
-- an Atom entry whose atom:content has one of those types and the file as its text. The file is
-- compiled and validated in the policy sandbox (the engine's budgets; no posture is evaluated)
-- and its ids are checked against the loaded policies; only then is it written, atomically, as
-- POLICIES_DIR/<policy id>.lua, where every evaluator watching that directory loads it.
local fs = require "sacm.fs"
local xml = require "sacm.xml"
local atom = require "sacm.rolie.atom"

local M = {}

local LUA_TYPES = { ["application/x-lua"] = true, ["text/x-lua"] = true }

local function media_type(value)
  return (value or ""):match("^%s*([^;%s]+)"):lower()
end

--- policy_text(req) -> the Lua text of a POSTed policy | nil, status, message
function M.policy_text(req)
  local ctype = req.headers["content-type"]
  if not ctype then return nil, 415, "a Content-Type is required" end
  local mt = media_type(ctype)
  if LUA_TYPES[mt] then return req.body end
  if mt == "application/atom+xml" then
    local el, err = xml.parse(req.body, { max_depth = 16 })
    if not el then return nil, 400, "the entry is not well-formed XML: " .. tostring(err) end
    if el.name ~= "entry" or el.ns ~= atom.NS_ATOM then return nil, 400, "the body is not an atom:entry" end
    local content = el:child("content", atom.NS_ATOM)
    if not content then return nil, 400, "the entry has no atom:content" end
    if content.attr.src then return nil, 400, "the policy must be inline, not atom:content src" end
    if not LUA_TYPES[media_type(content.attr.type)] then
      return nil, 415, "atom:content must have type application/x-lua or text/x-lua"
    end
    for _, child in ipairs(content) do
      if type(child) ~= "string" then return nil, 400, "atom:content must hold text only" end
    end
    return content:get_text()
  end
  return nil, 415, "policies are accepted as application/x-lua, text/x-lua or an Atom entry"
end

--- create(engine, dir, text, reserved) -> summary (engine:check's), path | nil, status, message.
-- reserved: a table the caller keeps per provider, so two concurrent POSTs of one id cannot both
-- pass the checks before either file exists.
function M.create(engine, dir, text, reserved)
  if not utf8.len(text) then return nil, 400, "the policy is not UTF-8 text" end
  local summary, err = engine:check(text, "posted policy")
  if not summary then
    return nil, err.condition == "conflict" and 409 or 400, err.text
  end
  local id = summary.id
  local file = id .. ".lua" -- ids are letters, digits, '.', '_', '-' and start with one of the first two
  local path = dir .. "/" .. file
  if reserved[id] then return nil, 409, ("policy %s is being written by another request"):format(id) end
  reserved[id] = true
  local ok, status, message = pcall(function()
    local exists, eerr = fs.exists(path)
    if exists == nil then return 500, "cannot check " .. file .. ": " .. tostring(eerr) end
    if exists then return 409, ("%s already exists; policies are replaced by editing the directory"):format(file) end
    local written, werr = fs.write(path, text, { atomic = true })
    if not written then return 500, "writing " .. file .. " failed: " .. tostring(werr) end
    return 201
  end)
  reserved[id] = nil
  if not ok then error(status, 0) end
  if status ~= 201 then return nil, status, message end
  summary.file = file
  return summary, path
end

return M
