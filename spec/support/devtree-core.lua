-- The dev tree's userlist/core.lua (make copies it there; never installed):
-- loads the userlist.core built for the running Lua's ABI from build/<abi>/.
local abi = rawget(_G, "jit") and "luajit" or _VERSION:match("%d+%.%d+")
local root = debug.getinfo(1, "S").source:match("^@(.-)/?userlist/core%.lua$")
local path = ((root and root ~= "") and root or ".") .. "/build/" .. abi .. "/userlist/core.so"
local open, err = package.loadlib(path, "luaopen_userlist_core")
if not open then
  error("userlist.core is not built for " .. abi .. " (run: make LUA=" .. abi .. "): " .. tostring(err), 2)
end
return open()
