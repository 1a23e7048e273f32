--- Entry point (content_by_lua): control requests go to emu.control; every
-- other request is "data plane": counted, logged, delayed, subject to
-- faults, and answered by the provider whose routes match its path (the
-- providers found under spec/providers/, see emu.providers).
local control = require "emu.control"
local faults = require "emu.faults"
local providers = require "emu.providers"
local store = require "emu.store"
local util = require "emu.util"

local M = {}

-- The pseudo-provider of /_emu/echo, /_emu/big and unknown paths.
local OWN = {
  error = control.error,
  handle = function(req)
    if req.path:find("^/_emu/echo") then return control.echo(req) end
    if req.path == "/_emu/big" then return control.big(req) end
    return util.emu_error(404, "no emulated endpoint " .. req.method .. " " .. req.path)
  end,
}

local function provider_of(path)
  local p, err = providers.of(path)
  if err then return nil, err end
  return p or OWN
end

local function is_control(path)
  return path:sub(1, 6) == "/_emu/" and not path:find("^/_emu/echo") and path ~= "/_emu/big"
end

-- users for this request: X-Emu-Users, else the config
local function users(req, cfg)
  local h = req.headers["x-emu-users"]
  if h == nil then return cfg.users end
  local n = util.int(h)
  if not n or n < 0 or n > 100000000 then return nil end
  return n
end

function M.handle()
  local req = util.request()
  if is_control(req.path) then return faults.send(control.handle(req)) end

  local seq = store.count(ngx.var.connection_requests == "1")
  store.log(req)
  local cfg = store.config()
  local spec, ferr = faults.for_request(req)
  if spec == false then return faults.send(util.emu_error(400, ferr)) end
  local n = users(req, cfg)
  if not n then return faults.send(util.emu_error(400, "X-Emu-Users must be an integer 0..100000000")) end
  if cfg.delay_ms > 0 then ngx.sleep(cfg.delay_ms / 1000) end

  local provider, perr = provider_of(req.path)
  if not provider then return faults.send(util.emu_error(500, perr)) end
  local ctx = { cfg = cfg, users = n, fault = spec, seq = seq }
  local res
  if spec and faults.replaces(spec) then
    res = faults.response(spec, provider)
  else
    res = provider.handle(req, ctx)
    if spec and spec.status then res.status = spec.status end
  end
  res.headers = res.headers or {}
  if provider.decorate then provider.decorate(res, ctx, req) end
  local h = res.headers
  if spec and not (h["RateLimit-Remaining"] or h["X-RateLimit-Remaining"]) then
    -- no rate-limit headers of its own: set both families
    if spec.rate_limit_remaining then
      h["RateLimit-Remaining"] = tostring(spec.rate_limit_remaining)
      h["X-RateLimit-Remaining"] = tostring(spec.rate_limit_remaining)
    end
    if spec.rate_limit_reset then
      h["RateLimit-Reset"] = tostring(spec.rate_limit_reset)
      h["X-RateLimit-Reset"] = tostring(spec.rate_limit_reset)
    end
  end
  return faults.send(res, spec)
end

return M
