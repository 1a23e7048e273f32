--- Error values and argument checks shared by every provider.
-- Errors are tables with `kind`, `message` and, where known, `status`,
-- `code`, `provider`, `field`, `retryable`, `retry_after`; `tostring` gives
-- one line. Query checks raise an `invalid` error naming the field.
-- @module userlist.errors
local core = require "userlist.core"

local M = {}

function M.is(v)
  return type(v) == "table" and getmetatable(v) == core.error_mt
end

--- A new error value.
function M.new(t)
  if t.retryable == nil then t.retryable = false end
  return core.error(t)
end

--- An `invalid` error naming the field at fault.
function M.invalid(field, message, provider)
  return M.new{ kind = "invalid", field = field, provider = provider,
                message = "'" .. field .. "' " .. message }
end

--- Raises an `invalid` error (caught by the pcall boundary of page(), or
-- passed through by users()).
function M.raise_invalid(field, message)
  error(M.invalid(field, message), 0)
end

--- Runs fn(...) and turns a raised userlist error into nil, err; anything
-- else (a bug, a programmer mistake) is raised again untouched.
function M.protect(fn, ...)
  local ok, a, b = pcall(fn, ...)
  if ok then return a, b end
  if M.is(a) then return nil, a end
  error(a, 0)
end

-- ------------------------------------------------------------------ checks
local check = {}
M.check = check

local function typename(v)
  if v == core.null then return "null" end
  return type(v)
end

--- Integer within [lo, hi] (nil allowed unless required).
function check.int(q, field, lo, hi)
  local v = q[field]
  if v == nil then return nil end
  if type(v) ~= "number" or v ~= math.floor(v) then
    M.raise_invalid(field, "must be an integer, got " .. typename(v))
  end
  if v < lo or v > hi then
    M.raise_invalid(field, ("must be between %d and %d, got %s"):format(lo, hi, tostring(v)))
  end
  return v
end

function check.string(q, field, max)
  local v = q[field]
  if v == nil then return nil end
  if type(v) ~= "string" then M.raise_invalid(field, "must be a string, got " .. typename(v)) end
  if v == "" then M.raise_invalid(field, "must not be empty") end
  if max and #v > max then
    M.raise_invalid(field, ("must be at most %d characters, got %d"):format(max, #v))
  end
  return v
end

function check.boolean(q, field)
  local v = q[field]
  if v ~= nil and type(v) ~= "boolean" then
    M.raise_invalid(field, "must be a boolean, got " .. typename(v))
  end
  return v
end

--- One of the allowed strings.
function check.enum(q, field, allowed)
  local v = q[field]
  if v == nil then return nil end
  for _, a in ipairs(allowed) do
    if v == a then return v end
  end
  M.raise_invalid(field, "must be one of " .. table.concat(allowed, ", ") .. ", got " .. tostring(v))
end

--- An array of strings (a single string is taken as a one-element array).
function check.strings(q, field, opts)
  opts = opts or {}
  local v = q[field]
  if v == nil then return nil end
  if type(v) == "string" then v = { v } end
  if type(v) ~= "table" then M.raise_invalid(field, "must be an array of strings, got " .. typename(v)) end
  local n = #v
  for k in pairs(v) do
    if type(k) ~= "number" or k < 1 or k > n or k ~= math.floor(k) then
      M.raise_invalid(field, "must be an array (a list), not a map")
    end
  end
  local out = {}
  for i = 1, n do
    local s = v[i]
    if type(s) == "number" and opts.numbers then s = tostring(s) end
    if type(s) ~= "string" then
      M.raise_invalid(field, ("element %d must be a string, got %s"):format(i, typename(s)))
    end
    if s == "" and not opts.empty_ok then M.raise_invalid(field, ("element %d is empty"):format(i)) end
    if opts.max_len and #s > opts.max_len then
      M.raise_invalid(field, ("element %d is longer than %d characters"):format(i, opts.max_len))
    end
    if opts.allowed then check.enum({ [field] = s }, field, opts.allowed) end
    out[i] = s
  end
  if opts.min and #out < opts.min then
    M.raise_invalid(field, ("needs at least %d element(s)"):format(opts.min))
  end
  if opts.max and #out > opts.max then
    M.raise_invalid(field, ("takes at most %d elements, got %d"):format(opts.max, #out))
  end
  return out
end

--- Rejects keys the listing does not know (a typo must not be dropped silently).
function check.known(q, allowed)
  if type(q) ~= "table" then
    M.raise_invalid("query", "must be a table, got " .. typename(q))
  end
  for k in pairs(q) do
    if type(k) ~= "string" or not allowed[k] then
      local names = {}
      for a in pairs(allowed) do names[#names + 1] = a end
      table.sort(names)
      M.raise_invalid(tostring(k), "is not a known query key (known: " .. table.concat(names, ", ") .. ")")
    end
  end
end

return M
