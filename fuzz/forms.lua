-- fuzz/forms.lua: data forms (lua/sacm/xmpp/forms.lua) as a command provider reads a submission
-- (lua/sacm/xmpp/commands.lua, Session:ask): find the form, parse it against the command's
-- definition, validate. For each of the grid's real command forms (lua/sacm/grid/protocol.lua):
-- nothing raises; a refusal is bad-request naming the fields; accepted values obey the
-- definition (types, ranges, options, identifier checks, size bounds); and submitting the
-- accepted values again gives the same values (forms.submit and forms.parse are symmetric).
local xml = require "sacm.xml"
local forms = require "sacm.xmpp.forms"
local proto = require "sacm.grid.protocol"
local compare = require "compare"

local DEFINITIONS = {
  collect = proto.collect_form({ "os", "packages", "services" }),
  evaluate = proto.evaluate_form({ "baseline", "ssh" }),
  cancel = proto.CANCEL_FORM,
  query = proto.QUERY_FORM,
  get = proto.GET_FORM,
}
local NAMES = {}
for name in pairs(DEFINITIONS) do NAMES[#NAMES + 1] = name end
table.sort(NAMES)

local function option_set(f)
  if not f.options then return nil end
  local set = {}
  for _, o in ipairs(f.options) do set[type(o) == "table" and o.value or o] = true end
  return next(set) and set or nil
end

-- The clean values of an accepted submission, judged against the definition.
local function obeys(def, values, name)
  local by_var = {}
  for _, f in ipairs(def.fields) do by_var[f.var] = f end
  for var, v in pairs(values) do
    local f = by_var[var]
    assert(f, ("%s: validate let through '%s', which the form does not define"):format(name, tostring(var)))
    local items = type(v) == "table" and v or { v }
    assert(#items <= forms.MAX_VALUES, name .. ": too many values accepted for " .. var)
    if forms.is_multi(f.type) then assert(type(v) == "table", name .. ": " .. var .. " is not a list") end
    local options = option_set(f)
    for _, item in ipairs(items) do
      if type(item) == "string" then
        assert(#item <= forms.MAX_VALUE_BYTES, name .. ": an over-long value accepted for " .. var)
      end
      if f.check then assert(f.check(item), ("%s: %s accepted %q, which its check refuses"):format(name, var, tostring(item))) end
      if options then assert(options[item], ("%s: %s accepted %q, not an option"):format(name, var, tostring(item))) end
      if f.datatype == "xs:integer" then
        assert(math.type(item) == "integer", name .. ": " .. var .. " is not an integer")
        local r = f.range
        if r then assert(item >= r.min and item <= r.max, name .. ": " .. var .. " out of range") end
      end
    end
  end
end

local function refusal(err, name)
  assert(type(err) == "table" and err.condition == "bad-request", name .. ": a refusal that is not bad-request")
  assert(type(err.text) == "string", name .. ": a refusal without text")
end

return function(data)
  local el = xml.parse(data)
  if not el then return end
  local x = forms.find(el) or el
  local form, err = forms.parse(x)
  if not form then return refusal(err, "parse") end
  -- a parsed form serves as a definition too (commands.lua's prefilled, answers read back)
  local ok, verr = forms.validate(form, form.values)
  if not ok then refusal(verr, "the form itself") end
  for _, name in ipairs(NAMES) do
    local def = DEFINITIONS[name]
    local parsed = assert(forms.parse(x, def))
    local values, why = forms.validate(def, parsed.values)
    if not values then
      refusal(why, name)
      assert(type(why.fields) == "table" and next(why.fields), name .. ": a refusal that names no field")
    else
      obeys(def, values, name)
      local sent = xml.parse(xml.serialize(forms.submit(def, values)))
      local back = assert(forms.validate(def, assert(forms.parse(sent, def)).values))
      -- submit sends a field's default for what values leave out (as a person accepting it
      -- would): only fields with a default may appear on the way back
      for var in pairs(back) do
        if values[var] == nil then
          local f
          for _, g in ipairs(def.fields) do if g.var == var then f = g end end
          assert(f and (f.value ~= nil or f.values ~= nil), ("%s: %s appeared in the round trip"):format(name, var))
          values[var] = back[var]
        end
      end
      local d = compare.difference(values, back, name)
      if d then error(("%s: submitting the accepted values again gives other values: %s"):format(name, d)) end
    end
  end
end
