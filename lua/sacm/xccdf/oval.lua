--- sacm.xccdf.oval: SSG's OVAL definitions next to sacmrun's rules. Which OVAL definitions a
-- policy engine's rules name (through their `ssg` references), a document holding only those
-- definitions and what they need (tests, objects, states, variables), so `oscap oval eval`
-- judges them in one run instead of the ~900 of SSG's file, and the verdicts that run gives.
-- spec/agreement_spec.lua and bench/assess-vs-oscap.sh use it.
--
--   local pairs_ = oval.mapped(engine:rules(), oval_text)        -- {rule_id, ssg, definition}
--   local doc, externals = oval.subset(oval_text, { "oval:ssg-...:def:1", ... })
local xml = require "sacm.xml"
local time = require "sacm.time"

local M = {}

M.NS = "http://oval.mitre.org/XMLSchema/oval-definitions-5"
M.NS_COMMON = "http://oval.mitre.org/XMLSchema/oval-common-5"
M.NS_VARIABLES = "http://oval.mitre.org/XMLSchema/oval-variables-5"
M.NS_RESULTS = "http://oval.mitre.org/XMLSchema/oval-results-5"
M.SSG_RULE = "xccdf_org.ssgproject.content_rule_"
local SECTIONS = { "definitions", "tests", "objects", "states", "variables" }

--- definition_of(ssg_rule_id) -> SSG's OVAL definition id for an SSG XCCDF rule id.
function M.definition_of(rule)
  return "oval:ssg-" .. rule:gsub("^" .. M.SSG_RULE:gsub("%p", "%%%0"), "") .. ":def:1"
end

--- mapped(rules, oval_text [, skip]) -> list of {rule_id, ssg, definition}: each (sacmrun rule,
-- SSG rule) pair whose SSG rule has an OVAL definition in oval_text. skip = {[rule_id] = why}
-- leaves rules out.
function M.mapped(rules, oval_text, skip)
  local out = {}
  for _, r in ipairs(rules) do
    if not (skip and skip[r.rule_id]) then
      for _, ref in ipairs(r.references or {}) do
        if ref.system == "ssg" then
          local def = M.definition_of(ref.id)
          if oval_text:find('id="' .. def .. '"', 1, true) then
            out[#out + 1] = { rule_id = r.rule_id, ssg = ref.id, definition = def }
          end
        end
      end
    end
  end
  return out
end

-- Every id an OVAL element refers to: *_ref attributes, and the state and object ids held as
-- text by filter, object_reference and var_ref elements.
local function refs_of(el, out)
  for k, v in pairs(el.attr) do
    if k:sub(-4) == "_ref" then out[#out + 1] = v end
  end
  if el.name == "filter" or el.name == "object_reference" or el.name == "var_ref" then out[#out + 1] = el:get_text() end
  for _, c in ipairs(el) do
    if type(c) == "table" then refs_of(c, out) end
  end
  return out
end

--- subset(oval_text, definition_ids) -> the text of an OVAL definitions document holding those
-- definitions and everything they refer to, list of external variable ids it needs | nil, err.
function M.subset(oval_text, ids)
  local doc, err = xml.parse(oval_text, { max_bytes = #oval_text + 1 })
  if not doc then return nil, "the OVAL document does not parse: " .. tostring(err) end
  local by_id = {}
  for _, name in ipairs(SECTIONS) do
    local sec = doc:child(name, M.NS)
    if sec then
      for _, c in ipairs(sec) do
        if type(c) == "table" and c.attr.id then by_id[c.attr.id] = c end
      end
    end
  end
  local keep, queue = {}, {}
  for _, id in ipairs(ids) do
    if not by_id[id] then return nil, ("no OVAL definition %s in the document"):format(id) end
    queue[#queue + 1] = id
  end
  while #queue > 0 do
    local id = table.remove(queue)
    if not keep[id] and by_id[id] then
      keep[id] = true
      for _, ref in ipairs(refs_of(by_id[id], {})) do queue[#queue + 1] = ref end
    end
  end
  -- white space between the top-level elements as in SSG's file: OpenSCAP's reader (1.3.7)
  -- misreads a local_variable's function when its element follows another without any
  local out = xml.element("oval_definitions", { xmlns = M.NS })
  out:add("\n"):add(doc:child("generator", M.NS)):add("\n")
  local externals = {}
  for _, name in ipairs(SECTIONS) do
    local sec = doc:child(name, M.NS)
    local kept = {}
    for _, c in ipairs(sec or {}) do
      if type(c) == "table" and keep[c.attr.id] then
        kept[#kept + 1] = c
        if c.name == "external_variable" then externals[#externals + 1] = c.attr.id end
      end
    end
    if #kept > 0 then
      out:tag(name):add("\n")
      for _, c in ipairs(kept) do out:add(c):add("\n") end
      out:up():add("\n")
    end
  end
  table.sort(externals)
  return '<?xml version="1.0" encoding="UTF-8"?>\n' .. xml.serialize(out) .. "\n", externals
end

--- variables(values) -> an OVAL variables document: values = {[external variable id] =
-- {datatype = "int"|"string", value = ...}}.
function M.variables(values)
  local v = xml.element("oval_variables", { xmlns = M.NS_VARIABLES })
  v:tag("generator")
    :tag("schema_version", { xmlns = M.NS_COMMON }):text("5.11.2"):up()
    :tag("timestamp", { xmlns = M.NS_COMMON }):text(os.date("!%Y-%m-%dT%H:%M:%S", math.floor(time.now()))):up()
  v:up():tag("variables")
  local ids = {}
  for id in pairs(values) do ids[#ids + 1] = id end
  table.sort(ids)
  for _, id in ipairs(ids) do
    v:tag("variable", { id = id, datatype = values[id].datatype, comment = values[id].comment or id })
      :tag("value"):text(tostring(values[id].value)):up():up()
  end
  return '<?xml version="1.0" encoding="UTF-8"?>\n' .. xml.serialize(v) .. "\n"
end

--- verdicts(results_text) -> {[definition id] = "true" | "false" | "error" | ...} of an OVAL
-- results document (`oscap oval eval --results`).
function M.verdicts(text)
  local out = {}
  for def, result in text:gmatch('<definition[^>]-definition_id="([^"]+)"[^>]-result="([^"]+)"') do out[def] = result end
  for result, def in text:gmatch('<definition[^>]-result="([^"]+)"[^>]-definition_id="([^"]+)"') do out[def] = result end
  return out
end

return M
