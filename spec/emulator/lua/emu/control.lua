--- The control API under /_emu/ (no auth), and the two data-plane
-- endpoints we own: /_emu/echo... and /_emu/big.
local faults = require "emu.faults"
local providers = require "emu.providers"
local store = require "emu.store"
local util = require "emu.util"

local M = {}

local function ok(body) return util.json(200, body or '{"ok":true}') end
local bad = function(message) return util.emu_error(400, message) end

local function object_body(req)
  if req.body:match("^%s*$") then return {} end
  local v, err = util.decode(req.body)
  if v == nil then return nil, "body is not JSON: " .. tostring(err) end
  if type(v) ~= "table" then return nil, "body must be a JSON object" end
  return v
end

local function config(req)
  if req.method == "GET" then return ok(util.encode(store.config())) end
  local patch, err = object_body(req)
  if not patch then return bad(err) end
  local c, cerr = store.set_config(patch)
  if not c then return bad(cerr) end
  return ok(util.encode(c))
end

local function fault_queue(req)
  if req.method == "GET" then return ok(util.encode(faults.list())) end
  if req.method == "DELETE" then
    faults.clear()
    return ok()
  end
  local body, err = object_body(req)
  if not body then return bad(err) end
  for k in pairs(body) do
    if k ~= "path" and k ~= "faults" then return bad("unknown key: " .. tostring(k)) end
  end
  if type(body.path) ~= "string" or body.path == "" then return bad("path must be a non-empty string") end
  if type(body.faults) ~= "table" or #body.faults == 0 then
    return bad("faults must be a non-empty array of fault specs")
  end
  local texts = {}
  for i, spec in ipairs(body.faults) do
    local s, verr = faults.validate(spec)
    if not s then return bad("faults[" .. i .. "]: " .. verr) end
    texts[i] = util.encode(s)
  end
  faults.push(body.path, texts)
  return ok(util.encode(faults.list()))
end

-- path -> {method -> handler}; "*" is any method
local ROUTES = {
  ["/_emu/health"] = { GET = function() return ok() end },
  ["/_emu/reset"] = { POST = function()
    store.reset()
    return ok()
  end },
  ["/_emu/config"] = { GET = config, POST = config },
  ["/_emu/stats"] = { GET = function() return ok(util.encode(store.stats())) end },
  ["/_emu/keys"] = { GET = function() return ok(util.encode(providers.keys())) end },
  ["/_emu/requests"] = { GET = function() return ok(store.requests()) end },
  ["/_emu/faults"] = { GET = fault_queue, POST = fault_queue, DELETE = fault_queue },
}

function M.handle(req)
  local route = ROUTES[req.path]
  if not route then return util.emu_error(404, "no control endpoint " .. req.path) end
  local h = route[req.method]
  if not h then return util.emu_error(405, req.method .. " not allowed on " .. req.path) end
  return h(req)
end

-- Data plane ------------------------------------------------------------------

function M.echo(req)
  return ok(util.encode{
    method = req.method, uri = req.path, args = req.args, query = util.query_map(req.query),
    headers = req.headers, body = req.body,
  })
end

function M.big(req)
  local n = util.int(util.last(req.query, "bytes") or "1024")
  if not n or n < 0 then return bad("bytes must be a non-negative integer") end
  local stream, len = util.big_stream(n)
  return { status = 200, stream = stream, length = len, headers = {},
           chunked = util.last(req.query, "chunked") == "1" }
end

--- The error shape of the endpoints we own (faults on echo and big).
function M.error(status, message) return util.emu_error(status, message) end

return M
