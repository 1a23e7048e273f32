--- Openlayer: POST /v1/inference-pipelines/{id}/users (seed 001).
-- page from 1, perPage 1..100, sortColumn/asc, a DatasetFilter body;
-- 202 {"success":true} while "loading"; errors {"code": int, "error": string}.
local data = require "emu.data"
local order = require "emu.order"
local store = require "emu.store"
local util = require "emu.util"

local M = {}

local KEY = "ol-emu-key"
local fmt, concat, min, floor = string.format, table.concat, math.min, math.floor

-- What the emulator takes from this module (spec/emulator/lua/emu/providers.lua).
M.routes = { "^/v1/inference%-pipelines/" }
M.keys = { openlayer = KEY }
M.config = {
  openlayer_loading = { 0, function(v) return type(v) == "number" and v >= 0 and v == floor(v) end },
}
local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

local COLUMNS = {
  id = false, dateOfFirstRecord = false, -- grow with the index
  dateOfLastRecord = function(u) return u.last end,
  sessions = function(u) return u.sessions end,
  records = function(u) return u.requests end,
  tokens = function(u) return u.tokens end,
  cost = function(u) return u.cost end,
}
local SET_OPS = { contains_none = true, contains_any = true, contains_all = true,
                  one_of = true, none_of = true }
local NUM_OPS = { [">"] = true, [">="] = true, ["<"] = true, ["<="] = true, is = true, ["!="] = true }
local SEARCH = { "searchQueryOr", "searchQueryAnd", "notSearchQueryOr", "notSearchQueryAnd" }

function M.error(status, message)
  return util.json(status, fmt('{"code":%d,"error":%s}', status,
    util.str(message or util.reason(status))))
end

local function bad(message) return M.error(400, message) end

local function is_list(t)
  if type(t) ~= "table" then return false end
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n == #t
end

-- A column's value for filters: the figures of the response row.
local function column(u, name)
  if name == "id" then return u.id end
  if name == "sessions" then return u.sessions end
  if name == "records" then return u.requests end
  if name == "tokens" then return u.tokens end
  if name == "cost" then return u.cost / 1e6 end
  return nil
end

local CMP = {
  [">"] = function(a, b) return a > b end, [">="] = function(a, b) return a >= b end,
  ["<"] = function(a, b) return a < b end, ["<="] = function(a, b) return a <= b end,
  is = function(a, b) return a == b end, ["!="] = function(a, b) return a ~= b end,
}

