-- doc/queries.md is generated from what each provider declares (its query
-- schema and client options, userlist.providers): made again in memory
-- here, it must be the file as committed. No network.
describe("doc/queries.md", function()
  it("is what doc/gen-queries.lua makes of the providers' declarations (else run it again)", function()
    local gen = dofile("doc/gen-queries.lua")
    local f = assert(io.open("doc/queries.md", "rb"))
    local committed = f:read("*a")
    f:close()
    local fresh = gen.render()
    if fresh ~= committed then
      -- the first line that differs, rather than two whole documents
      local a, b, n = fresh .. "\n", committed .. "\n", 0
      local ia, ib = a:gmatch("([^\n]*)\n"), b:gmatch("([^\n]*)\n")
      repeat
        local la, lb = ia(), ib()
        n = n + 1
      until la ~= lb
      error(("doc/queries.md is stale from line %d: run doc/gen-queries.lua (see its header)"):format(n), 0)
    end
  end)

  it("names every provider of the registry and each key it declares", function()
    local providers = require "userlist.providers"
    local text = dofile("doc/gen-queries.lua").render()
    for name, d in providers.each() do
      assert.matches("\n## " .. name .. "\n", text, 1, true)
      for _, e in ipairs(d.query) do assert.matches("| `" .. e.name .. "` |", text, 1, true) end
    end
  end)
end)
