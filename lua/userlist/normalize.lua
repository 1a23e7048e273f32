--- One shape for users: JSON null becomes nil, integer fields become Lua
-- integers (5.3+), numeric strings become numbers, ids are strings, and
-- times become Lua time numbers (UTC seconds).
-- @module userlist.normalize
local core = require "userlist.core"
local errors = require "userlist.errors"
local time = require "userlist.time"

local M = {}
local null = core.null
local tointeger = math.tointeger -- nil before 5.3: numbers stay numbers
local floor = math.floor

--- Removes JSON nulls from a decoded object, recursively.
function M.strip_nulls(t)
  for k, v in pairs(t) do
    if v == null then
      t[k] = nil
    elseif type(v) == "table" then
      M.strip_nulls(v)
    end
  end
  return t
end

--- A number from a number or a numeric string ("15", from 64-bit totals), else nil.
function M.num(v)
  if type(v) == "number" then return v end
  if type(v) == "string" then return tonumber(v) end
  return nil
end

--- An integer (a Lua integer on 5.3+) from a number or numeric string, else nil.
function M.int(v)
  local n = M.num(v)
  if n == nil or n ~= floor(n) then return n end
  return tointeger and tointeger(n) or n
end

--- An id as a string: numbers (which lose precision past 2^53) are printed whole.
function M.id(v)
  if type(v) == "string" then return v end
  if type(v) == "number" then
    if v == floor(v) and v > -2 ^ 63 and v < 2 ^ 63 then return ("%d"):format(v) end
    return tostring(v)
  end
  return nil
end

--- Lua time number from an ISO 8601 string; naive strings are read in the
-- zone `offset` seconds east of UTC (default UTC).
function M.time(v, offset)
  if type(v) ~= "string" then return nil end
  local t, zoned = time.parse_iso(v)
  if t and not zoned and offset then t = t - offset end
  return t
end

--- Converts the listed fields of u in place with fn.
function M.fields(u, names, fn)
  for i = 1, #names do
    local k = names[i]
    local v = u[k]
    if v ~= nil then
      local c = fn(v)
      if c ~= nil then u[k] = c end
    end
  end
end

--- Maps the rows of a page in place and checks each one, so that a row the
-- client cannot read is one clear decode error, never a user silently
-- missing its id or figures. `shape`: `list` (the array's name in errors),
-- `map(u, arg)`, and optional `numbers` (fields that must be numbers once
-- mapped: numeric strings were converted) and `times` (common time field ->
-- the provider field it is read from: present but unreadable is an error).
function M.rows(rows, shape, arg)
  local map, numbers, times = shape.map, shape.numbers, shape.times
  for i = 1, #rows do
    local u = rows[i]
    local bad
    if type(u) ~= "table" then
      bad = "is not an object"
    else
      map(u, arg)
      if type(u.id) ~= "string" then bad = "has no id" end
      for j = 1, numbers and not bad and #numbers or 0 do
        local v = u[numbers[j]]
        if v ~= nil and type(v) ~= "number" then
          bad = ("field '%s' is not a number (a %s)"):format(numbers[j], type(v))
          break
        end
      end
      if times and not bad then
        for common, field in pairs(times) do
          if u[field] ~= nil and u[common] == nil then
            bad = ("field '%s' is not an ISO 8601 time (a %s)"):format(field, type(u[field]))
            break
          end
        end
      end
    end
    if bad then
      error(errors.new{ kind = "decode", message = ("%s[%d] %s"):format(shape.list, i, bad) }, 0)
    end
  end
  return rows
end

return M
