--- State shared by all workers (lua_shared_dict emu): config, counters, the
-- request log. Everything here is cleared by POST /_emu/reset.
local util = require "emu.util"
local data = require "emu.data"

local M = {}

local dict = ngx.shared.emu
local LOG_SIZE = 200
local MAX_LOGGED_BODY = 262144

-- name -> {default, check(v) -> ok}: the keys of every provider, and those
-- each provider's emulator module adds (its `config`, see emu.providers)
local function count(v) return type(v) == "number" and v >= 0 and v == math.floor(v) end
local function boolean(v) return type(v) == "boolean" end
local CONFIG = {
  users = { data.DEFAULT_USERS, count },
  delay_ms = { 0, count },
  rate_limit_enforce = { false, boolean },
}

--- Adds a provider's config key (emu.providers.load, before the workers fork).
function M.declare(name, default, check, where)
  assert(CONFIG[name] == nil, (where or "?") .. ": config key " .. name .. " is declared twice")
  assert(type(check) == "function" and check(default), (where or "?") .. ": config key " .. name
    .. " needs a check(v) that its default passes")
  CONFIG[name] = { default, check }
end

function M.reset() dict:flush_all() end

--- The merged config (defaults filled in).
function M.config()
  local s = dict:get("config")
  local c = s and util.decode(s) or {}
  for k, spec in pairs(CONFIG) do
    if c[k] == nil then c[k] = spec[1] end
  end
  return c
end

--- Merges a patch; a null value restores the default.
-- @return the new config, or nil, message
function M.set_config(patch)
  if type(patch) ~= "table" or getmetatable(patch) == util.array_mt or #patch > 0 then
    return nil, "config must be a JSON object"
  end
  local s = dict:get("config")
  local c = s and util.decode(s) or {}
  for k, v in pairs(patch) do
    local spec = CONFIG[k]
    if not spec then return nil, "unknown config key: " .. tostring(k) end
    if v == util.null then
      c[k] = nil
    elseif not spec[2](v) then
      return nil, "bad value for config key " .. k
    else
      c[k] = v
    end
  end
  dict:set("config", util.encode(c))
  return M.config()
end

--- Counts one data-plane request; returns its sequence number. It is in
-- flight until `finished` (the log phase, which runs however it ended).
function M.count(new_connection)
  if new_connection then dict:incr("stats:connections", 1, 0) end
  local now = dict:incr("stats:in_flight", 1, 0)
  if now > (dict:get("stats:max_in_flight") or 0) then dict:set("stats:max_in_flight", now) end
  ngx.ctx.emu_counted = true -- luacheck: ignore 122
  return dict:incr("stats:requests", 1, 0)
end

function M.finished()
  if ngx.ctx.emu_counted then dict:incr("stats:in_flight", -1, 0) end
end

function M.stats()
  return { connections = dict:get("stats:connections") or 0,
           requests = dict:get("stats:requests") or 0,
           in_flight = dict:get("stats:in_flight") or 0,
           max_in_flight = dict:get("stats:max_in_flight") or 0 }
end

--- Appends to the log of the last LOG_SIZE requests.
function M.log(req)
  local body = req.body
  local entry = { method = req.method, uri = req.path, args = req.args,
                  headers = req.headers, body = body }
  if #body > MAX_LOGGED_BODY then
    entry.body, entry.body_truncated = body:sub(1, MAX_LOGGED_BODY), true
  end
  local n = dict:incr("log:seq", 1, 0)
  dict:set("log:" .. n, util.encode(entry))
  dict:delete("log:" .. (n - LOG_SIZE))
end

--- The log as a JSON array text, oldest first.
function M.requests()
  local n = dict:get("log:seq") or 0
  local out = {}
  for k = math.max(1, n - LOG_SIZE + 1), n do
    out[#out + 1] = dict:get("log:" .. k)
  end
  return "[" .. table.concat(out, ",") .. "]"
end

--- Counts a request in a fixed window; returns the count and the seconds
-- left in the window.
function M.window(name, seconds)
  local now = ngx.now()
  local w = math.floor(now / seconds)
  local n = dict:incr("win:" .. name .. ":" .. w, 1, 0, seconds * 2)
  local reset = math.ceil((w + 1) * seconds - now)
  return n, reset < 1 and 1 or reset
end

M.dict = dict

return M
