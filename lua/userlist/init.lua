--- userlist: list the users of LLM-observability and product-adoption
-- platforms as Lua iterators. The C core (`userlist.core`) does HTTP and
-- JSON; this layer adds the idiomatic API.
-- @module userlist
local core = require "userlist.core"

local M = {
  _VERSION = "userlist " .. core.version,
  version = core.version,
  core = core,
}

--- Open an HTTP session (one reused connection; see README for options).
-- @tparam[opt] table opts session options
-- @return session userdata
function M.session(opts)
  return core.session(opts)
end

--- Whether a value is a userlist error.
function M.is_error(v)
  return type(v) == "table" and getmetatable(v) == core.error_mt
end

return M
