--- Resume tokens: where a listing stands, as one printable string that a
-- later listing (in this process or another) continues from.
--
-- A token holds where the next page starts (the listing's own position:
-- a page number, an offset or a next link below the base URL), how many
-- pages and rows were already given, whether the listing is complete, and
-- fingerprints of the provider, the base URL and the query; never the key.
-- It is sealed by the core (core.token_seal: a check value against
-- truncation and editing) and is opaque to applications:
-- `userlist.token_info` reads its counts.
--
-- What a listing is, for a token: the provider, the base URL and the
-- checked query (defaults filled in, times as seconds), but not the keys
-- that only say how to walk it: `resume` itself, `on_checkpoint`,
-- `max_pages` (a bound on this run: a listing can go on in batches) and
-- `dedupe` (which the seen set, not carried, would make a lie).
-- @module userlist.resume
local core = require "userlist.core"
local args = require "userlist.args"
local errors = require "userlist.errors"

local concat, sort, format = table.concat, table.sort, string.format

local M = {}

local VERSION = "1"

--- Query keys that are not part of what a listing is.
M.WALK_KEYS = { resume = true, on_checkpoint = true, max_pages = true, dedupe = true }

-- A value as canonical text: table keys sorted, numbers exact.
local function canon(v, out)
  local t = type(v)
  if v == core.null then
    out[#out + 1] = "null"
  elseif t == "table" then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    sort(keys, function(a, b)
      local ta, tb = type(a), type(b)
      if ta == tb and (ta == "number" or ta == "string") then return a < b end
      return ta .. tostring(a) < tb .. tostring(b)
    end)
    out[#out + 1] = "{"
    for _, k in ipairs(keys) do
      canon(k, out)
      out[#out + 1] = "="
      canon(v[k], out)
      out[#out + 1] = ","
    end
    out[#out + 1] = "}"
  elseif t == "number" then
    out[#out + 1] = v == math.floor(v) and format("%.0f", v) or format("%.17g", v)
  elseif t == "string" then
    out[#out + 1] = format("%q", v)
  else
    out[#out + 1] = tostring(v)
  end
  return out
end

--- The fingerprints of a client's listing for query `q` (already checked
-- by the listing's prepare): the base URL's and the query's digests.
function M.fingerprint(client, schema, q)
  local v = args.check(q, schema, client.options)
  for k in pairs(M.WALK_KEYS) do v[k] = nil end
  return core.digest(client.base_url), core.digest(concat(canon(v, {})))
end

local function bad(message)
  error(errors.invalid("resume", message), 0)
end

-- A token's fields, or nil and why (a phrase after "'resume' ").
local function open(token)
  local payload, why = core.token_open(token)
  if not payload then return nil, why end
  local f = {}
  for line in (payload .. "\n"):gmatch("([^\n]*)\n") do f[#f + 1] = line end
  if f[1] ~= VERSION then
    return nil, "was made by another version of userlist (token format " .. tostring(f[1]) .. ")"
  end
  local pages, given = tonumber(f[5]), tonumber(f[6])
  if #f ~= 8 or not pages or not given or (f[7] ~= "at" and f[7] ~= "end") then
    return nil, "is damaged (its fields do not add up)"
  end
  return { provider = f[2], base = f[3], query = f[4], pages = pages, users = given,
            done = f[7] == "end", position = f[8] }
end

--- What a token says: {provider, pages, users, done}, or nil and a message.
-- `pages` and `users`: pages and rows given before the token's position;
-- `done`: the listing was complete (resuming gives nothing).
function M.info(token)
  if type(token) ~= "string" then return nil, "a resume token is a string, got " .. type(token) end
  local t, why = open(token)
  if not t then return nil, "the resume token " .. why end
  return { provider = t.provider, pages = t.pages, users = t.users, done = t.done }
end

--- A walk's token (pager): `position` the listing's saved position (nil:
-- the listing is complete).
function M.seal(w, position)
  return core.token_seal(concat({ VERSION, w.client.provider, w.fp_base, w.fp_query,
    format("%.0f", w.base_pages + w.pages), format("%.0f", w.base_given + w.given),
    position and "at" or "end", position or "" }, "\n"))
end

--- Opens `token` for walk `w` (its client and fingerprints set): the
-- token's fields, position as the listing's saved string. Raises an
-- `invalid` error naming `resume` for a token that is damaged or belongs
-- to another listing.
function M.open(w, token)
  local t, why = open(token)
  if not t then bad(why) end
  local provider = w.client.provider
  if t.provider ~= provider then
    bad(("belongs to a listing of %s, not %s"):format(t.provider, provider))
  end
  if t.base ~= w.fp_base then bad("belongs to a listing of another base URL") end
  if t.query ~= w.fp_query then
    bad("belongs to another query (a token continues the query it came from: the same keys and "
      .. "values, apart from max_pages and dedupe)")
  end
  return t
end

--- Raises the error of a position the listing cannot take (listing.load).
M.bad = bad

--- A whole number from `min` to `max` saved as text (a listing's load of
-- a page number), or raises: "'resume' holds no <what>".
function M.number(s, min, max, what)
  local n = s:match("^%d+$") and tonumber(s)
  if not n or n < min or n > max then bad("holds no " .. what) end
  return n
end

return M
