--- The one argument check. A provider declares its query once, as a
-- schema (a list of keys, see `schema`); `check` holds a query table
-- against it and returns the checked values. The same declaration drives
-- the CLI's flags and help (userlist.cli) and the reference (doc/queries.md,
-- written by doc/gen-queries.lua). What is wrong raises an `invalid` error
-- naming the field (userlist.errors), caught by the pcall boundary of
-- page() or passed through by users().
--
-- A key:
--
--    { name = "limit", type = "int", min = 1, max = 1000, default = 1000,
--      wire = "limit", help = "users a page, 1..1000 (default 1000)" }
--
-- * `name`: the Lua query key; `type`: one of `args.types` (int, number,
--   string, boolean, enum, strings, time, sort, list, table, function);
-- * bounds by type: `min`/`max` (int: the value; strings and list: the
--   count), `max_len`, `choices`, `pattern` with `mismatch`, ...;
-- * `default`: the value when absent; `option = true`: when absent, the
--   client option of that name; `required`: the message when neither is
--   there (e.g. "is required (at least one task id)");
-- * `check = function(value, name, key)`: a provider's own check, in place
--   of the type's (it may call `args.types.<type>` itself);
-- * `repeatable`: a list, and on the command line a flag given once per
--   element; `wire`: what the server calls it, `at` where it goes ("query",
--   "body", "path"; documentation, and Openlayer builds its body from it);
-- * `help`: one line; `flag`: the CLI flag where it is not `--` and the
--   name with `_` as `-` (false: none); `arg`: the flag's argument name;
--   `words`: a boolean's CLI words ({{"asc", true}, {"desc", false}});
--   `flags`: several flags that each set a value, in place of `flag`
--   ({ {"--per-user", value = "user", help = "..."} }).
-- @module userlist.args
local core = require "userlist.core"
local errors = require "userlist.errors"
local time = require "userlist.time"

local raise = errors.raise_invalid
local floor, concat, sort = math.floor, table.concat, table.sort

local M = {}

local function typename(v)
  if v == core.null then return "null" end
  return type(v)
end
M.typename = typename

