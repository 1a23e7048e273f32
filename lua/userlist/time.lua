--- Time values: every provider takes `since` / `until` as a Lua time number
-- (seconds since the epoch, UTC) or an ISO 8601 string, and each server wants
-- its own form. Reading is the core's (core.parse_time); writing is here.
-- Pure arithmetic: no os.time (it reads the local time zone).
-- @module userlist.time
local core = require "userlist.core"

local M = {}

local floor = math.floor
-- floor division that also runs on Lua 5.1 and LuaJIT (idiv(no, there))
local function idiv(a, b) return floor(a / b) end

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

--- Parses ISO 8601 (`2025-01-02`, `2025-01-02T03:04:05`, fractions, `Z` or
-- `+hh:mm`). A string without a zone is read as UTC. The core's reader, the
-- one that also reads every time of every row.
-- @return seconds since the epoch, and whether the string had a zone; or nil, message
M.parse_iso = core.parse_time

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
