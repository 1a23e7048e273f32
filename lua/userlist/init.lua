--- userlist: list the users of LLM-observability and product-adoption
-- platforms as Lua iterators.
--
--    local userlist = require "userlist"
--    local hc = userlist.helicone{ api_key = "...", region = "eu" }
--    for user in hc:users{ since = os.time() - 7 * 86400 } do print(user.id, user.cost) end
--
-- The C core (`userlist.core`) does HTTP and JSON; this layer adds the
-- provider clients, one constructor per provider of the registry
-- (`userlist.providers`). Each takes an options table (see README; the
-- options and queries each provider adds: doc/queries.md).
-- @module userlist
local core = require "userlist.core"
local errors = require "userlist.errors"
local providers = require "userlist.providers"

local M = {
  _VERSION = "userlist " .. core.version,
  version = core.version,
  core = core,
  null = core.null,
}

--- The registry: `providers.names` in order, `providers.declaration(name)`.
M.providers = providers

-- `userlist.helicone{api_key=, region="us"|"eu", base_url=, ...}`,
-- `userlist.openlayer{api_key=, pipeline_id=, ...}`, `userlist.arthur{api_key=,
-- base_url=, task_ids=, server_utc_offset=, ...}`, `userlist.usertour{api_key=,
-- project_id=, environment_id=, ...}`
for _, name in ipairs(providers.names) do M[name] = providers.load(name) end

--- Opens a raw HTTP session of the core (see README, "the core").
function M.session(opts)
  return core.session(opts)
end

--- Whether a value is a userlist error.
M.is_error = errors.is

--- What a resume token (page.resume, err.resume) says: {provider, pages,
-- users, done} (pages and rows given before it; done: nothing is left),
-- or nil and a message.
M.token_info = require("userlist.resume").info

return M
