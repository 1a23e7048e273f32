-- Lists Usertour users with userlist: v1 (an environment key, ak_...) and v2
-- (a personal token, utp_..., plus a project and an environment id).
--
-- Against the bundled emulator (from the repository root):
--   spec/emulator/run exec -- env LUA_PATH='lua/?.lua;lua/?/init.lua;;' \
--     LUA_CPATH='build/5.4/?.so;;' lua5.4 spec/providers/usertour/example.lua
-- Against api.usertour.io: unset USERLIST_EMU_HTTP, set USERTOUR_API_KEY=ak_...
-- and, for v2, USERTOUR_V2_TOKEN, USERTOUR_PROJECT_ID and USERTOUR_ENVIRONMENT_ID.
-- Exits non-zero on any failure.
local userlist = require "userlist"

local emu = os.getenv("USERLIST_EMU_HTTP")
local v1_opts, v2_opts
if emu then
  -- the emulator makes up as many users as X-Emu-Users asks for
  local headers = { ["X-Emu-Users"] = "250" }
  v1_opts = { api_key = "ak_emu", base_url = emu, headers = headers }
  v2_opts = { api_key = "utp_emu", base_url = emu, headers = headers,
              project_id = "demo-project", environment_id = "production" }
else
  v1_opts = {} -- key from USERTOUR_API_KEY
  local token = os.getenv("USERTOUR_V2_TOKEN")
  if token then
    v2_opts = { api_key = token, project_id = os.getenv("USERTOUR_PROJECT_ID"),
                environment_id = os.getenv("USERTOUR_ENVIRONMENT_ID") }
  end
end

local function when(t)
  return t and os.date("!%Y-%m-%d %H:%M:%S", math.floor(t)) or "-"
end

local function show(u)
  local companies = {}
  for _, c in ipairs(u.companies or {}) do companies[#companies + 1] = c.id end
  -- first_seen: attributes.first_seen_at (else createdAt); last_seen: attributes.last_seen_at
  print(("  %-14s %-26s %-19s %-19s %s"):format(u.id, u.email or "-", when(u.first_seen),
    when(u.last_seen), table.concat(companies, ",")))
end

local function main()
  -- v1: the first five users (oldest first), with their companies
  local v1 = userlist.usertour(v1_opts)
  print("v1: first users, with companies")
  local n = 0
  for u in v1:users{ expand = { "companies" }, limit = 5 } do
    show(u)
    n = n + 1
    if n == 5 then break end -- on Lua 5.4 the break also closes the connection at once
  end

  -- every user, counted page by page; a user deleted meanwhile whose id was
  -- a page's cursor is recovered from (the page before asked again), and said
  local pages, total = 0, 0
  local opts = { on_event = function(ev)
    if ev.type == "recover" then print("v1: recovered from a stale cursor: " .. ev.stale) end
  end }
  for k, v in pairs(v1_opts) do opts[k] = v end
  local watched = userlist.usertour(opts)
  for page in watched:pages{ limit = 100 } do
    pages, total = pages + 1, total + #page.users
  end
  print(("v1: %d users in %d pages"):format(total, pages))

  -- v2: a time window (since/until: Lua times or ISO 8601 strings)
  if v2_opts then
    local v2 = userlist.usertour(v2_opts)
    print("v2: users created from 2025-01-01T00:10Z to 00:13Z")
    for u in v2:users{ since = "2025-01-01T00:10:00Z", ["until"] = "2025-01-01T00:13:00Z" } do
      show(u)
    end
  end

  -- one user, and (emulator only: it changes data) an upsert and a delete
  if emu then
    local u = assert(v1:upsert{ id = "example/1",
                                attributes = { name = "Example", email = "ex@example.com" } })
    print("v1: upserted " .. u.id)
    show(assert(v1:user("example/1")))
    assert(v1:delete("example/1"))
    local gone, err = v1:user("example/1")
    assert(gone == nil and err.code == "E1001", "the deleted user is still there")
    print("v1: deleted example/1 (" .. tostring(err) .. ")")
  end
end

local ok, err = pcall(main)
if not ok then
  io.stderr:write("usertour example failed: ", tostring(err), "\n")
  os.exit(1)
end
