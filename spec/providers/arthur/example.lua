-- Arthur GenAI Engine: list the users of two tasks, one page's facts, and
-- one user's details. Against the bundled emulator:
--
--   spec/emulator/run exec -- env LUA_PATH='lua/?.lua;lua/?/init.lua;;' \
--     LUA_CPATH='build/5.4/?.so;;' lua5.4 spec/providers/arthur/example.lua
--
-- Against a real engine, set ARTHUR_BASE_URL and ARTHUR_API_KEY (and
-- ARTHUR_TASK_IDS, comma-separated) instead of USERLIST_EMU_HTTP.
-- Exits non-zero on any failure.
--
-- expect: users in all
local userlist = require "userlist"

local emu = os.getenv("USERLIST_EMU_HTTP")
local opts = { server_utc_offset = 0 } -- the server's clock is UTC
if emu then
  opts.base_url, opts.api_key = emu, "arthur-emu-key"
end
local tasks = {}
for t in (os.getenv("ARTHUR_TASK_IDS") or "task-1,task-2"):gmatch("[^,]+") do tasks[#tasks + 1] = t end

local ok, err = pcall(function()
  local arthur = userlist.arthur(opts)

  -- one page: the server's count is of (user, task) pairs
  local page = assert(arthur:page{ task_ids = tasks, page_size = 5 })
  print(("%d (user, task) rows in tasks %s; costs in %s"):format(
    page.count, table.concat(tasks, ", "), page.display_currency or "?"))

  -- every user once (dedupe = "user"), oldest first, errors raised
  local fmt = "%-14s %-8s %8s %8s %10s %10s  %s"
  print(fmt:format("user", "task", "sessions", "requests", "tokens", "cost", "last seen (UTC)"))
  local n, first = 0, nil
  for u in arthur:users{ task_ids = tasks, sort = "asc", dedupe = "user", page_size = 500 } do
    n = n + 1
    first = first or u.id
    if n <= 10 then
      print(fmt:format(u.id, u.task_id, u.sessions, u.requests, u.tokens or "-",
        u.cost and ("%.6f"):format(u.cost) or "-", os.date("!%Y-%m-%d %H:%M", u.last_seen)))
    end
  end
  print(("%d users in all"):format(n))

  -- one user's details (no token or cost fields on this endpoint)
  if first then
    local u = assert(arthur:user(first, { task_ids = tasks }))
    print(("%s: %d traces, %d spans, sessions %s"):format(u.id, u.trace_count, u.span_count,
      table.concat(u.session_ids, " ")))
  end
  local missing, e = arthur:user("no such user", { task_ids = tasks })
  assert(missing == nil and e.status == 404, "expected a 404 for an unknown user")
  print("unknown user: " .. e.message)
end)

if not ok then
  io.stderr:write("spec/providers/arthur/example.lua: ", tostring(err), "\n")
  os.exit(1)
end