-- Validates a DatasetFilter; returns a predicate (nil = everything) or nil, message.
local function filter_of(f)
  if f == nil or f == util.null then return true end
  if type(f) ~= "table" or (is_list(f) and #f > 0) then return nil, "Request body must be a JSON object" end
  local tests = {}
  local cf = f.columnFilters
  if cf ~= nil and cf ~= util.null then
    if not is_list(cf) then return nil, "columnFilters must be an array" end
    if #cf > 5 then return nil, "columnFilters must contain at most 5 items" end
    for i, c in ipairs(cf) do
      local where = "columnFilters[" .. (i - 1) .. "]"
      if type(c) ~= "table" or type(c.measurement) ~= "string" or c.operator == nil or c.value == nil then
        return nil, where .. " must have measurement, operator and value"
      end
      local op, v = c.operator, c.value
      if SET_OPS[op] then
        if not is_list(v) then return nil, where .. ".value must be an array" end
        for _, x in ipairs(v) do
          if type(x) ~= "string" and type(x) ~= "number" then
            return nil, where .. ".value items must be strings or numbers"
          end
        end
        if op == "one_of" or op == "none_of" then
          local set = {}
          for _, x in ipairs(v) do set[x] = true end
          local want = op == "one_of"
          tests[#tests + 1] = function(u)
            local x = column(u, c.measurement)
            if x == nil then return true end
            return (set[x] == true) == want
          end
        end
      elseif NUM_OPS[op] then
        local t = type(v)
        if t ~= "number" and t ~= "string" and t ~= "boolean" and v ~= util.null then
          return nil, where .. ".value has the wrong type"
        end
        if (op ~= "is" and op ~= "!=") and t ~= "number" and v ~= util.null then
          return nil, where .. ".value must be a number for operator " .. op
        end
        if v ~= util.null then
          tests[#tests + 1] = function(u)
            local x = column(u, c.measurement)
            if x == nil or type(x) ~= type(v) then return op == "!=" end
            return CMP[op](x, v)
          end
        end
      else
        return nil, where .. ".operator is not valid: " .. tostring(op)
      end
    end
  end
  for _, name in ipairs(SEARCH) do
    local list = f[name]
    if list ~= nil and list ~= util.null then
      if not is_list(list) then return nil, name .. " must be an array of strings" end
      for _, s in ipairs(list) do
        if type(s) ~= "string" then return nil, name .. " must be an array of strings" end
        if #s > 300 then return nil, name .. " items must be at most 300 characters" end
      end
      if #list > 0 then
        local any, neg = name:find("Or$") ~= nil, name:find("^not") ~= nil
        tests[#tests + 1] = function(u)
          local id, hits = u.id:lower(), 0
          for _, s in ipairs(list) do
            if id:find(s:lower(), 1, true) then hits = hits + 1 end
          end
          local hit = any and hits > 0 or (not any and hits == #list)
          return hit ~= neg
        end
      end
    end
  end
  for _, name in ipairs{ "rowIdList", "excludeRowIdList" } do
    local list = f[name]
    if list ~= nil and list ~= util.null then
      if not is_list(list) then return nil, name .. " must be an array of integers" end
      local set = {}
      for _, x in ipairs(list) do
        if type(x) ~= "number" or x ~= math.floor(x) then
          return nil, name .. " must be an array of integers"
        end
        set[x] = true
      end
      local keep = name == "rowIdList"
      tests[#tests + 1] = function(u) return (set[u.i] == true) == keep end
    end
  end
  if #tests == 0 then return true end
  return function(u)
    for _, t in ipairs(tests) do
      if not t(u) then return false end
    end
    return true
  end
end

-- Rows are built by concatenation with the date part of each time cached
-- (a million-user listing writes two million dates): about twice as fast as
-- string.format with data.iso, same bytes.
local D2 = {}
for k = 0, 99 do D2[k] = fmt("%02d", k) end
local days, ndays = {}, 0

local function iso(t)
  local d = floor(t / 86400)
  local s = t - d * 86400
  local date = days[d]
  if not date then
    if ndays >= 4096 then days, ndays = {}, 0 end
    date = data.iso(d * 86400):sub(1, 11) -- "2025-01-01T"
    days[d], ndays = date, ndays + 1
  end
  return date .. D2[floor(s / 3600)] .. ":" .. D2[floor(s / 60) % 60] .. ":" .. D2[s % 60] .. "Z"
end

local function row(u)
  return '{"id":"' .. u.id .. '","dateOfFirstRecord":"' .. iso(u.first)
    .. '","dateOfLastRecord":"' .. iso(u.last) .. '","sessions":' .. fmt("%d", u.sessions)
    .. ',"records":' .. fmt("%d", u.requests) .. ',"tokens":' .. fmt("%d", u.tokens)
    .. '.0,"cost":' .. data.usd(u.cost) .. "}"
end

function M.handle(req, ctx)
  local id, rest = req.path:match("^/v1/inference%-pipelines/([^/]*)(.*)$")
  if rest ~= "/users" and rest ~= "/users/" then return M.error(404, "Not found") end
  if req.method ~= "POST" then
    local res = M.error(405, "Method not allowed")
    res.headers.Allow = "POST"
    return res
  end
  local key, sent = util.bearer(req.headers, true)
  if key ~= KEY then
    return M.error(401, sent and "Invalid API key" or "Missing API key")
  end
  id = util.unescape_path(id)
  if not id:match(UUID) then return M.error(404, "Inference pipeline not found") end

  local q = req.query
  local page, per_page = util.last(q, "page"), util.last(q, "perPage")
  page = page == nil and 1 or util.int(page)
  per_page = per_page == nil and 25 or util.int(per_page)
  if not page or page < 1 then return bad("page must be an integer greater than or equal to 1") end
  if not per_page or per_page < 1 or per_page > 100 then
    return bad("perPage must be an integer between 1 and 100")
  end
  local sort = util.last(q, "sortColumn")
  if sort ~= nil and COLUMNS[sort] == nil then return bad("Invalid sortColumn: " .. sort) end
  local asc = util.last(q, "asc")
  if asc ~= nil then
    local a = asc:lower()
    if a == "true" or a == "1" then asc = true
    elseif a == "false" or a == "0" then asc = false
    else return bad("asc must be a boolean") end
  else
    asc = true
  end

  local pred = true
  if not req.body:match("^%s*$") then
    local body, derr = util.decode(req.body)
    if body == nil then return bad("Invalid JSON body: " .. tostring(derr)) end
    local ferr
    pred, ferr = filter_of(body)
    if not pred then return bad(ferr) end
  end

  -- "data is being loaded": the first N requests per pipeline get 202
  local loading = ctx.cfg.openlayer_loading
  if loading > 0 and store.dict:incr("ol:loading:" .. id, 1, 0) <= loading then
    return util.json(202, '{"success":true}')
  end

  local n = ctx.users
  local key_fn = sort and COLUMNS[sort]
  local at = order.at(n, "openlayer:" .. tostring(sort),
    key_fn and function(i) return key_fn(data.user(i)) end or nil, asc)
  local offset = (page - 1) * per_page
  local rows = {}
  if pred == true then
    for k = offset + 1, min(n, offset + per_page) do rows[#rows + 1] = row(data.user(at(k))) end
  else
    local skipped = 0
    for k = 1, n do
      local u = data.user(at(k))
      if pred(u) then
        if skipped < offset then skipped = skipped + 1
        else
          rows[#rows + 1] = row(u)
          if #rows >= per_page then break end
        end
      end
    end
  end
  return util.json(200, '{"items":[' .. concat(rows, ",") .. "]}")
end

return M
