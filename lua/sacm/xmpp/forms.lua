--- sacm.xmpp.forms: XEP-0004 data forms (jabber:x:data) as Lua tables.
--
--   local x = forms.new{ type = "form", title = "Collect", form_type = "urn:example:collect",
--     fields = {
--       { var = "target", type = "jid-single", label = "Endpoint", required = true },
--       { var = "deep", type = "boolean", value = false },
--       { var = "kinds", type = "list-multi", options = { "packages", "services" } },
--     } }
--   local form = forms.parse(x)                      -- {type, title, fields, values, ...}
--   local answer = forms.submit(form, { target = "host1@grid.example", kinds = { "packages" } })
--   local values, err = forms.validate(form, forms.parse(answer).values)
--
-- Values are typed in Lua: booleans are booleans, list-multi / jid-multi / text-multi are lists of
-- strings, everything else a string. On the wire every value is text; which Lua type a value gets
-- comes from the field's type, taken from the form definition when the element does not say
-- (submissions usually carry only var and values).
--
-- Parsing never raises on bad input from the network: what cannot be understood is kept as text
-- and reported by validate(). Building from bad definitions (a programmer error) raises.
local xml = require "sacm.xml"
local errors = require "sacm.error"
local jidlib = require "sacm.xmpp.jid"

local M = {}

M.NS = "jabber:x:data"
M.NS_VALIDATE = "http://jabber.org/protocol/xdata-validate" -- XEP-0122

-- XEP-0122 datatypes whose values parse to Lua integers.
local INTEGER_DATATYPES = {
  ["xs:integer"] = true, ["xs:int"] = true, ["xs:long"] = true, ["xs:short"] = true,
  ["xs:byte"] = true, ["xs:nonNegativeInteger"] = true, ["xs:positiveInteger"] = true,
  ["xs:negativeInteger"] = true, ["xs:nonPositiveInteger"] = true,
  ["xs:unsignedInt"] = true, ["xs:unsignedLong"] = true, ["xs:unsignedShort"] = true,
  ["pubsub:integer-or-max"] = true, -- XEP-0060: an integer or the word "max"
}

local FORM_TYPES = { form = true, submit = true, result = true, cancel = true }

local FIELD_TYPES = {
  ["boolean"] = "single", ["fixed"] = "single", ["hidden"] = "single",
  ["jid-multi"] = "multi", ["jid-single"] = "single", ["list-multi"] = "multi",
  ["list-single"] = "single", ["text-multi"] = "multi", ["text-private"] = "single",
  ["text-single"] = "single",
}
M.FIELD_TYPES = FIELD_TYPES

--- is_multi(type) -> true for the field types whose value is a list.
---@param ftype string a XEP-0004 field type
---@return boolean
function M.is_multi(ftype)
  return FIELD_TYPES[ftype or "text-single"] == "multi"
end

-- Helpers -------------------------------------------------------------------------------------

