-- The fault matrix: every provider (Helicone, Openlayer, Arthur, Usertour v1
-- and v2) against the same table of faults, injected by the emulator on the
-- provider's listing path (spec/emulator/README.md, "Faults"). Each case
-- states its outcome and checks it:
--   * recovered: the listing ends normally and is exactly the fault-free
--     listing (count, first and last id, no duplicates), with the number of
--     requests and the waits the retry rules call for;
--   * one error: iteration raises one structured error of the right kind
--     (status, provider, a one-line tostring), after yielding a correct
--     prefix of the listing, never a partial list as if it were complete.
-- No case really waits: every client records its sleeps. At the end, every
-- string an error or an event produced is searched for the API keys.
--
-- Timeouts use small client limits: `timeout` 0.4 s against a delayed or
-- dripped answer, `low_speed_time` 1 s (libcurl's unit is whole seconds)
-- against a drip, and `connect_timeout` 0.2 s against a local listener whose
-- accept queue is full, so that the kernel drops the SYN (a blackhole
-- address is not reliable here: a sandbox may answer it). That listener is
-- LuaSocket's (Debian's lua-socket, installed by make test). A refused
-- connection uses a port that was just bound and closed.
local userlist = require "userlist"
local core = require "userlist.core"
local emu = require "support.emu"

local data = dofile("spec/emulator/lua/emu/data.lua")
local socket = require "socket"

local N = 250 -- users in the emulator (X-Emu-Users)
local PIPE = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
local PASS = { delay_ms = 0 } -- a queued fault that changes nothing: lets page 1 through
local TIMEOUT = 0.4           -- the client's `timeout` in the timeout cases

-- ------------------------------------------------------------ produced strings

-- Every string an error or an event produced, for the key search at the end.
local produced = {}

