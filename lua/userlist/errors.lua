--- Error values shared by every provider.
-- Errors are tables with `kind`, `message` and, where known, `status`,
-- `code`, `provider`, `field`, `retryable`, `retry_after`; `tostring` gives
-- one line. Query checks (userlist.args) raise an `invalid` error naming
-- the field.
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

return M