--- A Lua array (keys exactly 1..#v): its length. `what` names what v must
-- be ("an array of integers"); `not_map` the message for a map (default:
-- what .. " (a list, not a map)").
function M.array(v, field, what, not_map)
  if type(v) ~= "table" then raise(field, "must be " .. what .. ", got " .. typename(v)) end
  local n = #v
  for k in pairs(v) do
    if type(k) ~= "number" or k < 1 or k > n or k ~= floor(k) then
      raise(field, "must be " .. (not_map or (what .. " (a list, not a map)")))
    end
  end
  return n
end

-- ------------------------------------------------------------ types
-- Each: function(v, field, key) -> the checked value; v is never nil.
local T = {}
M.types = T

--- A whole number within [min, max] (when declared).
function T.int(v, field, e)
  if type(v) ~= "number" or v ~= floor(v) then
    raise(field, "must be an integer, got " .. typename(v))
  end
  if e.min and (v < e.min or v > e.max) then
    raise(field, ("must be between %d and %d, got %s"):format(e.min, e.max, tostring(v)))
  end
  return v
end

--- Any number (declared for documentation and the client's option types).
function T.number(v, field)
  if type(v) ~= "number" then raise(field, "must be a number, got " .. typename(v)) end
  return v
end

--- A non-empty string, at most `max_len` bytes, matching `pattern` (else
-- `mismatch` .. ", got " .. v).
function T.string(v, field, e)
  if type(v) ~= "string" then raise(field, "must be a string, got " .. typename(v)) end
  if v == "" then raise(field, "must not be empty") end
  if e.max_len and #v > e.max_len then
    raise(field, ("must be at most %d characters, got %d"):format(e.max_len, #v))
  end
  if e.pattern and not v:match(e.pattern) then raise(field, e.mismatch .. ", got " .. v) end
  return v
end

function T.boolean(v, field)
  if type(v) ~= "boolean" then raise(field, "must be a boolean, got " .. typename(v)) end
  return v
end

--- One of `choices` (`message`, if given, says what is wanted instead).
function T.enum(v, field, e)
  for _, a in ipairs(e.choices) do
    if v == a then return v end
  end
  if e.message then raise(field, e.message) end
  raise(field, "must be one of " .. concat(e.choices, ", ") .. ", got " .. tostring(v))
end

--- An array of strings (a single string is taken as a one-element array):
-- `min`/`max` elements, each at most `max_len` bytes and one of `choices`;
-- `empty_ok`: empty strings allowed; `numbers`: numbers taken as strings.
function T.strings(v, field, e)
  if type(v) == "string" then v = { v } end
  local n = M.array(v, field, "an array of strings", "an array (a list), not a map")
  local out = {}
  for i = 1, n do
    local s = v[i]
    if type(s) == "number" and e.numbers then s = tostring(s) end
    if type(s) ~= "string" then
      raise(field, ("element %d must be a string, got %s"):format(i, typename(s)))
    end
    if s == "" and not e.empty_ok then raise(field, ("element %d is empty"):format(i)) end
    if e.max_len and #s > e.max_len then
      raise(field, ("element %d is longer than %d characters"):format(i, e.max_len))
    end
    if e.choices then T.enum(s, field, e) end
    out[i] = s
  end
  if e.min and #out < e.min then raise(field, ("needs at least %d element(s)"):format(e.min)) end
  if e.max and #out > e.max then
    raise(field, ("takes at most %d elements, got %d"):format(e.max, #out))
  end
  return out
end

--- A Lua time number or an ISO 8601 string (userlist.time.to_epoch): the
-- seconds since the epoch. `nonempty`: "" is refused as empty; `hint` is
-- added to the parser's message.
function T.time(v, field, e)
  if e.nonempty and v == "" then raise(field, "must not be empty") end
  local t, msg = time.to_epoch(v)
  if not t then raise(field, msg .. (e.hint or "")) end
  return t
end

--- One field to sort by: a name (ascending), {name = "asc"|"desc"}, or
-- false (no sort sent). `choices`: the field names.
function T.sort(s, field, e)
  if s == false then return false end
  if type(s) == "string" then s = { [s] = "asc" } end
  if type(s) ~= "table" then
    raise(field, "must be a field name, {field = 'asc'|'desc'} or false, got " .. type(s))
  end
  local key, n = nil, 0
  for k in pairs(s) do
    n = n + 1
    key = k
  end
  -- a JSON object's first key is all a server can be sure to read
  if n ~= 1 then raise(field, "takes exactly one field, got " .. n) end
  T.enum(key, field, e)
  T.enum(s[key], field .. "." .. key, { choices = { "asc", "desc" } })
  return { [key] = s[key] }
end

--- A list of `what` (`each(element, "field[i]")` checks and returns each
-- one), at most `max` of them (`noun`: what the message counts); an empty
-- list is nil.
function T.list(v, field, e)
  local n = M.array(v, field, e.what)
  if e.max and n > e.max then
    raise(field, ("takes at most %d %s, got %d"):format(e.max, e.noun or "elements", n))
  end
  if n == 0 then return nil end
  local out = {}
  for i = 1, n do out[i] = e.each(v[i], ("%s[%d]"):format(field, i)) end
  return out
end

-- A function (a callback: on_checkpoint).
T["function"] = function(v, field)
  if type(v) ~= "function" then raise(field, "must be a function, got " .. typename(v)) end
  return v
end

--- A table (a key with a `check` of its own says more).
function T.table(v, field)
  if type(v) ~= "table" then raise(field, "must be a table, got " .. typename(v)) end
  return v
end

-- What each type is in Lua (client options are checked by type there).
local LUA_TYPE = { int = "number", number = "number", string = "string", boolean = "boolean",
  enum = "string", strings = "table", time = "number", sort = "table", list = "table",
  table = "table", ["function"] = "function" }

-- ------------------------------------------------------------ schemas

--- Checks a declaration and indexes it: returns the list, with `by_name`.
function M.schema(list)
  local by_name = {}
  for i, e in ipairs(list) do
    assert(type(e.name) == "string", "userlist.args: key " .. i .. " has no name")
    assert(T[e.type], "userlist.args: key '" .. e.name .. "' has an unknown type " .. tostring(e.type))
    assert(not by_name[e.name], "userlist.args: key '" .. e.name .. "' is declared twice")
    by_name[e.name] = e
  end
  list.by_name = by_name
  return list
end

--- A schema of some of another's keys, in that order; `changes[name]`
-- overrides fields of a key ({user_ids = {max = 100}}).
function M.pick(schema, names, changes)
  local list = {}
  for i, name in ipairs(names) do
    local e = assert(schema.by_name[name], name)
    local c = changes and changes[name]
    if c then
      local copy = {}
      for k, v in pairs(e) do copy[k] = v end
      for k, v in pairs(c) do copy[k] = v end
      e = copy
    end
    list[i] = e
  end
  return M.schema(list)
end

--- The Lua type of each key ({region = "string"}): a client's option types.
function M.lua_types(schema)
  local t = {}
  for _, e in ipairs(schema) do t[e.name] = LUA_TYPE[e.type] end
  return t
end

--- Refuses keys that `allowed` (a schema or a set of names) does not know:
-- a typo must not be dropped silently. `what`: "query" (default) or what
-- the table is ("user").
function M.known(q, allowed, what)
  what = what or "query"
  if type(q) ~= "table" then raise(what, "must be a table, got " .. typename(q)) end
  local set = allowed.by_name or allowed
  for k in pairs(q) do
    if type(k) ~= "string" or not set[k] then
      local names = {}
      for a in pairs(set) do names[#names + 1] = a end
      sort(names)
      raise(tostring(k), "is not a known " .. what .. " key (known: " .. concat(names, ", ") .. ")")
    end
  end
end

--- Checks query `q` against `schema`: unknown keys first, then each key in
-- the order declared. `options`: the client's options, which keys
-- declared `option = true` fall back on.
-- @return the checked values by name (defaults filled in)
function M.check(q, schema, options)
  M.known(q, schema)
  local out = {}
  for _, e in ipairs(schema) do
    local name = e.name
    local v = q[name]
    if v == nil and e.option and options then v = options[name] end
    if v == nil then
      if e.required then raise(name, e.required) end
      out[name] = e.default
    else
      out[name] = (e.check or T[e.type])(v, name, e)
    end
  end
  return out
end

-- ------------------------------------------------------------ shared keys

--- Query keys every listing takes (the pager reads them); providers list
-- them in their schemas.
M.common = {
  max_pages = { name = "max_pages", type = "int", min = 1, max = 2 ^ 31 - 1,
    help = "stop after this many pages" },
  dedupe = { name = "dedupe", type = "boolean",
    help = "drop a user seen before (offset paging can repeat rows)" },
  -- the command has --resume FILE instead (userlist.cli)
  resume = { name = "resume", type = "string", max_len = core.token_max, flag = false,
    help = "continue a listing from a resume token (page.resume, err.resume, on_checkpoint)" },
  on_checkpoint = { name = "on_checkpoint", type = "function", flag = false,
    help = "function(token, info) called after each page consumed, with the token to resume from" },
}

--- A key's command-line flags: a list of {flag, help =, arg =, value =}
-- (`value`: the flag takes no argument and sets this value).
function M.flags(e)
  if e.flags then return e.flags end
  if e.flag == false then return {} end
  local f = { e.flag or ("--" .. e.name:gsub("_", "-")), help = e.help, arg = e.arg }
  if e.type == "boolean" and not e.words then f.value = true end
  return { f }
end

return M
