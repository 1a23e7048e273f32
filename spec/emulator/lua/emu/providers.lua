--- The emulated providers. spec/emulator/run finds every
-- spec/providers/<name>/emulator.lua and renders the names into the nginx
-- configuration, whose init_by_lua calls `load` (in the master, before the
-- workers fork). Nothing here names a provider.
--
-- A provider's emulator module returns a table with:
--   routes     Lua patterns (anchored with ^) of the request paths it
--              answers; no path may match two providers' patterns
--   keys       name -> the key it accepts, for the specs (GET /_emu/keys,
--              spec/support/emu.lua's `keys`)
--   handle(req, ctx)            its answer to a data-plane request
--   error(status[, message])    its error shape, for faults with a status
--   decorate(res, ctx, req)     optional: headers every answer carries
--   config     optional: its config keys, name -> { default, check(v) }
--   faults     optional: its fault keys, name -> { check = check(v),
--              response = function(value, status) }: a truthy value
--              replaces the provider's answer with that response
local faults = require "emu.faults"
local store = require "emu.store"

local M = {}

local by_name = {} -- name -> module
local list = {}    -- the modules, in the order the names came
local routes = {}  -- { pattern, module }, in the order the names came
local keys = {}    -- key name -> key

local function check_module(m, path)
  local function need(ok, what) if not ok then error(path .. ": " .. what, 0) end end
  need(type(m) == "table", "must return its module table")
  need(type(m.routes) == "table" and #m.routes > 0, "`routes` must list its path patterns")
  need(type(m.handle) == "function", "`handle(req, ctx)` is missing")
  need(type(m.error) == "function", "`error(status, message)` is missing")
  need(type(m.keys) == "table" and next(m.keys) ~= nil, "`keys` must name the keys it accepts")
  for _, p in ipairs(m.routes) do
    need(type(p) == "string" and p:sub(1, 1) == "^", "each route must be a pattern anchored with ^")
  end
end

--- Loads spec/providers/<name>/emulator.lua for each name, under `dir`
-- (spec/providers), once.
function M.load(dir, names)
  for _, name in ipairs(names) do
    if not by_name[name] then
      local path = dir .. "/" .. name .. "/emulator.lua"
      local chunk = assert(loadfile(path))
      local m = chunk("emu.provider." .. name)
      check_module(m, path)
      m.name = name
      package.loaded["emu.provider." .. name] = m
      by_name[name] = m
      list[#list + 1] = m
      for _, p in ipairs(m.routes) do routes[#routes + 1] = { p, m } end
      for k, v in pairs(m.keys) do
        assert(keys[k] == nil, path .. ": key name " .. k .. " is another provider's")
        keys[k] = v
      end
      for k, spec in pairs(m.config or {}) do store.declare(k, spec[1], spec[2], path) end
      for k, spec in pairs(m.faults or {}) do faults.declare(k, spec.check, spec.response, path) end
    end
  end
end

--- The provider whose routes match `path`: its module, or nil when none
-- does; nil, message when two providers claim the path.
function M.of(path)
  local found
  for _, r in ipairs(routes) do
    if path:find(r[1]) then
      if found and found ~= r[2] then
        return nil, ("both %s and %s claim %s (their routes overlap)"):format(found.name, r[2].name, path)
      end
      found = r[2]
    end
  end
  return found
end

--- The names of the keys the providers accept -> the keys.
function M.keys() return keys end

--- The loaded modules, in order.
function M.list() return list end

return M
