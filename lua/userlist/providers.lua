--- The registry of providers: their names, in the order userlist lists
-- them, and what each declares once (its query schema and client options,
-- see userlist.args; its key's environment variable). `userlist`, the
-- command (userlist.cli), the reference (doc/gen-queries.lua) and the
-- bench iterate over it.
--
--    for name, d in providers.each() do -- d: name, env_key, query, options, constructor
--      print(name, d.env_key, #d.query)
--    end
-- @module userlist.providers
local args = require "userlist.args"

local M = {}

--- Provider names, in order; `userlist.<name>` is each one's constructor.
M.names = { "helicone", "openlayer", "arthur", "usertour" }

local declared = {}

--- Called by a provider module around its `client.define` declaration:
-- records `def.name`, `env_key`, `base_url_env`, `query` and `options` (a
-- schema of the client options it adds), and returns the declaration for
-- client.define with `options` as the Lua types it checks constructor
-- options against.
function M.declare(def)
  local d = { name = def.name, env_key = def.env_key, base_url_env = def.base_url_env,
              query = args.schema(def.query), options = args.schema(def.options or {}) }
  declared[def.name] = d
  local out = {}
  for k, v in pairs(def) do out[k] = v end
  out.options = args.lua_types(d.options)
  return out
end

--- A provider's constructor (`userlist.helicone`...).
function M.load(name)
  return require("userlist." .. name)
end

--- What a provider declared: {name, env_key, base_url_env, query, options,
-- constructor}.
function M.declaration(name)
  local ctor = M.load(name)
  local d = assert(declared[name], "userlist.providers: " .. tostring(name) .. " declared nothing")
  d.constructor = ctor
  return d
end

--- Iterates over the providers in order: name, declaration.
function M.each()
  local i = 0
  return function()
    i = i + 1
    local name = M.names[i]
    if name then return name, M.declaration(name) end
  end
end

return M
