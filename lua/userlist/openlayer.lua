--- Openlayer: `POST /inference-pipelines/{id}/users` (seed 001).
-- Page numbers from 1, perPage 1..100, a DatasetFilter body. The server
-- gives no total and no next link: the last page is an empty or short one.
-- 202 {"success":true} means "still loading": the same page is asked again.
-- @module userlist.openlayer
local client = require "userlist.client"
local core = require "userlist.core"
local errors = require "userlist.errors"
local norm = require "userlist.normalize"

local check, raise = errors.check, errors.raise_invalid

local SET_OPS = {
  contains_none = true, contains_any = true, contains_all = true, one_of = true, none_of = true,
}
local NUMERIC_OPS = { [">"] = true, [">="] = true, ["<"] = true, ["<="] = true }
local EQUALITY_OPS = { is = true, ["!="] = true } -- numeric or string filters

local KNOWN = {
  pipeline_id = true, page = true, per_page = true, sort_column = true, asc = true,
  column_filters = true, search_query_or = true, search_query_and = true,
  not_search_query_or = true, not_search_query_and = true, row_id_list = true,
  exclude_row_id_list = true, max_pages = true,
}
local SEARCH = {
  search_query_or = "searchQueryOr", search_query_and = "searchQueryAnd",
  not_search_query_or = "notSearchQueryOr", not_search_query_and = "notSearchQueryAnd",
}
local ROWS = { row_id_list = "rowIdList", exclude_row_id_list = "excludeRowIdList" }

local function column_filter(f, i)
  local name = ("column_filters[%d]"):format(i)
  if type(f) ~= "table" then raise(name, "must be a table {measurement, operator, value}") end
  for k in pairs(f) do
    if k ~= "measurement" and k ~= "operator" and k ~= "value" then
      raise(name .. "." .. tostring(k), "is not a column filter field")
    end
  end
  if type(f.measurement) ~= "string" or f.measurement == "" then
    raise(name .. ".measurement", "must be a non-empty string")
  end
  local op, v = f.operator, f.value
  if SET_OPS[op] then
    if type(v) ~= "table" then raise(name .. ".value", "must be an array for operator " .. op) end
    for j = 1, #v do
      if type(v[j]) ~= "string" and type(v[j]) ~= "number" then
        raise(("%s.value[%d]"):format(name, j), "must be a string or a number")
      end
    end
  elseif NUMERIC_OPS[op] then
    if type(v) ~= "number" and v ~= core.null then
      raise(name .. ".value", "must be a number for operator " .. op)
    end
  elseif EQUALITY_OPS[op] then
    local t = type(v)
    if t ~= "number" and t ~= "string" and t ~= "boolean" and v ~= core.null then
      raise(name .. ".value", "must be a number, string or boolean for operator " .. op)
    end
  else
    raise(name .. ".operator", "is not a known operator: " .. tostring(op))
  end
  return { measurement = f.measurement, operator = op, value = v }
end

local function prepare(c, q)
  check.known(q, KNOWN)
  local id = q.pipeline_id or c.options.pipeline_id
  if id == nil then raise("pipeline_id", "is required (the inference pipeline / data source id)") end
  check.string({ pipeline_id = id }, "pipeline_id")
  if not id:match("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$") then
    raise("pipeline_id", "must be a UUID, got " .. id)
  end
  local p = {
    path = "/inference-pipelines/" .. core.escape(id) .. "/users",
    page = check.int(q, "page", 1, 2 ^ 31 - 1) or 1,
    per_page = check.int(q, "per_page", 1, 100) or 100,
    sort_column = check.string(q, "sort_column"),
    asc = check.boolean(q, "asc"),
    max_pages = check.int(q, "max_pages", 1, 2 ^ 31 - 1),
    body = {},
  }
  if q.column_filters ~= nil then
    local cf = q.column_filters
    if type(cf) ~= "table" then raise("column_filters", "must be an array of filters") end
    if #cf > 5 then raise("column_filters", ("takes at most 5 filters, got %d"):format(#cf)) end
    local out = {}
    for i = 1, #cf do out[i] = column_filter(cf[i], i) end
    p.body.columnFilters = out
  end
  for field, wire in pairs(SEARCH) do
    p.body[wire] = check.strings(q, field, { max_len = 300 })
  end
  for field, wire in pairs(ROWS) do
    local v = q[field]
    if v ~= nil then
      if type(v) ~= "table" then raise(field, "must be an array of integers") end
      for i = 1, #v do
        if type(v[i]) ~= "number" or v[i] ~= math.floor(v[i]) then
          raise(("%s[%d]"):format(field, i), "must be an integer")
        end
      end
      p.body[wire] = v
    end
  end
  return p
end

local function map(u)
  norm.strip_nulls(u)
  u.id = norm.id(u.id)
  u.sessions = norm.int(u.sessions)
  u.records = norm.int(u.records)
  u.tokens = norm.num(u.tokens)
  u.cost = norm.num(u.cost)
  u.requests = u.records
  u.first_seen = norm.time(u.dateOfFirstRecord)
  u.last_seen = norm.time(u.dateOfLastRecord)
  return u
end

local listing = {
  prepare = prepare,
  first = function(p) return p.page end,
  request = function(_, p, page)
    return {
      method = "POST", path = p.path, json = p.body,
      query = { page = page, perPage = p.per_page, sortColumn = p.sort_column, asc = p.asc },
    }
  end,
  parse = function(_, body, p, page)
    local items = type(body) == "table" and body.items
    if type(items) ~= "table" then
      error(errors.new{ kind = "decode", message = "response has no 'items' array" }, 0)
    end
    for i = 1, #items do map(items[i]) end
    -- no total, no next link: a short (or empty) page is the last one
    local last = #items < p.per_page
    return items, (not last) and (page + 1) or nil, { page = page, per_page = p.per_page }
  end,
  key = function(u) return u.id end,
}

return client.define{
  name = "openlayer",
  env_key = "OPENLAYER_API_KEY",
  base_url = function() return "https://api.openlayer.com/v1" end,
  options = { pipeline_id = "string" },
  listing = listing,
  -- 202 {"success":true}: the data is being loaded; never an empty page
  check = function(res)
    if res.status == 202 then return "loading" end
  end,
  -- {"code": int, "error": string}
  error = function(err)
    local b = err.body
    if type(b) == "table" then
      if b.code ~= nil and b.code ~= core.null then err.code = tostring(b.code) end
      if type(b.error) == "string" then err.message = b.error end
    end
  end,
}
