--- One shape for users: JSON null becomes nil, integer fields become Lua
-- integers (5.3+), numeric strings become numbers, ids are strings, and
-- times become Lua time numbers (UTC seconds).
-- @module userlist.normalize
local core = require "userlist.core"
local errors = require "userlist.errors"

local M = {}

-- One value converted as every row's are (the core owns the rules):
--- A number from a number or a numeric string ("15", from 64-bit totals), else nil.
M.num = core.to_number
--- An integer (a Lua integer on 5.3+) from a number or numeric string, else nil.
M.int = core.to_int
--- An id as a string: numbers (which lose precision past 2^53) are printed whole.
M.id = core.to_id

--- A row shape for `rows`, from a provider's description; the work is done
-- in C (core.shape), a handful of table operations per field, because a
-- Lua function per row cost more than decoding the page. Fields, applied in
-- this order to every row once JSON nulls are out (recursively; `deep_ints`
-- also makes whole floats integers, 5.3+):
--   ids = {f...}          u[f] = id(u[f]) (nil when not a string or number)
--   id_lists = {f...}     every element an id (others dropped)
--   ints, nums = {f...}   int(u[f]) / num(u[f]); what does not convert stays
--   copy = {{dest, src...}...}  dest = the first non-nil source
--   sums = {{dest, a, b}...}    dest = a + b when both are numbers
--   times = {dest = src...}     dest = the time of the ISO 8601 string src;
--                               src may be a list (the first present counts)
--                               and "a.b" (field b of table a)
--   picks = {{dest, f, sub}...} dest = u[f][sub] when it is a string
--   nested = {"a.*.b"...}       an id at that path ("*": every element)
-- Then each row is checked: `id` a string, `numbers` numbers (by default
-- the ints and the nums), and a `times` source present only if it was read.
-- `list` names the array in errors.
function M.shape(def)
  local spec = {}
  for k, v in pairs(def) do spec[k] = v end
  if not def.numbers then
    local n = {}
    for _, k in ipairs(def.ints or {}) do n[#n + 1] = k end
    for _, k in ipairs(def.nums or {}) do n[#n + 1] = k end
    spec.numbers = n
    spec.numbers_converted = true -- the core then checks only what failed to convert
  end
  if def.times then
    -- {dest, src...}: the first source present; "a.b" is field b of table a
    local t = {}
    for dest, srcs in pairs(def.times) do
      local e = { dest }
      for _, src in ipairs(type(srcs) == "table" and srcs or { srcs }) do
        local a, b = src:match("^([^.]+)%.(.+)$")
        e[#e + 1] = a and { a, b, name = src } or src
      end
      t[#t + 1] = e
    end
    table.sort(t, function(a, b) return a[1] < b[1] end)
    spec.times = t
  end
  if def.nested then
    local n = {}
    for i, path in ipairs(def.nested) do
      n[i] = {}
      for seg in path:gmatch("[^.]+") do n[i][#n[i] + 1] = seg end
    end
    spec.nested = n
  end
  return spec
end

--- Shapes and checks the rows of a page in place (see `shape`), so that a
-- row the client cannot read is one clear decode error, never a user
-- silently missing its id. `naive_offset`: seconds east of UTC that times
-- without a zone are in; `shift`: seconds added to every time.
-- A figure or time that cannot be read (an OpenAPI mock's "string") ends
-- nothing: its common field is left out, the provider's field keeps the
-- value as sent, and client `c` gets a `warning` event, once per field for
-- each `warned` set (one per listing). With the client option `strict`, or
-- without a client, it is a decode error. `shaped`, if given: what the core
-- found when it shaped these rows as it decoded them (`core.decode_body` or
-- a transfer given `rows`, with `lenient` as it was asked), reported instead
-- of shaping them again.
function M.rows(rows, spec, naive_offset, shift, c, warned, shaped)
  local lenient = c ~= nil and not c.transport.strict
  local i, bad, unread
  if shaped and shaped.rows == rows and shaped.lenient == lenient then
    i, bad, unread = shaped.bad, shaped.message, shaped.unread
  else
    i, bad, unread = core.shape(rows, spec, naive_offset, shift, lenient)
  end
  if i then
    error(errors.new{ kind = "decode", message = ("%s[%d] %s"):format(spec.list, i, bad) }, 0)
  end
  if unread then
    local fields = {}
    for f in pairs(unread) do
      if not warned[f] then fields[#fields + 1] = f end
    end
    table.sort(fields)
    for _, f in ipairs(fields) do
      warned[f] = true
      c.transport:emit{ type = "warning", kind = "decode", field = f,
        message = ("%s%s: the common field is left out and the row keeps the value as sent "
          .. "(this listing warns once per field; strict = true makes it an error)")
          :format(spec.list, unread[f]) }
    end
  end
  return rows
end

--- Shapes one object (a single-user endpoint) without the row checks.
function M.one(u, spec, naive_offset, shift)
  if type(u) == "table" then core.shape({ u }, spec, naive_offset, shift) end
  return u
end

return M
