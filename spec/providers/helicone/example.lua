-- List Helicone users from the bundled emulator (no account needed):
--
--   spec/emulator/run exec -- env LUA_PATH='lua/?.lua;lua/?/init.lua;;' \
--     LUA_CPATH='build/5.4/?.so;;' lua5.4 spec/providers/helicone/example.lua
--
-- USERLIST_EMU_HTTP is the emulator's address (spec/emulator/run sets it) and
-- sk-helicone-emu its key. Against the real service, drop base_url and set
-- HELICONE_API_KEY (region = "eu" for EU accounts). Exits non-zero on failure.
local userlist = require "userlist"

local base = os.getenv("USERLIST_EMU_HTTP")
if base == nil or base == "" then
  io.stderr:write("USERLIST_EMU_HTTP is unset: run through spec/emulator/run exec\n")
  os.exit(2)
end

local function day(t) return t and os.date("!%Y-%m-%d", math.floor(t)) or "-" end

local function main()
  local hc = userlist.helicone{ api_key = "sk-helicone-emu", base_url = base }

  -- 1. Everyone, biggest spenders first: POST /v1/user/metrics/query, offset
  --    paging. A generic for that breaks early releases the listing (Lua 5.4).
  print(("%-14s %8s %10s %10s  %-10s %s"):format("id", "requests", "tokens", "cost $", "first", "last"))
  local shown = 0
  for u in hc:users{ sort = { cost = "desc" }, limit = 100 } do
    print(("%-14s %8d %10d %10.6f  %-10s %s"):format(u.id, u.requests, u.tokens, u.cost,
      day(u.first_seen), day(u.last_seen)))
    shown = shown + 1
    if shown == 5 then break end
  end
  if shown == 0 then error("no user listed", 0) end

  local total, cost = 0, 0
  for u in hc:users{} do -- the default: user_id order, 1000 a page
    total, cost = total + 1, cost + u.cost
  end
  print(("... %d users in all, $%.2f"):format(total, cost))

  -- 2. Known users in a time window: POST /v1/user/query (the seed endpoint),
  --    100 ids a request; the window is sent in the milliseconds today's
  --    server wrongly expects.
  local ids = {}
  for i = 1, 150 do ids[i] = ("user-%07d"):format(i) end
  local found = 0
  for _ in hc:users{ user_ids = ids, since = "2025-01-01T00:00:00Z", ["until"] = "2025-01-01T01:00:00Z" } do
    found = found + 1
  end
  print(("%d of %d ids were active in the first hour of 2025"):format(found, #ids))
  if found == 0 then error("the time-window lookup found nobody", 0) end

  -- 3. The seed request as documented: at most 100 rows, and the client says so.
  local r, err = hc:query()
  if not r then error(err, 0) end
  print(("query(): %d rows%s"):format(#r.users,
    r.truncated and " (the server's 100-row cap: more users exist, use users{})" or ""))
  hc:close()
end

local ok, err = pcall(main)
if not ok then
  io.stderr:write("spec/providers/helicone/example.lua: ", tostring(err), "\n")
  os.exit(1)
end
