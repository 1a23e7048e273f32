--- Openlayer: `POST /inference-pipelines/{pipeline_id}/users` (seed 001).
--
--    local ol = userlist.openlayer{ api_key = "...", base_url = "https://api.openlayer.com/v1" }
--    for u in ol:users{ pipeline_id = "182bd5e5-...", sort_column = "cost", asc = false } do
--      print(u.id, u.requests, u.cost)
--    end
--
-- * Query: `page` (from 1), `perPage` 1..100, `sortColumn`, `asc`; the body
--   is the seed's DatasetFilter (`{}` when there is no filter). Query keys
--   are those names in snake_case: `per_page`, `sort_column`,
--   `column_filters`, `search_query_and`, `row_id_list`, ... `per_page`
--   defaults to 100 (the server's own default is 25). Also `max_pages` and
--   `dedupe` (drop a user id seen before, as offset paging can repeat rows).
-- * No total and no next link: the last page is an empty or short one.
-- * 202 `{"success":true}` means "still loading", never an empty page: the
--   same page is asked again after a wait (client option `loading_timeout`,
--   seconds, default 60; then an error of kind "loading").
-- * The endpoint has no time filter, so `since`/`until` are refused.
-- * Errors `{"code": int, "error": string}` become err.code / err.message.
-- @module userlist.openlayer
local client = require "userlist.client"
local core = require "userlist.core"
local errors = require "userlist.errors"
local norm = require "userlist.normalize"

local check, raise = errors.check, errors.raise_invalid
local floor, tointeger = math.floor, math.tointeger

local MAX_FILTERS = 5       -- columnFilters maxItems
local MAX_SEARCH = 300      -- search strings maxLength
local MAX_PER_PAGE = 100
local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

-- The three column filter shapes of the DatasetFilter, by operator:
-- SetColumnFilter (an array of strings / numbers), NumericColumnFilter
-- (a number or null), StringColumnFilter (a string or a boolean). `is` and
-- `!=` belong to both of the last two.
local SET_OPS = {
  contains_none = true, contains_any = true, contains_all = true, one_of = true, none_of = true,
}
local NUMERIC_OPS = { [">"] = true, [">="] = true, ["<"] = true, ["<="] = true }
local EQUALITY_OPS = { is = true, ["!="] = true }
local OPERATORS = "contains_none, contains_any, contains_all, one_of, none_of, >, >=, <, <=, is, !="

-- query key -> body field
local SEARCH = {
  search_query_or = "searchQueryOr", search_query_and = "searchQueryAnd",
  not_search_query_or = "notSearchQueryOr", not_search_query_and = "notSearchQueryAnd",
}
local ROWS = { row_id_list = "rowIdList", exclude_row_id_list = "excludeRowIdList" }

local KNOWN = {
  pipeline_id = true, page = true, per_page = true, sort_column = true, asc = true,
  column_filters = true, max_pages = true, dedupe = true,
}
for k in pairs(SEARCH) do KNOWN[k] = true end
for k in pairs(ROWS) do KNOWN[k] = true end

local function typename(v)
  if v == core.null then return "null" end
  return type(v)
end

-- A Lua array: a table whose keys are exactly 1..#t.
local function array(field, v, what)
  if type(v) ~= "table" then raise(field, "must be " .. what .. ", got " .. typename(v)) end
  local n = #v
  for k in pairs(v) do
    if type(k) ~= "number" or k < 1 or k > n or k ~= floor(k) then
      raise(field, "must be " .. what .. " (a list, not a map)")
    end
  end
  return n
end

local function column_filter(f, i)
  local name = ("column_filters[%d]"):format(i)
  if type(f) ~= "table" then raise(name, "must be a table {measurement=, operator=, value=}") end
  for k in pairs(f) do
    if k ~= "measurement" and k ~= "operator" and k ~= "value" then
      raise(name .. "." .. tostring(k), "is not a column filter field (measurement, operator, value)")
    end
  end
  if type(f.measurement) ~= "string" or f.measurement == "" then
    raise(name .. ".measurement", "must be a non-empty string (the column name)")
  end
  local op, v = f.operator, f.value
  if type(op) ~= "string" then raise(name .. ".operator", "must be a string, got " .. typename(op)) end
  if v == nil then raise(name .. ".value", "is required (userlist.null sends null)") end
  if SET_OPS[op] then
    local n = array(name .. ".value", v, "an array of strings or numbers for operator " .. op)
    if n == 0 then raise(name .. ".value", "needs at least one value for operator " .. op) end
    for j = 1, n do
      if type(v[j]) ~= "string" and type(v[j]) ~= "number" then
        raise(("%s.value[%d]"):format(name, j), "must be a string or a number, got " .. typename(v[j]))
      end
    end
  elseif NUMERIC_OPS[op] then
    if type(v) ~= "number" and v ~= core.null then
      raise(name .. ".value", "must be a number or null for operator " .. op .. ", got " .. typename(v))
    end
  elseif EQUALITY_OPS[op] then
    local t = type(v)
    if t ~= "number" and t ~= "string" and t ~= "boolean" and v ~= core.null then
      raise(name .. ".value", "must be a number, string, boolean or null for operator " .. op
        .. ", got " .. t)
    end
  else
    raise(name .. ".operator", ("is not a known operator: %s (known: %s)"):format(op, OPERATORS))
  end
  return { measurement = f.measurement, operator = op, value = v }
end

local function column_filters(cf)
  local n = array("column_filters", cf, "an array of column filters")
  if n > MAX_FILTERS then
    raise("column_filters", ("takes at most %d filters, got %d"):format(MAX_FILTERS, n))
  end
  if n == 0 then return nil end
  local out = {}
  for i = 1, n do out[i] = column_filter(cf[i], i) end
  return out
end

local function row_ids(field, v)
  local n = array(field, v, "an array of integers")
  if n == 0 then return nil end
  local out = {}
  for i = 1, n do
    local x = v[i]
    if type(x) ~= "number" or x ~= floor(x) or x ~= x or x == math.huge or x == -math.huge then
      raise(("%s[%d]"):format(field, i), "must be an integer, got " .. tostring(x))
    end
    out[i] = tointeger and tointeger(x) or x
  end
  return out
end

local function prepare(c, q)
  for _, t in ipairs{ "since", "until" } do
    if type(q) == "table" and q[t] ~= nil then
      raise(t, "is not supported: Openlayer's users endpoint has no time filter")
    end
  end
  check.known(q, KNOWN)
  local id = q.pipeline_id
  if id == nil then id = c.options.pipeline_id end
  if id == nil then raise("pipeline_id", "is required (the inference pipeline / data source id)") end
  check.string({ pipeline_id = id }, "pipeline_id")
  if not id:match(UUID) then raise("pipeline_id", "must be a UUID, got " .. id) end
  local p = {
    path = "/inference-pipelines/" .. id .. "/users",
    page = check.int(q, "page", 1, 2 ^ 31 - 1) or 1,
    per_page = check.int(q, "per_page", 1, MAX_PER_PAGE) or MAX_PER_PAGE,
    sort_column = check.string(q, "sort_column"),
    asc = check.boolean(q, "asc"),
    max_pages = check.int(q, "max_pages", 1, 2 ^ 31 - 1),
    dedupe = check.boolean(q, "dedupe"),
    body = {},
  }
  if q.column_filters ~= nil then p.body.columnFilters = column_filters(q.column_filters) end
  for field, wire in pairs(SEARCH) do
    local list = check.strings(q, field, { max_len = MAX_SEARCH, empty_ok = true })
    if list and #list > 0 then p.body[wire] = list end
  end
  for field, wire in pairs(ROWS) do
    if q[field] ~= nil then p.body[wire] = row_ids(field, q[field]) end
  end
  return p
end

--- One user: every Openlayer field kept (null -> nil), plus the common
-- fields: id, requests (records), sessions, tokens (a float on the wire,
-- 1122.0: an integer when whole), cost, first_seen (dateOfFirstRecord),
-- last_seen (dateOfLastRecord).
local ROW = norm.shape{
  list = "items", ids = { "id" }, ints = { "sessions", "records", "tokens" }, nums = { "cost" },
  copy = { { "requests", "records" } },
  times = { first_seen = "dateOfFirstRecord", last_seen = "dateOfLastRecord" },
}

local listing = {
  rows = function() return ROW end,
  prepare = prepare,
  first = function(p) return p.page end,
  request = function(_, p, page)
    return {
      method = "POST", path = p.path, json = p.body,
      query = { page = page, perPage = p.per_page, sortColumn = p.sort_column, asc = p.asc },
    }
  end,
  parse = function(c, body, p, page)
    local items = type(body) == "table" and body.items
    if type(items) ~= "table" then
      error(errors.new{ kind = "decode", message = "response has no 'items' array" }, 0)
    end
    norm.rows(items, ROW, 0, 0, c, p.warned)
    -- no total, no next link: a short (or empty) page is the last one
    local last = #items < p.per_page
    return items, (not last) and (page + 1) or nil, { page = page, per_page = p.per_page }
  end,
  key = function(u) return u.id end,
  ahead = function(_, page) return page + 1 end,
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
      if b.code ~= nil and b.code ~= core.null then err.code = norm.id(b.code) end
      if type(b.error) == "string" then err.message = b.error end
    end
  end,
}
