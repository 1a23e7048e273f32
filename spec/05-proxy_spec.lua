-- Proxies: from the environment as libcurl reads it, or set explicitly.
-- The emulator doubles as the proxy: nginx answers absolute-form requests.
local core = require "userlist.core"
local emu = require "support.emu"

local lua = assert(os.getenv("USERLIST_LUA"), "USERLIST_LUA unset: run through make test")

local function child(env, code)
  local p = assert(io.popen(emu.child_env .. " " .. env .. " " .. lua .. " -e '" .. code .. "' 2>&1"))
  local out = p:read("*a")
  p:close()
  return out
end

describe("proxy", function()
  before_each(function() emu.reset() end)

  it("is taken from http_proxy in the environment, as libcurl does", function()
    local out = child("no_proxy= NO_PROXY= http_proxy=" .. emu.http, [[
      local s = require("userlist.core").session()
      local r, e = s:request{ url = "http://provider.test/_emu/echo" }
      io.write(r and (r.body.headers.host .. " " .. r.body.uri) or tostring(e))]])
    assert.equal("provider.test /_emu/echo", out)
  end)

  it("can be set per session with the proxy option", function()
    local s = core.session{ proxy = emu.http }
    local res = assert(s:request{ url = "http://provider.test/_emu/echo" })
    s:close()
    assert.equal("provider.test", res.body.headers.host)
  end)

  it("without a proxy, a host that does not resolve is a network error", function()
    local out = child("no_proxy= http_proxy= https_proxy=", [[
      local s = require("userlist.core").session{ connect_timeout = 2 }
      local r, e = s:request{ url = "http://provider.invalid/_emu/echo" }
      io.write(r and "reached" or e.kind)]])
    assert.equal("network", out)
  end)
end)
