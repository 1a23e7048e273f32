-- Spec support for the conformance specs through Prism: spec/20-openapi_spec.lua
-- (the generic checks) and each provider's spec/providers/<name>/openapi_spec.lua.
--
-- Every request the client sends validates against the provider's OpenAPI
-- document: the client talks to a Prism validating proxy per document
-- (spec/prism, started by `spec/prism/run exec`), which forwards a valid
-- request to the emulator and answers an invalid one itself with a
-- problem+json of type https://stoplight.io/prism/errors#... (not
-- forwarded). So a call succeeds there only when each of its requests,
-- next-page requests included, matched the document; `run exec` also fails
-- the run if Prism logged a rejection no test declared (the header
-- X-Userlist-Expect-Rejection, spec/prism/README.md).
--
-- The specs use every query key of one listing or method, then read the
-- emulator's request log (forwarded) to prove the parameters really went out
-- (a parameter the client silently dropped would validate vacuously).
-- Malformed bodies, faults and retries are tested against the emulator
-- directly, never through Prism.
local core = require "userlist.core"
local emu = require "support.emu"

local M = {}

local PRISM_ERRORS = "https://stoplight.io/prism/errors#"
M.PRISM_ERRORS = PRISM_ERRORS

-- One proxy per document spec/prism/run finds, named as it names them:
-- spec/providers/<name>/openapi[-<variant>].json|yaml -> NAME[_VARIANT]
-- (HELICONE, OPENLAYER, ARTHUR, USERTOUR_V1, USERTOUR_V2).
local NAMES = {}
do
  local p = assert(io.popen("ls -d spec/providers/*/openapi*.json spec/providers/*/openapi*.yaml"
    .. " 2>/dev/null"))
  for doc in p:lines() do
    local folder, variant = doc:match("^spec/providers/([^/]+)/openapi%-?([^/.]*)%.%a+$")
    if folder then NAMES[#NAMES + 1] = (folder .. (variant ~= "" and "_" .. variant or "")):upper() end
  end
  p:close()
  assert(#NAMES > 0, "no spec/providers/*/openapi*.json|yaml")
end
M.NAMES = NAMES

local prism, missing = {}, {}
for _, name in ipairs(NAMES) do
  local v = os.getenv("USERLIST_PRISM_" .. name)
  if v == nil or v == "" then missing[#missing + 1] = "USERLIST_PRISM_" .. name end
  prism[name] = v
end
-- nil when every proxy's URL is set, else the message that fails the tests
local MISSING = #missing > 0 and (table.concat(missing, ", ") .. " unset: this spec needs the Prism"
  .. " proxies; run it as spec/emulator/run exec -- spec/prism/run exec -- spec/run.sh"
  .. " (spec/prism/install once before)") or nil
M.MISSING = MISSING

-- The Prism URL standing for a provider's base URL; fails the test (never
-- skips it) when the proxies are not running.
function M.through(name)
  if MISSING then error(MISSING, 2) end
  return prism[name] or error("no Prism proxy " .. name .. ": no spec/providers document is named so", 2)
end

-- ------------------------------------------------------------ explaining
local function problem_of(err)
  local b = type(err) == "table" and err.body
  if type(b) == "table" and type(b.type) == "string" and b.type:sub(1, #PRISM_ERRORS) == PRISM_ERRORS then
    return b
  end
end

-- "location: message (code)" for each violation of a Prism problem.
local function violations(b)
  local out = {}
  for _, v in ipairs(type(b.validation) == "table" and b.validation or {}) do
    local loc = type(v.location) == "table" and table.concat(v.location, ".") or tostring(v.location)
    out[#out + 1] = ("%s: %s (%s)"):format(loc, tostring(v.message), tostring(v.code))
  end
  return out
end

-- One line saying why a call failed; Prism's violations in full.
local function explain(err)
  local b = problem_of(err)
  if not b then return tostring(err) end
  local list = violations(b)
  return ("Prism rejected %s %s against the provider's OpenAPI document: %s %s (content-type %s)%s"):format(
    tostring(err.method), tostring(err.url), tostring(err.status), b.type:sub(#PRISM_ERRORS + 1),
    tostring(err.headers and err.headers["content-type"]),
    #list > 0 and (": " .. table.concat(list, "; ")) or (": " .. tostring(b.detail or b.title)))
end

local function pack(...) return { n = select("#", ...), ... } end

-- Runs fn(...) and returns its results; a raised error or a nil, err return
-- fails the test with Prism's verdict.
local function must(fn, ...)
  local r = pack(pcall(fn, ...))
  if not r[1] then error(explain(r[2]), 2) end
  if r[2] == nil and r.n >= 3 then error(explain(r[3]), 2) end
  return (table.unpack or unpack)(r, 2, r.n)
end

-- Drains a users() iterator (raising with Prism's verdict); returns the users.
local function all(client, q)
  return must(function()
    local list = {}
    for u in client:users(q) do list[#list + 1] = u end
    return list
  end)
end

local function page(client, q)
  return must(function() return client:page(q) end)
end

-- ------------------------------------------------------------ what arrived
local function unescape(s)
  return (s:gsub("%+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- The emulator's log of the requests Prism forwarded, each with its query
-- decoded: name -> list of values.
local function forwarded()
  local list = emu.requests()
  for _, r in ipairs(list) do
    local q = {}
    for pair in (r.args or ""):gmatch("[^&]+") do
      local k, v = pair:match("^([^=]*)=?(.*)$")
      k, v = unescape(k), unescape(v)
      q[k] = q[k] or {}
      table.insert(q[k], v)
    end
    r.q = q
  end
  return list
end

local function keys(q)
  local out = {}
  for k in pairs(q) do out[#out + 1] = k end
  table.sort(out)
  return out
end

-- Asserts that request r carried each of the query names.
local function has_params(r, names)
  for _, n in ipairs(names) do
    assert(r.q[n], ("%s %s?%s: no '%s' parameter (sent: %s)"):format(r.method, r.uri, r.args or "", n,
      table.concat(keys(r.q), ", ")))
  end
end

local function json_body(r)
  return core.json_decode(r.body)
end

local function ids(n, from)
  local out = {}
  for i = 1, n do out[i] = ("user-%07d"):format((from or 0) + i) end
  return out
end

-- ------------------------------------------------------------ the module
M.problem_of, M.violations, M.explain = problem_of, violations, explain
M.must, M.all, M.page = must, all, page
M.unescape, M.forwarded, M.keys, M.has_params = unescape, forwarded, keys, has_params
M.json_body, M.ids = json_body, ids

return M
