--- Shared helpers: the request as received, query strings, JSON output and
-- canned responses.
local cjson = require "cjson.safe"

local M = {}

local concat, fmt, byte, floor = table.concat, string.format, string.byte, math.floor

M.null = cjson.null

M.REASONS = {
  [200] = "OK", [201] = "Created", [202] = "Accepted", [204] = "No Content",
  [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not Found",
  [405] = "Method Not Allowed", [408] = "Request Timeout", [409] = "Conflict",
  [413] = "Payload Too Large", [422] = "Unprocessable Entity", [429] = "Too Many Requests",
  [500] = "Internal Server Error", [502] = "Bad Gateway", [503] = "Service Unavailable",
  [504] = "Gateway Timeout",
}

function M.reason(status) return M.REASONS[status] or ("HTTP " .. status) end

-- JSON ----------------------------------------------------------------------

--- Decodes JSON; nil, message on bad input. null decodes to util.null.
function M.decode(s) return cjson.decode(s) end

local ESC = { ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
              ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }
local function esc(c) return ESC[c] or fmt("\\u%04x", byte(c)) end

--- A JSON string literal. Unlike cjson 2.1 it leaves "/" alone, so URLs
-- read as sent.
function M.str(s) return '"' .. tostring(s):gsub('[%c"\\]', esc) .. '"' end

--- Marks a table as a JSON array even when empty.
M.array_mt = {}
function M.array(t) return setmetatable(t or {}, M.array_mt) end

local function is_array(t)
  if getmetatable(t) == M.array_mt then return true end
  local n = #t
  if n == 0 then return false end
  local c = 0
  for _ in pairs(t) do c = c + 1 end
  return c == n
end

local function number(v)
  if v ~= v or v == math.huge or v == -math.huge then return "null" end
  if v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then return fmt("%d", v) end
  return fmt("%.14g", v)
end

--- Encodes a Lua value; object keys come out sorted, so output is stable.
function M.encode(v)
  local t = type(v)
  if t == "string" then return M.str(v) end
  if t == "number" then return number(v) end
  if t == "boolean" then return v and "true" or "false" end
  if t ~= "table" then return "null" end
  local out = {}
  if is_array(v) then
    for i = 1, #v do out[i] = M.encode(v[i]) end
    return "[" .. concat(out, ",") .. "]"
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  for i, k in ipairs(keys) do
    local val = v[k]
    if val == nil then val = v[tonumber(k)] end
    out[i] = M.str(k) .. ":" .. M.encode(val)
  end
  return "{" .. concat(out, ",") .. "}"
end

-- Query strings -----------------------------------------------------------

--- Form-decodes one query component ("+" is a space, as qs and Starlette do).
function M.unescape(s) return ngx.unescape_uri(s) end

--- Raw query string -> ordered list of {name, value}, both decoded.
function M.parse_query(args)
  local list = {}
  if args and args ~= "" then
    for part in args:gmatch("[^&]+") do
      local k, v = part:match("^([^=]*)=(.*)$")
      if not k then k, v = part, "" end
      list[#list + 1] = { M.unescape(k), M.unescape(v) }
    end
  end
  return list
end

--- Every value of `name` (any of the names given), in order.
function M.values(list, ...)
  local names, out = { ... }, {}
  for _, kv in ipairs(list) do
    for _, n in ipairs(names) do
      if kv[1] == n then out[#out + 1] = kv[2] break end
    end
  end
  return out
end

--- The last value of `name` (Starlette and Express keep the last for scalars).
function M.last(list, name)
  local v
  for _, kv in ipairs(list) do
    if kv[1] == name then v = kv[2] end
  end
  return v
end

--- name -> value, or an array of values for a repeated name (echo).
function M.query_map(list)
  local m = {}
  for _, kv in ipairs(list) do
    local k, v = kv[1], kv[2]
    local cur = m[k]
    if cur == nil then m[k] = v
    elseif type(cur) == "table" then cur[#cur + 1] = v
    else m[k] = M.array{ cur, v } end
  end
  return m
end

--- application/x-www-form-urlencoded, as JavaScript's URLSearchParams writes it.
function M.form_escape(s)
  return (s:gsub("[^%w%*%-%._ ]", function(c) return fmt("%%%02X", byte(c)) end):gsub(" ", "+"))
end

function M.form_encode(list)
  local out = {}
  for i, kv in ipairs(list) do out[i] = M.form_escape(kv[1]) .. "=" .. M.form_escape(kv[2]) end
  return concat(out, "&")
end

--- Strict integer parse of a query value ("10" yes; "1e1", "10.5", "" no).
function M.int(s)
  if type(s) ~= "string" or not s:match("^%s*[-+]?%d+%s*$") then return nil end
  return tonumber(s)
end

-- Requests ----------------------------------------------------------------

local MAX_LOGGED_HEADERS = 200

--- The request as received: raw path (undecoded; absolute-form proxy
-- requests reduced to their path), raw query, lower-cased headers, body.
function M.request()
  local raw = ngx.var.request_uri or "/"
  raw = raw:gsub("^%a[%w+.-]*://[^/]*", "")
  local path, args = raw:match("^([^?]*)%??(.*)$")
  if path == "" then path = "/" end
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if not body then
    local file = ngx.req.get_body_file()
    if file then
      local f = io.open(file, "rb")
      if f then body = f:read("*a") f:close() end
    end
  end
  local headers = {}
  for k, v in pairs(ngx.req.get_headers(MAX_LOGGED_HEADERS)) do
    headers[k] = type(v) == "table" and concat(v, ", ") or v
  end
  return {
    method = ngx.req.get_method(), path = path, args = args or "",
    headers = headers, body = body or "", query = M.parse_query(args),
  }
end

--- Splits "Authorization: <scheme> <token>" as the servers do (on the first
-- space). `fold` compares the scheme case-insensitively.
-- @return token or nil (missing / other scheme), and whether a header was sent
function M.bearer(headers, fold)
  local h = headers.authorization
  if not h or h == "" then return nil, false end
  local scheme, token = h:match("^(%S+) +(%S+)")
  if not scheme then return nil, true end
  if scheme ~= "Bearer" and not (fold and scheme:lower() == "bearer") then return nil, true end
  return token, true
end

--- Percent-decodes one path segment (no "+" rule in paths).
function M.unescape_path(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- Responses -----------------------------------------------------------------
-- A response is {status, body = string | stream = iterator, length,
-- chunked, ctype, headers}; faults.send writes it.

function M.json(status, body, headers)
  return { status = status, body = body, headers = headers or {} }
end

--- The same JSON body for every status, for the endpoints we own.
function M.emu_error(status, message)
  return M.json(status, '{"error":' .. M.str(message or M.reason(status)) .. "}")
end

--- A stream of valid JSON of exactly n bytes (n >= 4; fewer gives "[]"):
-- an array of strings, produced in pieces of about 64 KiB.
function M.big_stream(n)
  if n < 4 then
    local done = false
    return function() if done then return nil end done = true return "[]" end, 2
  end
  local E = 1000 -- bytes per element, quotes included
  local elem = '"' .. string.rep("a", E - 2) .. '"'
  local remaining, first, finished = n - 2, true, false
  local function one()
    local sep = first and "" or ","
    local r = remaining - #sep
    local size = (r > E + 3) and E or r
    remaining = r - size
    first = false
    if size == E then return sep .. elem end
    return sep .. '"' .. string.rep("a", size - 2) .. '"'
  end
  local started = false
  return function()
    if finished then return nil end
    local parts = {}
    if not started then parts[1], started = "[", true end
    while remaining > 0 and #parts < 64 do parts[#parts + 1] = one() end
    if remaining <= 0 then parts[#parts + 1], finished = "]", true end
    return concat(parts)
  end, n
end

return M