local function split_lines(s)
  local lines = {}
  if s == "" then return lines end
  for line in (s .. "\n"):gmatch("(.-)\r?\n") do lines[#lines + 1] = line end
  return lines
end

local function is_list(v)
  return type(v) == "table" and not xml.is_element(v) and getmetatable(v) == nil
end

local function bool_text(v)
  if v == true then return "1" elseif v == false then return "0" end
  return v
end

-- A Lua value as the list of <value/> texts for a field of type ftype (nil: guess from the value).
local function to_texts(value, ftype, where)
  if value == nil then return {} end
  local out = {}
  local function one(v)
    if type(v) == "boolean" then
      out[#out + 1] = bool_text(v)
    elseif type(v) == "number" then
      if v ~= v or v == math.huge or v == -math.huge then
        error(("forms: %s: not a finite number"):format(where), 0)
      end
      out[#out + 1] = tostring(math.tointeger(v) or v)
    elseif type(v) == "string" then
      if ftype == "text-multi" then
        for _, line in ipairs(split_lines(v)) do out[#out + 1] = line end
      else
        out[#out + 1] = v
      end
    else
      error(("forms: %s: a value must be a string, number or boolean, got %s"):format(where, type(v)), 0)
    end
  end
  if is_list(value) then
    if #value > 1 and ftype and FIELD_TYPES[ftype] == "single" then
      error(("forms: %s: a %s field takes one value, got %d"):format(where, ftype, #value), 0)
    end
    for _, v in ipairs(value) do one(v) end
  else
    one(value)
  end
  return out
end

-- The options of a field definition as {{label=, value=}}: accepts strings or {label, value} tables.
local function normalize_options(options, where)
  local out = {}
  for i, o in ipairs(options or {}) do
    if type(o) == "string" or type(o) == "number" then
      out[i] = { value = tostring(o) }
    elseif type(o) == "table" and o.value ~= nil then
      out[i] = { label = o.label, value = tostring(o.value) }
    else
      error(("forms: %s: option %d must be a string or {label=, value=}"):format(where, i), 0)
    end
  end
  return out
end

-- Definitions -> elements -----------------------------------------------------------------------

local function field_element(f, form_type, index)
  local where = ("field %d (%s)"):format(index, tostring(f.var))
  if type(f) ~= "table" then error(("field %d must be a table"):format(index), 3) end
  local ftype = f.type
  if ftype ~= nil and not FIELD_TYPES[ftype] then
    error(("%s: unknown field type '%s'"):format(where, tostring(ftype)), 3)
  end
  if f.var == nil and ftype ~= "fixed" and form_type ~= "result" then
    error(where .. ": only fixed fields may lack a var", 3)
  end
  local attr = { xmlns = M.NS, var = f.var }
  if form_type ~= "submit" then
    attr.type = ftype
    attr.label = f.label
  end
  local el = xml.element("field", attr)
  if form_type ~= "submit" then
    if f.desc then el:tag("desc"):text(f.desc):up() end
    if f.required then el:tag("required"):up() end
    if f.datatype then
      el:tag("validate", { xmlns = M.NS_VALIDATE, datatype = f.datatype })
      -- XEP-0122 3.2.4: the range an integer must fall in
      if f.range then el:tag("range", { min = f.range.min, max = f.range.max }):up() end
      el:up()
    end
  end
  local value = f.values
  if value == nil then value = f.value end
  for _, text in ipairs(to_texts(value, ftype, where)) do
    el:tag("value"):text(text):up()
  end
  if form_type == "form" or form_type == nil then
    for _, o in ipairs(normalize_options(f.options, where)) do
      el:tag("option", { label = o.label }):tag("value"):text(o.value):up():up()
    end
  end
  return el
end

local function copy_list(t)
  local c = {}
  for i, v in ipairs(t or {}) do c[i] = v end
  return c
end

---@class sacm.xmpp.forms.Field
---@field var string?
---@field type string? a XEP-0004 field type ("text-single", "boolean", "list-multi", ...)
---@field label string?
---@field desc string?
---@field required boolean?
---@field value any single fields
---@field values any[]? multi fields
---@field options {label: string?, value: string}[]?
---@field datatype string? XEP-0122 ("xs:integer", ...)

---@class sacm.xmpp.forms.Definition
---@field type? "form"|"submit"|"result"|"cancel"
---@field title? string
---@field instructions? string
---@field form_type? string the hidden FORM_TYPE field
---@field fields? sacm.xmpp.forms.Field[]
---@field reported? sacm.xmpp.forms.Field[]
---@field items? table<string, any>[]

---@class sacm.xmpp.forms.Form: sacm.xmpp.forms.Definition a parsed form
---@field values table<string, any> var -> typed value

--- new(definition) -> <x xmlns='jabber:x:data'/> element.
-- definition: type ("form" | "submit" | "result" | "cancel", default "form"), title,
-- instructions (a string; each line becomes one <instructions/>), form_type (the hidden FORM_TYPE
-- field, XEP-0068), fields = {{var, type, label, desc, required, value | values, options}},
-- reported = {fields} and items = {{var = value, ...}} for multi-item results.
---@param def sacm.xmpp.forms.Definition|sacm.xml.Element an element is returned as it is
---@return sacm.xml.Element x
function M.new(def)
  if xml.is_element(def) then return def end
  if type(def) ~= "table" then error("forms.new expects a definition table", 2) end
  local ftype = def.type or "form"
  if not FORM_TYPES[ftype] then error("unknown form type '" .. tostring(ftype) .. "'", 2) end
  local x = xml.element("x", { xmlns = M.NS, type = ftype })
  if ftype == "cancel" then return x end
  if def.title and ftype ~= "submit" then x:tag("title"):text(def.title):up() end
  if def.instructions and ftype ~= "submit" then
    local text = type(def.instructions) == "table" and table.concat(def.instructions, "\n") or def.instructions
    for _, line in ipairs(split_lines(text)) do x:tag("instructions"):text(line):up() end
  end
  local seen = {}
  local fields = copy_list(def.fields)
  if def.form_type then
    for i = #fields, 1, -1 do
      local f = fields[i]
      if type(f) == "table" and f.var == "FORM_TYPE" then
        -- a parsed form lists its FORM_TYPE field too: the same value is fine
        local v = f.value
        if v == nil and type(f.values) == "table" then v = f.values[1] end
        if v ~= def.form_type then error("give FORM_TYPE as form_type, not as a field", 2) end
        table.remove(fields, i)
      end
    end
    table.insert(fields, 1, { var = "FORM_TYPE", type = "hidden", value = def.form_type })
  end
  for i, f in ipairs(fields) do
    if type(f) == "table" and f.var ~= nil then
      if seen[f.var] then error(("field %d: duplicate var '%s'"):format(i, tostring(f.var)), 2) end
      seen[f.var] = true
    end
    x:add(field_element(f, ftype, i))
  end
  if def.reported then
    local reported = xml.element("reported", { xmlns = M.NS })
    local types = {}
    for i, f in ipairs(def.reported) do
      reported:add(field_element(f, "result", i))
      types[f.var] = f.type
    end
    x:add(reported)
    for _, item in ipairs(def.items or {}) do
      local el = xml.element("item", { xmlns = M.NS })
      for _, f in ipairs(def.reported) do
        local v = item[f.var]
        local fe = xml.element("field", { xmlns = M.NS, var = f.var })
        for _, text in ipairs(to_texts(v, types[f.var], "item field " .. tostring(f.var))) do
          fe:tag("value"):text(text):up()
        end
        el:add(fe)
      end
      x:add(el)
    end
  elseif def.items then
    error("items need reported fields", 2)
  end
  return x
end

-- Elements -> Lua ---------------------------------------------------------------------------------

-- Converts a field's texts to its Lua value. Returns value, problem (a reason text, when the texts
-- do not fit the type; the value is then the raw text or list).
local function convert(texts, ftype, datatype)
  local kind = FIELD_TYPES[ftype]
  if kind == "multi" then return texts end
  if ftype == nil and #texts > 1 then return texts end -- untyped: keep every value
  if #texts == 0 then return nil end
  if #texts > 1 then return texts, "expects one value, got " .. #texts end
  local text = texts[1]
  if ftype == "boolean" then
    if text == "1" or text == "true" then return true end
    if text == "0" or text == "false" then return false end
    return text, ("not a boolean: '%s'"):format(text)
  end
  if datatype and INTEGER_DATATYPES[datatype] then
    local digits = text:match("^%s*([+-]?%d+)%s*$")
    local n = digits and math.tointeger(tonumber(digits))
    if n then return n end
    -- "max" is a legal pubsub:integer-or-max value; anything else is kept as text and flagged
    if datatype ~= "pubsub:integer-or-max" or text ~= "max" then
      return text, ("not an integer: '%s'"):format(text)
    end
  end
  return text
end

-- types: var -> {type =, datatype =} hints from a definition, for fields the element leaves untyped.
local function parse_field(el, types, default_type)
  local f = { var = el.attr.var, type = el.attr.type, label = el.attr.label, options = {}, raw = {} }
  local hint = types and f.var and types[f.var]
  if f.type and not FIELD_TYPES[f.type] then f.type = nil end
  if f.type == nil and hint then f.type = hint.type end
  if f.type == nil then f.type = default_type end
  local validate = el:child("validate", M.NS_VALIDATE)
  f.datatype = validate and validate.attr.datatype or (hint and hint.datatype)
  local range = validate and validate:child("range", M.NS_VALIDATE)
  if range then
    f.range = { min = math.tointeger(tonumber(range.attr.min or "")), max = math.tointeger(tonumber(range.attr.max or "")) }
  elseif hint then
    f.range = hint.range
  end
  for child in el:children() do
    if child.ns == M.NS then
      if child.name == "value" then
        f.raw[#f.raw + 1] = child:get_text()
      elseif child.name == "desc" then
        f.desc = child:get_text()
      elseif child.name == "required" then
        f.required = true
      elseif child.name == "option" then
        local v = child:child("value", M.NS)
        if v then f.options[#f.options + 1] = { label = child.attr.label, value = v:get_text() } end
      end
    end
  end
  local value, problem = convert(f.raw, f.type, f.datatype)
  if M.is_multi(f.type) or (f.type == nil and #f.raw > 1) then f.values = value else f.value = value end
  f.problem = problem
  return f
end

local function definition_types(def)
  if def == nil then return nil end
  local types = {}
  local fields = def
  if xml.is_element(def) then fields = M.parse(def).fields
  elseif type(def) == "table" and def.fields then fields = def.fields end
  for _, f in ipairs(fields) do
    if type(f) == "table" and f.var then types[f.var] = { type = f.type, datatype = f.datatype, range = f.range } end
  end
  return types
end

--- parse(x [, definition]) -> form, or nil, err (bad-request) when x is not a data form.
-- form: type, title, instructions (lines joined with "\n"), form_type, fields (each: var, type,
-- label, desc, required, options = {{label, value}}, datatype (XEP-0122; integer datatypes give
-- Lua integers), value (single) or values (multi), raw = the texts), values (var -> typed value; FORM_TYPE is not among them), and for multi-item results
-- reported (fields) and items (list of var -> typed value). A definition (table, parsed form or
-- element) supplies the types of fields the element does not type, as in submissions.
---@param x sacm.xml.Element
---@param def? sacm.xmpp.forms.Definition|sacm.xml.Element types of the fields x leaves untyped
---@return sacm.xmpp.forms.Form? form
---@return sacm.Error? err bad-request
function M.parse(x, def)
  if not xml.is_element(x) or x.name ~= "x" or x.ns ~= M.NS then
    return nil, errors.new("bad-request", "not a data form (expected <x xmlns='jabber:x:data'/>)")
  end
  -- counted before any field is looked at: a form of thousands of fields costs a refusal, not work
  local count = 0
  for _, child in ipairs(x) do
    if type(child) == "table" and child.name == "field" then count = count + 1 end
  end
  if count > M.MAX_FIELDS then
    return nil, errors.new("bad-request", ("invalid form: more than %d fields (%d)"):format(M.MAX_FIELDS, count))
  end
  local form = {
    type = x.attr.type, fields = {}, values = {},
  }
  if not FORM_TYPES[form.type] then
    form.type = form.type or "form"
  end
  local types = definition_types(def)
  local instructions = {}
  local reported, items = nil, nil
  for child in x:children() do
    if child.ns == M.NS then
      if child.name == "title" then
        form.title = child:get_text()
      elseif child.name == "instructions" then
        instructions[#instructions + 1] = child:get_text()
      elseif child.name == "field" then
        -- XEP-0004: in a form to fill in, a field without a type is text-single
        local f = parse_field(child, types, form.type == "form" and "text-single" or nil)
        if f.var == "FORM_TYPE" and (child.attr.type == nil or child.attr.type == "hidden") then
          form.form_type = f.raw[1]
          f.type = "hidden"
        elseif f.var ~= nil and form.values[f.var] == nil then
          if f.values then form.values[f.var] = f.values else form.values[f.var] = f.value end
        end
        form.fields[#form.fields + 1] = f
      elseif child.name == "reported" then
        reported = reported or {}
        for fe in child:children("field", M.NS) do reported[#reported + 1] = parse_field(fe, types) end
      elseif child.name == "item" then
        items = items or {}
        items[#items + 1] = child
      end
    end
  end
  if #instructions > 0 then form.instructions = table.concat(instructions, "\n") end
  if reported or items then
    form.reported = reported or {}
    local rtypes = {}
    for _, f in ipairs(form.reported) do
      if f.var then rtypes[f.var] = { type = f.type, datatype = f.datatype } end
    end
    form.items = {}
    for _, item in ipairs(items or {}) do
      local row = {}
      for fe in item:children("field", M.NS) do
        local f = parse_field(fe, rtypes)
        if f.var then
          if f.values then row[f.var] = f.values else row[f.var] = f.value end
        end
      end
      form.items[#form.items + 1] = row
    end
  end
  return form
end

--- find(parent [, form_type]) -> the first data form child of parent (with that FORM_TYPE), or nil.
---@param parent sacm.xml.Element
---@param form_type? string
---@return sacm.xml.Element? x
function M.find(parent, form_type)
  if not xml.is_element(parent) then return nil end
  for x in parent:children("x", M.NS) do
    if form_type == nil then return x end
    for f in x:children("field", M.NS) do
      if f.attr.var == "FORM_TYPE" then
        local v = f:child("value", M.NS)
        if v and v:get_text() == form_type then return x end
        break
      end
    end
  end
end

-- Definitions in any shape (definition table, parsed form, element, plain field list) as
-- {fields = ..., form_type = ...}.
local function as_definition(def, what)
  if xml.is_element(def) then
    local form, err = M.parse(def)
    if not form then error(what .. ": " .. tostring(err), 3) end
    return form
  end
  if type(def) ~= "table" then error(what .. " expects a form (definition, parsed form or element)", 3) end
  if def.fields then return def end
  return { fields = def } -- a plain list of fields
end

--- submit(form, values) -> <x type='submit'/> for the Lua values.
-- form is a definition, a parsed form, an element or a list of fields: only its fields are sent
-- (other keys of values are ignored), typed by it, with its FORM_TYPE, and a field without a value
-- in `values` keeps the form's default (as a person accepting the default would). With form = nil
-- every key of values is sent, converted by its Lua type.
---@param def sacm.xmpp.forms.Definition|sacm.xml.Element|sacm.xmpp.forms.Field[]|nil
---@param values table<string, any>
---@return sacm.xml.Element x type='submit'
function M.submit(def, values)
  values = values or {}
  if type(values) ~= "table" then error("forms.submit: values must be a table", 2) end
  local x = xml.element("x", { xmlns = M.NS, type = "submit" })
  local function add(var, ftype, v)
    local fe = xml.element("field", { xmlns = M.NS, var = var })
    for _, text in ipairs(to_texts(v, ftype, "field " .. tostring(var))) do
      fe:tag("value"):text(text):up()
    end
    x:add(fe)
  end
  if def == nil then
    local vars = {}
    for var in pairs(values) do vars[#vars + 1] = var end
    table.sort(vars)
    for _, var in ipairs(vars) do add(var, nil, values[var]) end
    return x
  end
  def = as_definition(def, "forms.submit")
  if def.form_type then add("FORM_TYPE", "hidden", def.form_type) end
  for _, f in ipairs(def.fields) do
    if f.var and f.type ~= "fixed" and not (f.var == "FORM_TYPE" and def.form_type) then
      local v = values[f.var]
      if v == nil then
        v = f.values
        if v == nil then v = f.value end
      end
      if v ~= nil then add(f.var, f.type, v) end
    end
  end
  return x
end

-- Validation ----------------------------------------------------------------------------------

local function option_set(f)
  local set, any = {}, false
  for _, o in ipairs(f.options or {}) do
    local v = type(o) == "table" and o.value or o
    set[tostring(v)] = true
    any = true
  end
  return any and set or nil
end

local function empty(v)
  return v == nil or v == "" or (is_list(v) and #v == 0)
end

-- Checks and converts one value; returns the typed value, or nil, reason.
-- Bounds on what a submission may carry (per field: max_values, max_bytes override them), checked
-- before anything else looks at the values: a hostile form costs a refusal, not work.
M.MAX_VALUES = 1000
M.MAX_VALUE_BYTES = 4096
M.MAX_FIELDS = 500 -- fields of one form (parse refuses more)

local function too_much(f, v)
  local max_bytes = f.max_bytes or M.MAX_VALUE_BYTES
  if is_list(v) then
    local max_values = f.max_values or M.MAX_VALUES
    if #v > max_values then return ("more than %d values (%d)"):format(max_values, #v) end
    for _, item in ipairs(v) do
      if type(item) == "string" and #item > max_bytes then
        return ("a value longer than %d bytes (%d)"):format(max_bytes, #item)
      end
    end
  elseif type(v) == "string" and #v > max_bytes then
    return ("longer than %d bytes (%d)"):format(max_bytes, #v)
  end
end

local check_typed

-- f.check (a definition's own function(value) -> true | nil, reason) judges each value the types
-- let through: identifiers, names, anything the XEP-0004 types cannot say.
local function check(f, v)
  local excess = too_much(f, v)
  if excess then return nil, excess end
  local typed, reason = check_typed(f, v)
  if reason or not f.check or typed == nil then return typed, reason end
  for _, item in ipairs(type(typed) == "table" and typed or { typed }) do
    local ok, why = f.check(item)
    if not ok then return nil, why or ("'%s' is not accepted"):format(tostring(item)) end
  end
  return typed
end

check_typed = function(f, v)
  local ftype = f.type or "text-single"
  if ftype == "boolean" then
    if is_list(v) then
      if #v ~= 1 then return nil, "expects one value" end
      v = v[1]
    end
    if v == true or v == "1" or v == "true" or v == 1 then return true end
    if v == false or v == "0" or v == "false" or v == 0 then return false end
    return nil, ("not a boolean: '%s'"):format(tostring(v))
  end
  if FIELD_TYPES[ftype] == "multi" then
    local list
    if is_list(v) then
      list = {}
      for i, item in ipairs(v) do
        if type(item) ~= "string" and type(item) ~= "number" then return nil, "values must be strings" end
        list[i] = tostring(item)
      end
      if ftype == "text-multi" then
        -- a list item may itself hold several lines
        local lines = {}
        for _, item in ipairs(list) do
          for _, line in ipairs(split_lines(item)) do lines[#lines + 1] = line end
          if item == "" then lines[#lines + 1] = "" end
        end
        list = lines
      end
    elseif type(v) == "string" or type(v) == "number" then
      list = ftype == "text-multi" and split_lines(tostring(v)) or { tostring(v) }
    else
      return nil, "expects a list of strings"
    end
    if ftype == "jid-multi" then
      for _, j in ipairs(list) do
        if not jidlib.split(j) then return nil, ("not a valid JID: '%s'"):format(j) end
      end
    elseif ftype == "list-multi" then
      local set = option_set(f)
      if set then
        for _, item in ipairs(list) do
          if not set[item] then return nil, ("'%s' is not one of the options"):format(item) end
        end
      end
    end
    return list
  end
  if is_list(v) then
    if #v ~= 1 then return nil, "expects one value, got " .. #v end
    v = v[1]
  end
  if type(v) == "number" then v = tostring(v) end
  if type(v) ~= "string" then return nil, "expects a string, got a " .. type(v) end
  if ftype == "jid-single" then
    if not jidlib.split(v) then return nil, ("not a valid JID: '%s'"):format(v) end
  elseif ftype == "list-single" then
    local set = option_set(f)
    if set and not set[v] then return nil, ("'%s' is not one of the options"):format(v) end
  end
  if f.datatype and INTEGER_DATATYPES[f.datatype] and not (f.datatype == "pubsub:integer-or-max" and v == "max") then
    local digits = v:match("^%s*([+-]?%d+)%s*$")
    local n = digits and math.tointeger(tonumber(digits))
    if not n then return nil, ("not an integer (%s): '%s'"):format(f.datatype, v) end
    local r = f.range
    if r and ((r.min and n < r.min) or (r.max and n > r.max)) then
      return nil, ("%d is out of range (%s to %s)"):format(n, tostring(r.min or "-"), tostring(r.max or "-"))
    end
    return n
  end
  return v
end

--- validate(form, values) -> clean values, or nil, err.
-- form: a definition, parsed form, element or list of fields; values: var -> value, as strings
-- (from parse) or Lua values. Checks each field of the form: required fields present and not
-- empty, booleans, one value for single fields, list-single/list-multi values among the options
-- (when the field has options), JIDs well formed, and the FORM_TYPE when both sides give one.
-- The clean values are typed by the form (booleans, lists for the multi types); a missing
-- boolean is false (XEP-0004's default); keys the form does not define are left out.
-- err.condition is "bad-request", err.fields maps each bad var to its reason, err.text lists them.
---@param def sacm.xmpp.forms.Definition|sacm.xml.Element|sacm.xmpp.forms.Field[]
---@param values table<string, any>
---@return table<string, any>? values clean, typed by the form
---@return sacm.Error? err bad-request, with err.fields
function M.validate(def, values)
  def = as_definition(def, "forms.validate")
  values = values or {}
  local clean, bad, order = {}, {}, {}
  local function fail(var, reason)
    if not bad[var] then order[#order + 1] = var end
    bad[var] = reason
  end
  if def.form_type and values.FORM_TYPE ~= nil and values.FORM_TYPE ~= def.form_type then
    fail("FORM_TYPE", ("expected '%s'"):format(def.form_type))
  end
  for _, f in ipairs(def.fields) do
    local var = f.var
    if var and f.type ~= "fixed" and not (var == "FORM_TYPE" and f.type == "hidden") then
      local v = values[var]
      if empty(v) then
        if f.required then
          fail(var, "required")
        elseif f.type == "boolean" then
          clean[var] = false
        elseif M.is_multi(f.type) and v ~= nil then
          clean[var] = {}
        end
      else
        local typed, reason = check(f, v)
        if reason then fail(var, reason) else clean[var] = typed end
      end
    end
  end
  if #order > 0 then
    local parts = {}
    for i, var in ipairs(order) do parts[i] = ("%s: %s"):format(var, bad[var]) end
    return nil, errors.new("bad-request", "invalid form: " .. table.concat(parts, "; "),
      { fields = bad, order = order })
  end
  return clean
end

return M
