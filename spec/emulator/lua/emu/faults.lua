--- Fault injection: which fault applies to a request (X-Emu-Fault header, or
-- the next one queued for its path), the canned responses, and the writer
-- that can also drip, truncate or cut a response.
local util = require "emu.util"

-- the writer sets ngx.status and ngx.header, which read-only ngx forbids
-- luacheck: globals ngx

local M = {}

local dict = ngx.shared.emu
local floor = math.floor

local function int(v) return type(v) == "number" and v == floor(v) end
local function nonneg(v) return type(v) == "number" and v >= 0 end
local function bool(v) return type(v) == "boolean" end
local function str(v) return type(v) == "string" end

local KEYS = {
  status = function(v) return int(v) and v >= 100 and v <= 599 end,
  body = str,
  headers = function(v)
    if type(v) ~= "table" then return false end
    for k, x in pairs(v) do
      if type(k) ~= "string" or (type(x) ~= "string" and type(x) ~= "number") then return false end
    end
    return true
  end,
  delay_ms = nonneg, drip_ms = nonneg,
  drip_bytes = function(v) return int(v) and v >= 1 end,
  truncate = bool, reset = bool, reset_mid_body = bool, invalid_json = bool, html = bool,
  empty = bool, loading = bool,
  content_type = str,
  oversize_bytes = function(v) return int(v) and v >= 0 end,
  deep = function(v) return int(v) and v >= 1 and v <= 10000000 end,
  rate_limit_remaining = function(v) return int(v) and v >= 0 end,
  rate_limit_reset = function(v) return int(v) and v >= 0 end,
}

-- Keys a provider's emulator module adds (its `faults`, see emu.providers):
-- name -> response(value, status), in the order they were declared.
local OWN = {}

