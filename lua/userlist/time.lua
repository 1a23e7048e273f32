--- Time values: every provider takes `since` / `until` as a Lua time number
-- (seconds since the epoch, UTC) or an ISO 8601 string, and each server wants
-- its own form. Pure arithmetic: no os.time (it reads the local time zone).
-- @module userlist.time
local M = {}

local floor = math.floor
-- floor division that also runs on Lua 5.1 and LuaJIT (idiv(no, there))
local function idiv(a, b) return floor(a / b) end

-- Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
local function days_from_civil(y, m, d)
  y = (m <= 2) and (y - 1) or y
  local era = idiv((y >= 0 and y or y - 399), 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = idiv((153 * mp + 2), 5) + d - 1
  local doe = yoe * 365 + idiv(yoe, 4) - idiv(yoe, 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = idiv((z >= 0 and z or z - 146096), 146097)
  local doe = z - era * 146097
  local yoe = idiv((doe - idiv(doe, 1460) + idiv(doe, 36524) - idiv(doe, 146096)), 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + idiv(yoe, 4) - idiv(yoe, 100))
  local mp = idiv((5 * doy + 2), 153)
  local d = doy - idiv((153 * mp + 2), 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  return (m <= 2) and (y + 1) or y, m, d
end

local DIM = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }

--- Parses ISO 8601 (`2025-01-02`, `2025-01-02T03:04:05`, fractions, `Z` or
-- `+hh:mm`). A string without a zone is read as UTC.
-- @return seconds since the epoch, and whether the string had a zone; or nil, message
function M.parse_iso(s)
  local y, mo, d, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  if not y then return nil, "not an ISO 8601 date" end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo < 1 or mo > 12 or d < 1 or d > DIM[mo] then return nil, "date out of range" end
  local h, mi, sec, frac, zone = 0, 0, 0, 0, nil
  if rest ~= "" then
    local hh, mm, tail = rest:match("^[T ](%d%d):(%d%d)(.*)$")
    if not hh then return nil, "bad time of day" end
    h, mi = tonumber(hh), tonumber(mm)
    local ss, tail2 = tail:match("^:(%d%d)(.*)$")
    if ss then sec, tail = tonumber(ss), tail2 end
    local f, tail3 = tail:match("^[.,](%d+)(.*)$")
    if f then frac, tail = tonumber("0." .. f), tail3 end
    if tail == "Z" or tail == "z" then
      zone = 0
    elseif tail ~= "" then
      local sign, zh, zm = tail:match("^([+-])(%d%d):?(%d%d)$")
      if not sign then return nil, "bad time zone" end
      zone = (tonumber(zh) * 60 + tonumber(zm)) * 60 * (sign == "-" and -1 or 1)
    end
    if h > 23 or mi > 59 or sec > 60 then return nil, "time of day out of range" end
  end
  local t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - (zone or 0)
  if frac ~= 0 then t = t + frac end
  return t, zone ~= nil
end

--- Accepts a time number or an ISO 8601 string.
-- @return seconds since the epoch, or nil and a message
function M.to_epoch(v)
  if type(v) == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return nil, "not a finite number" end
    return v
  elseif type(v) == "string" then
    return M.parse_iso(v)
  end
  return nil, "a time number or an ISO 8601 string expected, got " .. type(v)
end

local function fmt(t, offset, with_ms, suffix)
  t = t + (offset or 0)
  -- round to whole milliseconds first, so .9996 carries into the second
  if with_ms then t = floor(t * 1000 + 0.5) / 1000 end
  local whole = floor(t)
  local days = idiv(whole, 86400)
  local secs = whole - days * 86400
  local y, m, d = civil_from_days(days)
  local hms = ("%02d:%02d:%02d"):format(idiv(secs, 3600), idiv(secs % 3600, 60), secs % 60)
  local s = ("%04d-%02d-%02dT"):format(y, m, d) .. hms
  if with_ms then s = s .. (".%03d"):format(floor((t - whole) * 1000 + 0.5)) end
  return s .. (suffix or "")
end

--- `2025-01-02T03:04:05.000Z`
function M.iso_utc(t) return fmt(t, 0, true, "Z") end

--- A naive ISO string (no zone) in the time zone `offset` seconds east of UTC.
function M.iso_naive(t, offset) return fmt(t, offset, false) end

return M
