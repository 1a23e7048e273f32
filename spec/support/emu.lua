-- Spec support: the emulator's addresses and its control API (spec/emulator/README.md).
local core = require "userlist.core"

local M = {}

M.http = assert(os.getenv("USERLIST_EMU_HTTP"),
  "USERLIST_EMU_HTTP is unset: run the specs with make test")
M.https = os.getenv("USERLIST_EMU_HTTPS")
M.ca = os.getenv("USERLIST_EMU_CA")

-- The control session keeps one connection open, so its own requests are not
-- counted as new connections after a reset.
local ctl = core.session()

local function call(method, path, body)
  local res, err = ctl:request{ method = method, url = M.http .. path, json = body }
  assert(res, err and tostring(err))
  return res.body
end

function M.get(path) return call("GET", path) end
function M.post(path, body) return call("POST", path, body or {}) end

-- The keys the emulated providers accept, by name, as each one's emulator
-- module declares them (spec/providers/<name>/emulator.lua, `keys`):
-- helicone, helicone_read_only (401: POSTs need write), openlayer, arthur,
-- usertour (v1), usertour_v2, ...
M.keys = M.get("/_emu/keys")

-- Requests a client gave up on (a listing that ended with pages in flight)
-- are counted when the emulator finishes them: wait for those (at most 5 s)
-- so that they are not counted in the next test's figures.
function M.reset()
  M.until_stats(function(s) return s.in_flight == 0 end)
  return M.post("/_emu/reset")
end
function M.config(t) return M.post("/_emu/config", t) end
function M.stats() return M.get("/_emu/stats") end

--- Polls the emulator's stats until `pred(stats)` holds (bounded: 5 s).
-- @return the last stats
function M.until_stats(pred)
  local t0 = core.now()
  while true do
    local st = M.stats()
    if pred(st) or core.now() - t0 > 5 then return st end
  end
end
function M.requests() return M.get("/_emu/requests") end
function M.faults(path, list) return M.post("/_emu/faults", { path = path, faults = list }) end

-- Environment prefix for the Lua processes a spec starts: under the ASan
-- run they keep AddressSanitizer but not LeakSanitizer, whose tracer
-- crashes now and then at a child's exit here ("Tracer caught signal 11");
-- the suite's own process, running the same core, keeps the leak check.
-- Under ThreadSanitizer (make check-tsan) the suite runs in its own
-- executable: a child, a plain Lua, loads the plain core.
local plain_cpath = (os.getenv("LUA_CPATH") or ""):gsub("build/tsan/", "build/")
M.child_env = os.getenv("ASAN_OPTIONS") and "ASAN_OPTIONS=detect_leaks=0:exitcode=23"
  or os.getenv("TSAN_OPTIONS") and ("LUA_CPATH='" .. plain_cpath .. "'")
  or ""

-- Arthur's rows for task-1 among users 1..n, ascending, as "user/task-1"
-- keys (its listing has one row per (user, task) pair).
function M.arthur_task1_rows(n)
  local data = dofile("spec/emulator/lua/emu/data.lua")
  local rows = {}
  for i = 1, n do
    for _, t in ipairs(data.tasks(i)) do
      if t == 1 then rows[#rows + 1] = data.id(i) .. "/task-1" end
    end
  end
  return rows
end

-- The X-Emu-Fault header value for a fault spec table.
function M.fault(spec) return core.json_encode(spec) end

return M