local function keep(v, into)
  if type(v) == "string" or type(v) == "number" then
    produced[#produced + 1] = tostring(v)
    if into then into[#into + 1] = tostring(v) end
  end
end

-- Keeps every string of an error (its fields, decoded body, headers, cause).
-- @return the list of them
local function keep_error(err, into, depth)
  into, depth = into or {}, depth or 0
  keep(tostring(err), into)
  if type(err) ~= "table" or depth > 3 then return into end
  for k, v in pairs(err) do
    keep(k, into)
    if type(v) == "table" and k == "cause" then
      keep_error(v, into, depth + 1)
    elseif type(v) == "table" then
      local ok, text = pcall(core.json_encode, v)
      keep(ok and text or tostring(v), into)
      for hk, hv in pairs(v) do keep(hk, into); keep(hv, into) end
    else
      keep(v, into)
    end
  end
  return into
end

-- ------------------------------------------------------------ JSON builders

-- A JSON object from an ordered list of {name, raw JSON value} (so that a
-- name may repeat).
local function obj(fields)
  local parts = {}
  for i, f in ipairs(fields) do parts[i] = '"' .. f[1] .. '":' .. f[2] end
  return "{" .. table.concat(parts, ",") .. "}"
end

local function str(s) return '"' .. s .. '"' end

-- ------------------------------------------------------------ providers

-- One provider (or API version) of the matrix:
--   new, key, prefix (added to the base URL), path (the listing path the
--   faults are queued on), options (extra client options), query() (the
--   listing: three pages), total, unit, key_of(user) (identity of a yielded
--   row), first/last (keys of the first and last rows), page(rows) (a canned
--   last page around raw JSON rows), row(id, extra) (a canned row: the id
--   field, then `extra` raw fields), no_list (a 200 body without the list),
--   r429 (the provider's 429 body, sent without Retry-After), num (a numeric
--   field and the common field made from it; nil: the provider has none).
local function simple_key(u) return u.id end

local PROVIDERS = {
  {
    label = "helicone", provider = "helicone", new = userlist.helicone, key = emu.keys.helicone,
    prefix = "", path = "/v1/user/metrics/query",
    query = function() return { limit = 100 } end,
    total = N, unit = "users", key_of = simple_key, first = data.id(1), last = data.id(N),
    id_field = "user_id",
    page = function(rows)
      return '{"data":{"users":[' .. rows .. '],"count":' .. N .. ',"hasUsers":true},"error":null}'
    end,
    no_list = '{"data":{"count":250,"hasUsers":true},"error":null}',
    r429 = '{"error":"Too many requests, please try again later."}',
    num = { field = "total_requests", common = "requests" }, time = "last_active",
    time_common = "last_seen",
  },
  {
    label = "openlayer", provider = "openlayer", new = userlist.openlayer, key = emu.keys.openlayer,
    prefix = "/v1", path = "/v1/inference-pipelines/" .. PIPE .. "/users",
    query = function() return { pipeline_id = PIPE, per_page = 100 } end,
    total = N, unit = "users", key_of = simple_key, first = data.id(1), last = data.id(N),
    id_field = "id",
    page = function(rows) return '{"items":[' .. rows .. "]}" end,
    no_list = '{"success":true}',
    r429 = '{"code":429,"error":"Too Many Requests"}',
    num = { field = "records", common = "requests" }, time = "dateOfFirstRecord",
    time_common = "first_seen",
  },
  {
    -- rows are (user, task) pairs: 250 users in tasks 1..3 make 300 rows
    label = "arthur", provider = "arthur", new = userlist.arthur, key = emu.keys.arthur,
    prefix = "", path = "/api/v1/traces/users",
    query = function()
      return { task_ids = { "task-1", "task-2", "task-3" }, page_size = 100, sort = "asc" }
    end,
    total = 300, unit = "rows",
    key_of = function(u) return tostring(u.user_id) .. "/" .. tostring(u.task_id) end,
    first = data.id(1) .. "/task-2", last = data.id(N) .. "/task-3",
    id_field = "user_id",
    page = function(rows)
      local n = select(2, rows:gsub('"task_id"', ""))
      return '{"count":' .. n .. ',"display_currency":"USD","users":[' .. rows .. "]}"
    end,
    no_list = '{"count":300,"display_currency":"USD"}',
    r429 = '{"detail":"Too Many Requests"}',
    num = { field = "trace_count", common = "requests" }, time = "earliest_start_time",
    time_common = "first_seen",
    extra = { { "task_id", '"task-1"' } },
  },
  {
    label = "usertour v1", provider = "usertour", new = userlist.usertour, key = emu.keys.usertour,
    prefix = "", path = "/v1/users",
    query = function() return { limit = 100 } end,
    total = N, unit = "users", key_of = simple_key, first = data.id(1), last = data.id(N),
    id_field = "id",
    page = function(rows) return '{"results":[' .. rows .. '],"next":null,"previous":null}' end,
    no_list = '{"next":null,"previous":null}',
    r429 = '{"error":{"code":"E1013","message":"Too many requests","doc_url":"https://docs.usertour.io"}}',
    extra = { { "object", '"user"' } }, time = "createdAt", time_common = "first_seen",
  },
}
-- v2: the same envelope and user shape under another path and key
do
  local v2 = {}
  for k, v in pairs(PROVIDERS[#PROVIDERS]) do v2[k] = v end
  v2.label, v2.key = "usertour v2", emu.keys.usertour_v2
  v2.path = "/v2/projects/proj-1/environments/env-1/users"
  v2.options = { project_id = "proj-1", environment_id = "env-1" }
  PROVIDERS[#PROVIDERS + 1] = v2
end

-- A canned row: the id field (raw JSON, or nil to leave it out), then the
-- provider's extra fields, then `more`.
local function row(P, id, more)
  local fields = {}
  if id ~= nil then fields[1] = { P.id_field, id } end
  for _, f in ipairs(P.extra or {}) do fields[#fields + 1] = f end
  for _, f in ipairs(more or {}) do fields[#fields + 1] = f end
  return obj(fields)
end

-- ------------------------------------------------------------ running a listing

local function new_client(P, rec, extra)
  local o = {
    api_key = P.key,
    base_url = ((extra and extra.base_url) or emu.http) .. P.prefix,
    headers = { ["X-Emu-Users"] = tostring(N) },
    sleep = function(s) rec.waits[#rec.waits + 1] = s end,
    concurrency = 1, -- faults are queued per request, in order (spec/14 fetches ahead)
    on_event = function(ev)
      rec.events[#rec.events + 1] = ev
      for k, v in pairs(ev) do keep(k, rec.strings); keep(v, rec.strings) end
    end,
  }
  for k, v in pairs(P.options or {}) do o[k] = v end
  for k, v in pairs(extra or {}) do
    if k ~= "base_url" then o[k] = v end
  end
  return P.new(o)
end

-- Lists everything. @return the rows yielded (users), their keys, the
-- raised value (nil when the listing ended normally), the seconds it took
local function walk(P, c)
  local users, keys = {}, {}
  local t0 = core.now()
  local ok, err = pcall(function()
    for u in c:users(P.query()) do
      users[#users + 1] = u
      keys[#keys + 1] = P.key_of(u)
    end
  end)
  return users, keys, (not ok) and err or nil, core.now() - t0
end

-- The fault-free listing of each provider, computed once.
local reference = {}
local function reference_of(P)
  if not reference[P.label] then
    emu.reset()
    local _, keys, err = walk(P, new_client(P, { waits = {}, events = {}, strings = {} }))
    assert(err == nil, err and tostring(err))
    reference[P.label] = keys
  end
  return reference[P.label]
end

local function count_events(rec, kind)
  local n = 0
  for _, ev in ipairs(rec.events) do
    if ev.type == kind then n = n + 1 end
  end
  return n
end

-- ------------------------------------------------------------ local listeners

-- A listener that never accepts, with its accept queue filled: connecting to
-- it times out (the kernel drops the SYN).
local blackhole
local function blackhole_url()
  if not blackhole then
    local srv = assert(socket.tcp())
    assert(srv:bind("127.0.0.1", 0))
    assert(srv:listen(0))
    local _, port = srv:getsockname()
    local fill = {}
    for i = 1, 4 do
      local c = assert(socket.tcp())
      c:settimeout(0)
      c:connect("127.0.0.1", port) -- completes, or stays pending: either fills the queue
      fill[i] = c
    end
    blackhole = { srv = srv, fill = fill, url = "http://127.0.0.1:" .. port }
  end
  return blackhole.url
end

-- A loopback port with nothing listening: one just bound and closed.
local function closed_url()
  local s = assert(socket.tcp())
  assert(s:bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return "http://127.0.0.1:" .. port
end

-- ------------------------------------------------------------ the cases

local function rep(spec, n)
  local out = {}
  for i = 1, n do out[i] = spec end
  return out
end

-- Each case: name; expect "recovered" | "error"; faults(P) (queued on the
-- listing path for page 2; page 1 passes) or page1(P) (queued for page 1);
-- options(P) (client options); only/skip (sets of provider labels).
-- recovered: retries (failed tries before recovery), waits ({exact} or
--   "backoff"), check(users, P) for the canned-page cases (then `rows` is
--   the number of rows expected instead of the whole listing).
-- error: kind, status, tries (requests on the failing page), prefix
--   ("page1" or 0: the rows yielded first), retryable, waits, check(err, P).
-- All Usertour cases apply to v1 and v2 unless `only`/`skip` say otherwise.
local HELICONE = { helicone = true }
local NUMERIC = { helicone = true, openlayer = true, arthur = true } -- providers with numeric fields
local USERTOUR = { ["usertour v1"] = true, ["usertour v2"] = true }

local CASES = {}
local function case(t) CASES[#CASES + 1] = t end

-- 429 --------------------------------------------------------------------
case{ name = "429 with Retry-After: 2 once on page 2", expect = "recovered",
  faults = function() return { { status = 429, headers = { ["Retry-After"] = "2" } } } end,
  retries = 1, waits = { 2 } }
case{ name = "429 without Retry-After once on page 2", expect = "recovered",
  faults = function(P) return { { status = 429, body = P.r429 } } end,
  retries = 1, waits = "backoff" }
case{ name = "429 with Retry-After: 2 on every try", expect = "error", kind = "http", status = 429,
  faults = function() return rep({ status = 429, headers = { ["Retry-After"] = "2" } }, 3) end,
  tries = 3, prefix = "page1", retryable = true, waits = { 2, 2 },
  check = function(err) assert.equal(2, err.retry_after) end }
case{ name = "429 without Retry-After on every try", expect = "error", kind = "http", status = 429,
  faults = function(P) return rep({ status = 429, body = P.r429 }, 3) end,
  tries = 3, prefix = "page1", retryable = true, waits = "backoff",
  check = function(err) assert.is_nil(err.retry_after) end }

-- 5xx ----------------------------------------------------------------------
for _, status in ipairs{ 500, 502, 503, 504 } do
  case{ name = status .. " twice on page 2", expect = "recovered",
    faults = function() return rep({ status = status }, 2) end, retries = 2, waits = "backoff" }
  case{ name = status .. " on every try", expect = "error", kind = "http", status = status,
    faults = function() return rep({ status = status }, 3) end,
    tries = 3, prefix = "page1", retryable = true, waits = "backoff" }
end

-- timeouts -------------------------------------------------------------------
case{ name = "an answer slower than the total timeout once on page 2", expect = "recovered",
  options = function() return { timeout = TIMEOUT } end,
  faults = function() return { { delay_ms = 1500 } } end, retries = 1, waits = "backoff" }
case{ name = "an answer slower than the total timeout on every try", expect = "error",
  kind = "timeout", options = function() return { timeout = TIMEOUT } end,
  faults = function() return rep({ delay_ms = 1500 }, 3) end,
  tries = 3, prefix = "page1", retryable = true, waits = "backoff" }
case{ name = "a slow drip below low_speed_limit for low_speed_time once on page 2",
  expect = "recovered",
  options = function() return { low_speed_limit = 1000, low_speed_time = 1 } end,
  faults = function() return { { drip_ms = 100, drip_bytes = 10 } } end,
  retries = 1, waits = "backoff" }
case{ name = "a slow drip past the total timeout on every try", expect = "error", kind = "timeout",
  options = function() return { timeout = TIMEOUT } end,
  faults = function() return rep({ drip_ms = 50, drip_bytes = 64 }, 3) end,
  tries = 3, prefix = "page1", retryable = true, waits = "backoff" }
case{ name = "a connect timeout (a listener whose accept queue is full)", expect = "error",
  kind = "timeout",
  options = function() return { base_url = blackhole_url(), connect_timeout = 0.2 } end,
  tries = 3, prefix = 0, offline = true, retryable = true, waits = "backoff",
  check = function(err) assert.matches("connect", err.message:lower()) end }
case{ name = "a refused connection (a closed port)", expect = "error", kind = "network",
  options = function() return { base_url = closed_url() } end,
  tries = 3, prefix = 0, offline = true, retryable = true, waits = "backoff" }

-- broken transfers -------------------------------------------------------------
-- A reused connection that closes before answering is re-sent once by
-- libcurl itself on a fresh connection: the server sees the request twice,
-- the client no failure. A fresh connection that closes is a network error.
case{ name = "a connection reset before the answer once on page 2 (libcurl re-sends it)",
  expect = "recovered",
  faults = function() return { { reset = true } } end, retries = 0, resent = 1 }
case{ name = "a connection reset before the answer twice on page 2", expect = "recovered",
  faults = function() return rep({ reset = true }, 2) end, retries = 1, resent = 1, waits = "backoff" }
case{ name = "a connection reset before the answer on every try", expect = "error", kind = "network",
  faults = function() return rep({ reset = true }, 4) end,
  tries = 3, resent = 1, prefix = "page1", retryable = true, waits = "backoff" }
case{ name = "a connection reset mid-body once on page 2", expect = "recovered",
  faults = function() return { { reset_mid_body = true } } end, retries = 1, waits = "backoff" }
case{ name = "a truncated body (short of Content-Length) once on page 2", expect = "recovered",
  faults = function() return { { truncate = true } } end, retries = 1, waits = "backoff" }
case{ name = "a connection reset mid-body on every try", expect = "error", kind = "network",
  faults = function() return rep({ reset_mid_body = true }, 3) end,
  tries = 3, prefix = "page1", retryable = true, waits = "backoff" }
case{ name = "a truncated body on every try", expect = "error", kind = "network",
  faults = function() return rep({ truncate = true }, 3) end,
  tries = 3, prefix = "page1", retryable = true, waits = "backoff" }

-- bodies that are not the provider's JSON ------------------------------------------
case{ name = "invalid JSON in a 200 on page 2", expect = "error", kind = "decode",
  faults = function() return { { invalid_json = true } } end,
  tries = 1, prefix = "page1", retryable = false,
  check = function(err)
    assert.is_number(err.offset)
    assert.is_string(err.excerpt)
    assert.matches("invalid JSON", err.message)
  end }
case{ name = "an HTML error page (502) once on page 2", expect = "recovered",
  faults = function() return { { html = true } } end, retries = 1, waits = "backoff" }
case{ name = "an HTML error page (502) on every try", expect = "error", kind = "http", status = 502,
  faults = function() return rep({ html = true }, 3) end,
  tries = 3, prefix = "page1", retryable = true, waits = "backoff",
  check = function(err) assert.matches("502 Bad Gateway", err.raw or err.message, 1, true) end }
case{ name = "an HTML page with status 200 on page 2", expect = "error", kind = "decode",
  faults = function() return { { html = true, status = 200 } } end,
  tries = 1, prefix = "page1", retryable = false }
case{ name = "an empty 200 body on page 2", expect = "error", kind = "decode",
  faults = function() return { { empty = true } } end,
  tries = 1, prefix = "page1", retryable = false,
  check = function(err) assert.matches("empty", err.message) end }
case{ name = "a JSON page labelled text/html on page 2", expect = "recovered",
  faults = function() return { { content_type = "text/html" } } end, retries = 0 }
case{ name = "a 1 MiB body past max_size (256 KiB) on page 2", expect = "error", kind = "too_large",
  options = function() return { max_size = 256 * 1024 } end,
  faults = function() return { { oversize_bytes = 1024 * 1024 } } end,
  tries = 1, prefix = "page1", retryable = false }
case{ name = "a body nested 100000 deep (past the decoder's depth) on page 2", expect = "error",
  kind = "decode",
  faults = function() return { { deep = 100000 } } end,
  tries = 1, prefix = "page1", retryable = false }
case{ name = "a 200 body without the list on page 2", expect = "error", kind = "decode",
  faults = function(P) return { { body = P.no_list } } end,
  tries = 1, prefix = "page1", retryable = false }

-- Helicone: database errors in a 200 body ----------------------------------------------
case{ name = "a database error in a 200 body once on page 2", expect = "recovered", only = HELICONE,
  faults = function() return { { helicone_error = true } } end, retries = 1, waits = "backoff" }
case{ name = "a database error in a 200 body on every try", expect = "error", kind = "api",
  status = 200, only = HELICONE,
  faults = function() return rep({ helicone_error = true }, 3) end,
  tries = 3, prefix = "page1", retryable = true, waits = "backoff",
  check = function(err) assert.matches("emulated database error", err.message, 1, true) end }

-- fields: a canned last page (page 1) -------------------------------------------------
case{ name = "duplicate keys in a row (the last one wins, as JSON.parse does)", expect = "recovered",
  page1 = function(P)
    local more = { { P.id_field, str("dup-last") } }
    if P.num then more[2] = { P.num.field, "1" }; more[3] = { P.num.field, "7" } end
    return { { body = P.page(row(P, str("dup-first"), more)) } }
  end,
  rows = 1,
  check = function(users, P)
    assert.equal("dup-last", users[1].id)
    if P.num then assert.equal(7, users[1][P.num.common]) end
  end }
case{ name = "a row with only its id (optional fields missing)", expect = "recovered",
  page1 = function(P) return { { body = P.page(row(P, str("only-id"))) } } end,
  rows = 1,
  check = function(users)
    local u = users[1]
    assert.equal("only-id", u.id)
    for _, k in ipairs{ "requests", "sessions", "tokens", "cost", "first_seen", "last_seen", "email" } do
      assert.is_nil(u[k], k)
    end
  end }
case{ name = "a row without its id", expect = "error", kind = "decode",
  page1 = function(P)
    local more = P.num and { { P.num.field, "3" } } or { { "createdAt", str("2025-01-01T00:01:00.000Z") } }
    return { { body = P.page(row(P, str("user-a"), {}) .. "," .. row(P, nil, more)) } }
  end,
  tries = 1, prefix = 0, retryable = false }
case{ name = "a row that is a number, not an object", expect = "error", kind = "decode",
  page1 = function(P) return { { body = P.page(row(P, str("user-a")) .. ",42") } } end,
  tries = 1, prefix = 0, retryable = false }
case{ name = "a number where the id string belongs (read as a string)", expect = "recovered",
  page1 = function(P) return { { body = P.page(row(P, "12345") .. "," .. row(P, "-7")) } } end,
  rows = 2,
  check = function(users)
    assert.equal("12345", users[1].id)
    assert.equal("-7", users[2].id)
  end }
case{ name = "numeric strings where numbers belong (read as numbers)", expect = "recovered",
  only = NUMERIC,
  page1 = function(P) return { { body = P.page(row(P, str("n"), { { P.num.field, '"15"' } })) } } end,
  rows = 1,
  check = function(users, P)
    assert.equal(15, users[1][P.num.common])
    assert.equal(15, users[1][P.num.field])
  end }
-- Fields the common shape cannot read: by default the row is kept, its
-- common field left out, the provider's field as sent, and one warning
-- event a field; with strict = true, one decode error naming the field.
local STRICT = function() return { strict = true } end
local function warned_once(rec, field)
  local n = 0
  for _, ev in ipairs(rec.events) do
    if ev.type == "warning" then
      n = n + 1
      assert.equal("decode", ev.kind)
      assert.equal(field, ev.field)
      assert.matches("field '" .. field .. "' is not", ev.message, 1, true)
    end
  end
  assert.equal(1, n)
end
local function unreadable(name, only, value, field_of, common_of, raw)
  case{ name = name .. " (kept, the common field left out, one warning)", expect = "recovered",
    only = only,
    page1 = function(P)
      return { { body = P.page(row(P, str("n"), { { field_of(P), value } }) .. ","
        .. row(P, str("m"), { { field_of(P), value } })) } }
    end,
    rows = 2,
    check = function(users, P, rec)
      for _, u in ipairs(users) do
        assert.is_nil(u[common_of(P)])
        assert.same(raw, u[field_of(P)])
      end
      assert.same({ "n", "m" }, { users[1].id, users[2].id })
      warned_once(rec, field_of(P))
    end }
end
local function num_field(P) return P.num.field end
local function num_common(P) return P.num.common end
local function time_field(P) return P.time end
local function time_common(P) return P.time_common end
unreadable("a non-numeric string where a number belongs", NUMERIC, '"many"', num_field, num_common,
  "many")
unreadable("an object where a number belongs", NUMERIC, '{"n":1}', num_field, num_common, { n = 1 })
unreadable("a number where a time string belongs", nil, "1735689600", time_field, time_common,
  1735689600)
unreadable("a string that is not a time where a time belongs", nil, '"yesterday"', time_field,
  time_common, "yesterday")
case{ name = "strict = true: a non-numeric string where a number belongs (the field is named)",
  expect = "error", kind = "decode", only = NUMERIC, options = STRICT,
  page1 = function(P) return { { body = P.page(row(P, str("n"), { { P.num.field, '"many"' } })) } } end,
  tries = 1, prefix = 0, retryable = false,
  check = function(err, P)
    assert.matches("[1] field '" .. P.num.field .. "' is not a number (a string)", err.message, 1, true)
  end }
case{ name = "strict = true: an object where a number belongs", expect = "error", kind = "decode",
  only = NUMERIC, options = STRICT,
  page1 = function(P) return { { body = P.page(row(P, str("n"), { { P.num.field, '{"n":1}' } })) } } end,
  tries = 1, prefix = 0, retryable = false,
  check = function(err, P)
    assert.matches(P.num.field .. "' is not a number (a table)", err.message, 1, true)
  end }
case{ name = "strict = true: a number where a time string belongs (the field is named)",
  expect = "error", kind = "decode", options = STRICT,
  page1 = function(P) return { { body = P.page(row(P, str("n"), { { P.time, "1735689600" } })) } } end,
  tries = 1, prefix = 0, retryable = false,
  check = function(err, P)
    assert.matches(P.time .. "' is not an ISO 8601 time (a number)", err.message, 1, true)
  end }
case{ name = "strict = true: a string that is not a time where a time belongs", expect = "error",
  kind = "decode", options = STRICT,
  page1 = function(P) return { { body = P.page(row(P, str("n"), { { P.time, '"yesterday"' } })) } } end,
  tries = 1, prefix = 0, retryable = false,
  check = function(err, P)
    assert.matches(P.time .. "' is not an ISO 8601 time (a string)", err.message, 1, true)
  end }
case{ name = "a number where the next link belongs", expect = "error", kind = "decode",
  only = USERTOUR,
  page1 = function(P)
    return { { body = '{"results":[' .. row(P, str("user-a")) .. '],"next":5,"previous":null}' } }
  end,
  tries = 1, prefix = 0, retryable = false }

-- servers that echo the key ------------------------------------------------------------
local function echo(P) return "invalid API key " .. P.key end
case{ name = "a 401 whose body echoes the API key", expect = "error", kind = "http", status = 401,
  faults = function(P)
    local e = str(echo(P))
    return { { status = 401,
      body = obj{ { "error", e }, { "message", e }, { "detail", e }, { "code", "401" } } } }
  end,
  tries = 1, prefix = "page1", retryable = false, no_key = true }
case{ name = "invalid JSON that echoes the API key", expect = "error", kind = "decode",
  faults = function(P) return { { body = '{"error": "' .. echo(P) .. '" oops' } } end,
  tries = 1, prefix = "page1", retryable = false, no_key = true }
case{ name = "an HTML 502 page that echoes the API key on every try", expect = "error", kind = "http",
  status = 502,
  faults = function(P)
    return rep({ status = 502, content_type = "text/html",
      body = "<html><body><h1>502</h1><p>" .. echo(P) .. "</p></body></html>" }, 3)
  end,
  tries = 3, prefix = "page1", retryable = true, waits = "backoff", no_key = true }
case{ name = "a database error in a 200 body that echoes the API key", expect = "error", kind = "api",
  only = HELICONE,
  faults = function(P) return rep({ helicone_error = echo(P) }, 3) end,
  tries = 3, prefix = "page1", retryable = true, waits = "backoff", no_key = true }
case{ name = "a next link that is not http(s) and echoes the API key", expect = "error", kind = "decode",
  only = USERTOUR,
  page1 = function(P)
    return { { body = '{"results":[' .. row(P, str("user-a")) .. '],"next":"ftp://x/' .. echo(P)
      .. '","previous":null}' } }
  end,
  tries = 1, prefix = 0, retryable = false, no_key = true }

-- ------------------------------------------------------------ checks

local function applies(c, P)
  if c.only and not c.only[P.label] then return false end
  if c.skip and c.skip[P.label] then return false end
  return true
end

local function outcome(c, P)
  if c.expect == "recovered" then
    if c.rows then return ("recovered, %d %s read right"):format(c.rows, c.rows == 1 and "row" or "rows") end
    return ("recovered, all %d %s"):format(P.total, P.unit)
  end
  local what = c.kind .. (c.status and (" " .. c.status) or "")
  return ("one %s error after %d %s"):format(what, c.tries, c.tries == 1 and "try" or "tries")
end

local function check_waits(c, rec, retries)
  if c.waits == nil then
    assert.same({}, rec.waits)
  elseif c.waits == "backoff" then
    -- 0.5 s doubling, less up to 25% jitter
    assert.equal(retries, #rec.waits)
    for i, w in ipairs(rec.waits) do
      local base = 0.5 * 2 ^ (i - 1)
      assert.is_true(w <= base and w >= 0.75 * base, ("wait %d: %g"):format(i, w))
    end
  else
    assert.same(c.waits, rec.waits)
  end
end

local function no_duplicates(keys)
  local seen = {}
  for _, k in ipairs(keys) do
    assert.is_nil(seen[k], "listed twice: " .. tostring(k))
    seen[k] = true
  end
end

local function has_key(s)
  for _, key in pairs(emu.keys) do
    if s:find(key, 1, true) then return key end
  end
  return nil
end

local function run_case(P, c)
  local ref = reference_of(P)
  emu.reset()
  if c.faults then
    local list = { PASS }
    for _, f in ipairs(c.faults(P)) do list[#list + 1] = f end
    emu.faults(P.path, list)
  elseif c.page1 then
    emu.faults(P.path, c.page1(P))
  end
  local rec = { waits = {}, events = {}, strings = {} }
  local cl = new_client(P, rec, c.options and c.options(P))
  local users, keys, err, took = walk(P, cl)
  local requests = emu.stats().requests
  if err ~= nil then keep_error(err, rec.strings) end
  assert.is_true(took < 5, ("the listing took %.1fs"):format(took)) -- no hang

  if c.expect == "recovered" then
    assert.is_nil(err, err and tostring(err))
    if c.rows then
      assert.equal(c.rows, #users)
      c.check(users, P, rec)
      assert.equal(1, requests)
    else
      assert.equal(P.total, #keys)
      assert.equal(P.first, keys[1])
      assert.equal(P.last, keys[#keys])
      no_duplicates(keys)
      assert.same(ref, keys) -- the whole listing, in order
      assert.equal(3 + c.retries + (c.resent or 0), requests)
    end
    assert.equal(requests - (c.resent or 0), count_events(rec, "request"))
    check_waits(c, rec, c.retries or 0)
    return
  end

  -- one structured error of the right kind
  assert.is_not_nil(err, ("no error: the listing ended with %d of %d %s"):format(#keys, P.total, P.unit))
  assert.is_true(userlist.is_error(err), "not a userlist error: " .. tostring(err))
  assert.equal(c.kind, err.kind, tostring(err))
  if c.status then assert.equal(c.status, err.status, tostring(err)) end
  assert.equal(P.provider, err.provider)
  assert.equal(c.retryable, err.retryable, tostring(err))
  assert.is_string(err.message)
  assert.is_true(#err.message > 0)
  local line = tostring(err)
  assert.is_nil(line:find("[\r\n]"), "tostring is not one line: " .. line)
  assert.equal(1, select(2, line:gsub("^userlist: ", "")))
  assert.matches("^userlist: " .. P.provider .. " " .. c.kind, line)
  assert.is_string(err.url)
  assert.is_truthy(line:find(err.url, 1, true), line)
  if c.check then c.check(err, P) end
  if c.no_key then
    for _, s in ipairs(rec.strings) do
      assert.is_nil(has_key(s), "the key shows in: " .. s:sub(1, 300))
    end
  end

  -- what was yielded first is a correct prefix, and not the whole listing
  local prefix = c.prefix == "page1" and 100 or c.prefix
  assert.equal(prefix, #keys)
  assert.is_true(#keys < P.total)
  for i = 1, #keys do assert.equal(ref[i], keys[i]) end

  -- the tries: 1 for what is not retryable, 1 + max_retries (2) for what is
  local pages_before = c.prefix == "page1" and 1 or 0
  assert.equal(pages_before + c.tries, count_events(rec, "request"))
  assert.equal(c.offline and 0 or pages_before + c.tries + (c.resent or 0), requests)
  check_waits(c, rec, c.tries - 1)
end

-- ------------------------------------------------------------ the matrix

describe("fault matrix", function()
  teardown(function()
    if blackhole then
      for _, s in ipairs(blackhole.fill) do s:close() end
      blackhole.srv:close()
    end
    emu.reset()
  end)

  for _, P in ipairs(PROVIDERS) do
    describe(P.label, function()
      for _, c in ipairs(CASES) do
        local name = ("%s: %s → %s"):format(P.label, c.name, outcome(c, P))
        if applies(c, P) then
          it(name, function() run_case(P, c) end)
        end
      end
    end)
  end

  it("no error or event of the whole matrix holds an API key", function()
    assert.is_true(#produced > 1000, "the matrix produced only " .. #produced .. " strings")
    for _, s in ipairs(produced) do
      local key = has_key(s)
      assert.is_nil(key, ("the key %s shows in: %s"):format(tostring(key), s:sub(1, 300)))
    end
  end)
end)
