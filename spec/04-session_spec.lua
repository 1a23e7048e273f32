-- Session lifetime and connection reuse.
local core = require "userlist.core"
local emu = require "support.emu"

describe("session", function()
  before_each(function() emu.reset() end)

  it("reuses one connection for consecutive requests to one host", function()
    local s = core.session()
    local news = 0
    for i = 1, 10 do
      local res = assert(s:request{ url = emu.http .. "/_emu/echo", query = { page = i } })
      news = news + res.new_connections
    end
    s:close()
    assert.equal(1, news)
    assert.equal(1, emu.stats().connections)
  end)

  it("reuses the TLS connection too", function()
    local s = core.session{ cafile = emu.ca }
    for _ = 1, 5 do assert(s:request{ url = emu.https .. "/_emu/echo" }) end
    s:close()
    assert.equal(1, emu.stats().connections)
  end)

  it("opens a fresh connection per session", function()
    for _ = 1, 3 do
      local s = core.session()
      assert(s:request{ url = emu.http .. "/_emu/echo" })
      s:close()
    end
    assert.equal(3, emu.stats().connections)
  end)

  it("keeps working after an error response on the same connection", function()
    local s = core.session()
    assert.is_nil((s:request{ url = emu.http .. "/_emu/echo",
      headers = { ["X-Emu-Fault"] = emu.fault{ status = 500 } } }))
    local res = assert(s:request{ url = emu.http .. "/_emu/echo" })
    assert.equal(200, res.status)
    s:close()
  end)

  it("closes idempotently, and a closed session raises when used", function()
    local s = core.session()
    s:close()
    s:close()
    assert.matches("closed", tostring(s))
    assert.has_error(function() s:request{ url = emu.http .. "/" } end,
      "attempt to use a closed userlist session")
  end)

  it("is released by the garbage collector without a close", function()
    for _ = 1, 50 do
      local s = core.session()
      assert(s:request{ url = emu.http .. "/_emu/echo" })
    end
    collectgarbage()
    collectgarbage()
    -- what proves no leak is valgrind over this suite; here: no crash, all answered
    assert.equal(50, emu.stats().requests)
  end)

  if _VERSION == "Lua 5.4" then
    it("closes through a to-be-closed variable on Lua 5.4", function()
      local chunk = assert(load([[
        local core, url = ...
        local kept
        do
          local s <close> = core.session()
          assert(s:request{ url = url })
          kept = s
        end
        return tostring(kept)
      ]]))
      assert.matches("closed", chunk(core, emu.http .. "/_emu/echo"))
    end)
  end

  describe("raises naming the option for bad session options", function()
    for name, bad in pairs{ timeout = "60", connect_timeout = -1, verify = "yes",
                            max_size = 0, cafile = 5, low_speed_time = {}, follow_redirects = 1 } do
      it(name, function()
        local ok, err = pcall(core.session, { [name] = bad })
        assert.is_false(ok)
        assert.matches("'" .. name .. "'", err, 1, true)
      end)
    end
    it("a non-table options argument", function()
      assert.has_error(function() core.session("fast") end)
    end)
  end)
end)
