--- userlist: list the users of LLM-observability and product-adoption
-- platforms as Lua iterators.
--
--    local userlist = require "userlist"
--    local hc = userlist.helicone{ api_key = "...", region = "eu" }
--    for user in hc:users{ since = os.time() - 7 * 86400 } do print(user.id, user.cost) end
--
-- The C core (`userlist.core`) does HTTP and JSON; this layer adds the
-- provider clients. Each constructor takes an options table (see README).
-- @module userlist
local core = require "userlist.core"
local errors = require "userlist.errors"

local M = {
  _VERSION = "userlist " .. core.version,
  version = core.version,
  core = core,
  null = core.null,
}

--- `userlist.helicone{api_key=, region="us"|"eu", base_url=, ...}`
M.helicone = require "userlist.helicone"
--- `userlist.openlayer{api_key=, pipeline_id=, base_url=, ...}`
M.openlayer = require "userlist.openlayer"
--- `userlist.arthur{api_key=, base_url=, task_ids=, server_utc_offset=, ...}`
M.arthur = require "userlist.arthur"
--- `userlist.usertour{api_key=, project_id=, environment_id=, base_url=, ...}`
M.usertour = require "userlist.usertour"

--- Opens a raw HTTP session of the core (see README, "the core").
function M.session(opts)
  return core.session(opts)
end

--- Whether a value is a userlist error.
M.is_error = errors.is

return M
