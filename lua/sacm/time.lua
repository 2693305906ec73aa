--- sacm.time: clocks and XEP-0082 date-time strings.
-- time.now() is wall-clock seconds (float, microseconds); time.monotonic() never goes back
-- (use it for durations); time.format/parse speak XEP-0082 DateTime (2026-11-23T10:36:11.123Z).
local loop = require "sacm._loop"
local errors = require "sacm.error"

local M = {}

---@type fun(): number wall-clock seconds since the epoch, with microseconds
M.now = loop.time

---@return number seconds from an arbitrary origin, never going back
function M.monotonic()
  return loop.hrtime() / 1e9
end

--- format([t [, digits]]) -> "YYYY-MM-DDThh:mm:ss[.fff]Z" in UTC. digits: fraction digits (0-6, default 3).
-- The year has four digits (0808, not strftime's 808): every time parse() returns formats to a
-- string parse() takes back.
---@param t? number seconds since the epoch (default: now)
---@param digits? integer fraction digits, 0 to 6 (default 3)
---@return string
function M.format(t, digits)
  t = t or loop.time()
  digits = digits or 3
  local whole = math.floor(t)
  local d = os.date("!*t", whole)
  local s = ("%04d-%02d-%02dT%02d:%02d:%02d"):format(d.year, d.month, d.day, d.hour, d.min, d.sec)
  if digits > 0 then
    local frac = math.floor((t - whole) * 10 ^ digits + 0.5)
    if frac >= 10 ^ digits then -- rounding carried into the next second
      return M.format(whole + 1, digits)
    end
    s = s .. ("." .. ("%0" .. digits .. "d")):format(frac)
  end
  return s .. "Z"
end

local function days_from_civil(y, m, d)
  -- Proleptic Gregorian day count since 1970-01-01, valid for all years (no os.time, no local zone).
  y = m <= 2 and y - 1 or y
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

local function days_in_month(y, m)
  local leap = (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0
  return ({ 31, leap and 29 or 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 })[m]
end

-- The instants a four-digit year can name in UTC: a zone offset must not carry a time past them,
-- or format() could not write it back as XEP-0082 (year 10000 has five digits).
local FIRST = days_from_civil(0, 1, 1) * 86400
local AFTER_LAST = days_from_civil(10000, 1, 1) * 86400

--- parse(s) -> seconds since the epoch (float), or nil, err. Accepts XEP-0082 DateTime
-- (CCYY-MM-DDThh:mm:ss[.sss]TZD with TZD "Z" or ±hh:mm, hh at most 23 and mm at most 59) and
-- Date (CCYY-MM-DD, as midnight UTC), for instants in the years 0000 to 9999 in UTC.
---@param s string
---@return number? seconds since the epoch
---@return sacm.Error? err
function M.parse(s)
  if type(s) ~= "string" then return nil, errors.new("bad-format", "date-time must be a string") end
  local y, mo, d, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  if not y then return nil, errors.new("bad-format", "not an XEP-0082 date-time: " .. s) end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo < 1 or mo > 12 or d < 1 or d > days_in_month(y, mo) then
    return nil, errors.new("bad-format", "date out of range: " .. s)
  end
  local h, mi, sec, frac, tz = 0, 0, 0, "", "Z"
  if rest ~= "" then
    h, mi, sec, frac, tz = rest:match("^T(%d%d):(%d%d):(%d%d)(%.?%d*)(.*)$")
    if not h then return nil, errors.new("bad-format", "not an XEP-0082 date-time: " .. s) end
    h, mi, sec = tonumber(h), tonumber(mi), tonumber(sec)
    if h > 23 or mi > 59 or sec > 60 or frac == "." then
      return nil, errors.new("bad-format", "time out of range: " .. s)
    end
  end
  local offset = 0
  if tz ~= "Z" then
    local sign, oh, om = tz:match("^([+-])(%d%d):(%d%d)$")
    if not sign or tonumber(oh) > 23 or tonumber(om) > 59 then
      return nil, errors.new("bad-format", "bad time zone in " .. s)
    end
    offset = (tonumber(oh) * 3600 + tonumber(om) * 60) * (sign == "+" and 1 or -1)
  end
  local t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset
  if frac ~= "" then t = t + tonumber("0" .. frac) end
  if t < FIRST or t >= AFTER_LAST then
    return nil, errors.new("bad-format", "outside the years 0000 to 9999 in UTC: " .. s)
  end
  return t
end

return M