--- Adds a provider's fault key (emu.providers.load, before the workers
-- fork): a truthy value replaces the answer with response(value, status).
function M.declare(name, check, response, where)
  assert(KEYS[name] == nil, (where or "?") .. ": fault key " .. name .. " is declared twice")
  assert(type(check) == "function" and type(response) == "function",
    (where or "?") .. ": fault key " .. name .. " needs check and response functions")
  KEYS[name] = check
  OWN[#OWN + 1] = { name, response }
end

local function declared(spec)
  for _, d in ipairs(OWN) do
    if spec[d[1]] then return d end
  end
end

--- Checks a decoded spec. @return spec or nil, message
function M.validate(spec)
  if type(spec) ~= "table" or #spec > 0 then return nil, "a fault spec must be a JSON object" end
  for k, v in pairs(spec) do
    local check = KEYS[k]
    if not check then return nil, "unknown fault key: " .. tostring(k) end
    if not check(v) then return nil, "bad value for fault key " .. k end
  end
  return spec
end

-- Queues ------------------------------------------------------------------
-- fq:n queues; fq:path:<k> is the path of queue k, fq:list:<k> its specs.

local function matches(path, p)
  if path == p or path:sub(1, #p) == p then return true end
  local ok, found = pcall(string.find, path, "^" .. p)
  return ok and found ~= nil
end

--- Queues specs (already validated, as JSON texts) for a path.
function M.push(path, texts)
  local n = dict:get("fq:n") or 0
  local k
  for j = 1, n do
    if dict:get("fq:path:" .. j) == path then k = j break end
  end
  if not k then
    k = dict:incr("fq:n", 1, 0)
    dict:set("fq:path:" .. k, path)
  end
  for _, t in ipairs(texts) do dict:rpush("fq:list:" .. k, t) end
end

--- Pops the next spec queued for a path matching `path`, or nil.
function M.pop(path)
  for k = 1, dict:get("fq:n") or 0 do
    local p = dict:get("fq:path:" .. k)
    if p and matches(path, p) then
      local t = dict:lpop("fq:list:" .. k)
      if t then return util.decode(t) end
    end
  end
  return nil
end

function M.list()
  local out = {}
  for k = 1, dict:get("fq:n") or 0 do
    out[#out + 1] = { path = dict:get("fq:path:" .. k), pending = dict:llen("fq:list:" .. k) or 0 }
  end
  return util.array(out)
end

function M.clear()
  for k = 1, dict:get("fq:n") or 0 do
    dict:delete("fq:path:" .. k)
    dict:delete("fq:list:" .. k)
  end
  dict:delete("fq:n")
end

--- The fault for this request: the header wins (and leaves the queue alone).
-- @return spec or nil; or false, message for a bad header
function M.for_request(req)
  local h = req.headers["x-emu-fault"]
  if h then
    local spec, err = util.decode(h)
    if spec == nil then return false, "X-Emu-Fault is not JSON: " .. tostring(err) end
    local ok, verr = M.validate(spec)
    if not ok then return false, verr end
    return spec
  end
  return M.pop(req.path)
end

-- Canned responses ----------------------------------------------------------

local function html_page(status)
  local title = status .. " " .. util.reason(status)
  return "<html>\r\n<head><title>" .. title .. "</title></head>\r\n<body>\r\n<center><h1>"
    .. title .. "</h1></center>\r\n<hr><center>emulated</center>\r\n</body>\r\n</html>\r\n"
end

--- Whether the spec replaces the provider's answer (the handler is not run,
-- so nothing is mutated).
function M.replaces(spec)
  return spec.body or spec.invalid_json or spec.html or spec.empty or spec.oversize_bytes
    or spec.deep or spec.loading or declared(spec) ~= nil or (spec.status and spec.status >= 400)
    or false
end

--- The canned response; `provider.error(status)` gives its error shape.
function M.response(spec, provider)
  local st = spec.status
  if spec.loading then return util.json(st or 202, '{"success":true}') end
  local own = declared(spec)
  if own then return own[2](spec[own[1]], st) end
  if spec.invalid_json then return util.json(st or 200, '{"data": [1, 2,') end
  if spec.empty then return util.json(st or 200, "") end
  if spec.html then
    st = st or 502
    return { status = st, body = html_page(st), ctype = "text/html", headers = {} }
  end
  if spec.oversize_bytes then
    local stream, len = util.big_stream(spec.oversize_bytes)
    return { status = st or 200, stream = stream, length = len, headers = {} }
  end
  if spec.deep then
    return util.json(st or 200, string.rep("[", spec.deep) .. string.rep("]", spec.deep))
  end
  if spec.body then return util.json(st or 200, spec.body) end
  return provider.error(st)
end

-- Writer ------------------------------------------------------------------

local function once(s)
  local done = false
  return function()
    if done then return nil end
    done = true
    return s
  end
end

--- Writes a response, applying the transport faults of `spec`.
function M.send(res, spec)
  spec = spec or {}
  if spec.delay_ms and spec.delay_ms > 0 then ngx.sleep(spec.delay_ms / 1000) end
  if spec.reset then return ngx.exit(444) end
  ngx.status = res.status
  local hdr = ngx.header
  for k, v in pairs(res.headers or {}) do hdr[k] = v end
  if spec.headers then
    for k, v in pairs(spec.headers) do hdr[k] = tostring(v) end
  end
  if res.status == 204 or res.status == 304 then return ngx.exit(res.status) end
  hdr["Content-Type"] = spec.content_type or res.ctype or "application/json"

  local body = res.body
  if type(body) == "table" then -- a list of pieces, sent as is unless cut or dripped
    if spec.truncate or spec.reset_mid_body or spec.drip_ms or spec.drip_bytes then
      body = table.concat(body)
    else
      local n = 0
      for _, piece in ipairs(body) do n = n + #piece end
      hdr["Content-Length"] = n
      ngx.print(body)
      return
    end
  end
  local total = body and #body or res.length
  local chunked = res.chunked or spec.reset_mid_body
  if not chunked then hdr["Content-Length"] = total end
  local cut = (spec.truncate or spec.reset_mid_body) and floor(total / 2) or nil
  local step = spec.drip_ms and (spec.drip_bytes or 1)
  if not step and spec.drip_bytes then step = spec.drip_bytes end
  local pause = (spec.drip_ms or 0) / 1000

  local sent, first = 0, true
  for piece in body and once(body) or res.stream do
    if cut and sent + #piece > cut then piece = piece:sub(1, cut - sent) end
    if step then
      for j = 1, #piece, step do
        if not first and pause > 0 then ngx.sleep(pause) end
        first = false
        ngx.print(piece:sub(j, j + step - 1))
        if not ngx.flush(true) then return ngx.exit(444) end -- the client left
      end
    else
      ngx.print(piece)
    end
    sent = sent + #piece
    if cut and sent >= cut then break end
  end
  if cut then
    -- headers and part of the body are out: now drop the connection
    ngx.flush(true)
    return ngx.exit(ngx.ERROR)
  end
end

return M
