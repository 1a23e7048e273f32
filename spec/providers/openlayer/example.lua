-- List the users of an Openlayer data source (inference pipeline).
--
-- Against the bundled emulator (no account needed):
--   spec/emulator/run exec -- env LUA_PATH='lua/?.lua;lua/?/init.lua;;' \
--     LUA_CPATH='build/5.4/?.so;;' lua5.4 spec/providers/openlayer/example.lua
-- Against Openlayer itself: unset USERLIST_EMU_HTTP, set OPENLAYER_API_KEY
-- and OPENLAYER_PIPELINE_ID. Exits non-zero on any failure.
local userlist = require "userlist"

local emu = os.getenv("USERLIST_EMU_HTTP")
local ol
if emu then
  ol = userlist.openlayer{ api_key = "ol-emu-key", base_url = emu .. "/v1",
                           headers = { ["X-Emu-Users"] = "1234" } }
else
  ol = userlist.openlayer{} -- OPENLAYER_API_KEY, https://api.openlayer.com/v1
end
local pipeline = os.getenv("OPENLAYER_PIPELINE_ID") or "3fa85f64-5717-4562-b3fc-2c963f66afa6"

local function day(t) return t and os.date("!%Y-%m-%d %H:%M", math.floor(t)) or "-" end

-- 1. Every user, page after page (100 a request), the most expensive first.
--    Errors are raised from the loop: pcall turns them into a message.
local ok, err = pcall(function()
  local count, spent = 0, 0
  print(("%-16s %8s %8s %10s %10s  %-16s %s"):format(
    "id", "requests", "sessions", "tokens", "cost", "first seen", "last seen"))
  for u in ol:users{ pipeline_id = pipeline, sort_column = "cost", asc = false } do
    count, spent = count + 1, spent + (u.cost or 0)
    if count <= 5 then
      print(("%-16s %8s %8s %10s %10.4f  %-16s %s"):format(u.id, u.requests or "-", u.sessions or "-",
        u.tokens or "-", u.cost or 0, day(u.first_seen), day(u.last_seen)))
    end
  end
  print(("%d users, %.2f USD in all"):format(count, spent))

  -- 2. A filtered listing: heavy users whose id contains "00012".
  local heavy = 0
  for u in ol:users{ pipeline_id = pipeline, search_query_and = { "00012" },
                     column_filters = { { measurement = "records", operator = ">=", value = 10 } } } do
    heavy = heavy + 1
    assert(u.requests >= 10)
  end
  print(("%d users with 10+ records and \"00012\" in their id"):format(heavy))

  -- 3. One page at a time, e.g. for a web view: page() never raises for API errors.
  local page, perr = ol:page{ pipeline_id = pipeline, page = 2, per_page = 10 }
  if not page then error(perr, 0) end
  print(("page 2 holds %d users, next page: %s"):format(#page.users, tostring(page.next)))
end)

if not ok then
  io.stderr:write("openlayer example failed: ", tostring(err), "\n")
  os.exit(1)
end
