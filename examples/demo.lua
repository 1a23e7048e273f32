-- make demo: list users from the bundled emulator (no account needed).
-- USERLIST_EMU_HTTP is set by spec/emulator/run; the key is the emulator's.
local core = require("userlist").core

local base = assert(os.getenv("USERLIST_EMU_HTTP"), "run through: make demo")
local session = core.session()

-- Usertour's cursor pages: follow the server's relative `next` link verbatim.
local url, shown, pages = base .. "/v1/users?limit=100", 0, 0
print(("%-14s %-28s %s"):format("id", "email", "created"))
while url do
  local res, err = session:request{ url = url, api_key = "ak_emu", headers = { ["X-Emu-Users"] = 250 } }
  if not res then error(err, 0) end
  pages = pages + 1
  for _, u in ipairs(res.body.results) do
    shown = shown + 1
    if shown <= 10 then
      print(("%-14s %-28s %s"):format(u.id, u.attributes.email, u.createdAt))
    end
  end
  local next_link = res.body.next
  url = (type(next_link) == "string") and (base .. next_link) or nil
end
session:close()
print(("... %d users in %d pages over one connection (%s)"):format(shown, pages, core.user_agent))
