-- The repository describes the providers' servers in its own files
-- (doc/providers.md): no tracked file names a path of a development machine,
-- which a reader of the repository does not have.
local function tracked()
  local p = assert(io.popen("git ls-files -z 2>/dev/null"))
  local out = p:read("*a")
  p:close()
  local files = {}
  for name in out:gmatch("([^%z]+)%z") do
    -- third-party code and lock files are not ours to word
    if not name:find("node_modules/", 1, true) and not name:find("package%-lock%.json$") then
      files[#files + 1] = name
    end
  end
  return files
end

-- Built from pieces so that this file does not name them itself.
local ROOTS = { "/" .. "work", "/" .. "home", "/" .. "root" }
local NOTES = "shared" .. "/PROVIDERS.md"

-- The first line of text that names an absolute path under one of ROOTS
-- (not part of a longer path, a longer name or a URL) or the notes file:
-- its number and text, or nil.
local function offending_line(text)
  local n = 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if line:find(NOTES, 1, true) then return n, line end
    for _, root in ipairs(ROOTS) do
      local from = 1
      while true do
        local at = line:find(root, from, true)
        if not at then break end
        local before = at > 1 and line:sub(at - 1, at - 1) or ""
        local after = line:sub(at + #root, at + #root)
        if not before:find("[%w%._~/%-]") and not after:find("[%w_%-]") then
          return n, line
        end
        from = at + 1
      end
    end
  end
end

describe("the repository", function()
  it("has tracked files to check (git ls-files works here)", function()
    assert.is_true(#tracked() > 50)
  end)

  it("the check finds what it must, and only that", function()
    assert.is_not_nil(offending_line("see " .. ROOTS[1] .. "/main/README.md"))
    assert.is_not_nil(offending_line("x\n(`" .. ROOTS[2] .. "/me/x`)"))
    assert.is_not_nil(offending_line("cd " .. ROOTS[3]))
    assert.is_not_nil(offending_line("see ../" .. NOTES))
    assert.is_not_nil(offending_line("under " .. ROOTS[1] .. ", mostly"))
    assert.is_nil(offending_line("https://example.com" .. ROOTS[1] .. "/x and lib" .. ROOTS[2] .. "/y"))
    assert.is_nil(offending_line("a " .. ROOTS[1] .. "space or " .. ROOTS[3] .. "_dir"))
  end)

  it("names no path outside itself: no absolute path of a development machine, no notes file", function()
    local found = {}
    for _, name in ipairs(tracked()) do
      local f = io.open(name, "rb")
      if f then -- a file deleted in the working tree is not there to read
        local n, line = offending_line(f:read("*a"))
        f:close()
        if n then found[#found + 1] = ("%s:%d: %s"):format(name, n, line) end
      end
    end
    assert.same({}, found)
  end)
end)
