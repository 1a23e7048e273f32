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
  -- the stepped transfer the nginx engine drives: never waits inside step()
  for _, threaded in ipairs{ false, true } do
    -- every case twice: driven by the caller, and by the multi handle's own
    -- transfer thread (the blocking engine's), where step() and wait() only
    -- look at what the thread received
    local function session(opts, share)
      opts = opts or {}
      opts.transfer_thread = threaded
      return core.session(opts, share)
    end
    describe("start and step" .. (threaded and ", on a transfer thread" or ""), function()
      local function slow(ms) return { ["X-Emu-Fault"] = emu.fault{ delay_ms = ms } } end
      local function drive(s)
        local steps = 0
        while true do
          local res, hint = s:step()
          if res ~= false then return res, hint, steps end
          assert.is_true(hint == nil or hint >= 0)
          steps = steps + 1
          assert.is_true(steps < 1e6, "the transfer never ended")
          if threaded then s:wait(0.05) end -- a step does no work of its own here
        end
      end

      it("gives the same response as request(), over the same reused connection", function()
        emu.reset()
        local s = session()
        assert.is_false(s:busy())
        assert.is_true(s:start{ url = emu.http .. "/_emu/echo", query = { a = "1" }, json = { x = 1 } })
        assert.is_true(s:busy())
        local res = drive(s)
        assert.is_false(s:busy())
        assert.equal(200, res.status)
        assert.equal("POST", res.body.method)
        assert.same({ x = 1 }, core.json_decode(res.body.body))
        assert.equal("1", res.body.query.a)
        assert(s:request{ url = emu.http .. "/_emu/echo" })
        assert.equal(1, emu.stats().connections)
        s:close()
      end)

      it("does not wait for a slow answer: step() returns false at once meanwhile", function()
        local s = session()
        assert(s:start{ url = emu.http .. "/_emu/echo", headers = slow(300) })
        local t0 = core.now()
        assert.is_false((s:step()))
        assert.is_true(core.now() - t0 < 0.1)
        local res = drive(s)
        assert.equal(200, res.status)
        s:close()
      end)

      it("reports errors as request() does: nil and a structured error", function()
        local s = session{ timeout = 0.2 }
        assert(s:start{ url = emu.http .. "/_emu/echo", headers = slow(2000) })
        local res, err = drive(s)
        assert.is_nil(res)
        assert.equal("timeout", err.kind)
        assert(s:start{ url = emu.http .. "/nope" })
        res, err = drive(s)
        assert.is_nil(res)
        assert.equal(404, err.status)
        s:close()
      end)

      it("refuses a second transfer while one runs; cancel() ends it and the session goes on", function()
        local s = session()
        assert(s:start{ url = emu.http .. "/_emu/echo", headers = slow(300) })
        local ok, msg = pcall(s.start, s, { url = emu.http .. "/_emu/echo" })
        assert.is_false(ok)
        assert.matches("busy", msg)
        s:cancel()
        assert.is_false(s:busy())
        assert.has_error(function() s:step() end, "no transfer in progress (start one first)")
        assert.equal(200, assert(s:request{ url = emu.http .. "/_emu/echo" }).status)
        s:cancel() -- idempotent
        s:close()
      end)

      it("runs transfers of sessions opened together side by side, on their shared connections", function()
        emu.reset()
        local a = session()
        local b = session(nil, a)
        assert(a:start{ url = emu.http .. "/_emu/echo?n=1", headers = slow(200) })
        assert(b:start{ url = emu.http .. "/_emu/echo?n=2", headers = slow(200) })
        local got = {}
        while not (got.a and got.b) do
          -- either session's step moves both; each sees only its own result
          for name, s in pairs{ a = a, b = b } do
            if not got[name] then
              local res = s:step()
              if res ~= false then got[name] = res end
            end
          end
          if not (got.a and got.b) then a:wait(0.05) end
        end
        assert.equal("1", got.a.body.query.n)
        assert.equal("2", got.b.body.query.n)
        assert.equal(2, emu.stats().max_in_flight)
        assert.equal(2, emu.stats().connections)
        -- the shared cache keeps both connections: later requests open none
        assert(b:request{ url = emu.http .. "/_emu/echo" })
        assert(a:request{ url = emu.http .. "/_emu/echo" })
        assert.equal(2, emu.stats().connections)
        a:close() -- b keeps the multi handle alive
        assert(b:request{ url = emu.http .. "/_emu/echo" })
        b:close()
        assert.has_error(function() session(nil, b) end)
      end)

      it("frees a transfer in progress when closed or collected", function()
        local s = session()
        assert(s:start{ url = emu.http .. "/_emu/echo", headers = slow(300) })
        s:close()
        s:close()
        assert.has_error(function() s:step() end, "attempt to use a closed userlist session")
        s = session()
        assert(s:start{ url = emu.http .. "/_emu/echo", headers = slow(300) })
        s = nil -- luacheck: ignore
        collectgarbage()
        collectgarbage()
      end)
    end)
  end

  describe("a transfer thread", function()
    it("receives a body larger than the socket buffers while Lua makes no core call", function()
      -- in a child process: a 48 MiB string leaves Lua 5.4's collector
      -- pacing a process's later cycles on it, which the million-user
      -- listings' memory bounds would then measure
      local lua = assert(os.getenv("USERLIST_LUA"), "USERLIST_LUA unset: run through spec/run.sh")
      local script = [[
        local core = require "userlist.core"
        local emu = require "support.emu"
        emu.reset()
        local n = 48 * 1024 * 1024 -- more than the socket buffers can hold
        local s = core.session{ transfer_thread = true }
        assert(s:start{ url = emu.http .. "/_emu/big?bytes=" .. n, decode = false })
        assert(s:step() == false) -- what the caller's step would send, were there no thread
        -- the emulator ends the request once its last byte is in the socket
        -- buffers, so only after most of the body was read, while nothing
        -- drives this session (the control API has its own). Unthreaded,
        -- it would not end (on a new connection, not even be sent).
        local st = emu.until_stats(function(t) return t.requests == 1 and t.in_flight == 0 end)
        local res = s:step()
        while res == false do -- the rest of the buffered bytes
          s:wait(1)
          res = s:step()
        end
        io.write(st.requests, " ", st.in_flight, " ", res.status, " ", #res.body - n)
        s:close()
      ]]
      local path = os.tmpname()
      local w = assert(io.open(path, "w"))
      w:write(script)
      w:close()
      local f = io.popen(emu.child_env .. " " .. lua .. " " .. path .. " 2>&1")
      local out = f:read("*a")
      f:close()
      os.remove(path)
      assert.equal("1 0 200 0", out)
    end)

    it("wakes wait() when a transfer ends, well before its seconds pass", function()
      local s = core.session{ transfer_thread = true }
      local slow = { ["X-Emu-Fault"] = emu.fault{ delay_ms = 100 } }
      assert(s:start{ url = emu.http .. "/_emu/echo", headers = slow })
      assert.is_false((s:step()))
      local t0 = core.now()
      s:wait(60)
      assert.is_true(core.now() - t0 < 30)
      assert.equal(200, s:step().status)
      s:close()
    end)

    it("is stopped by the last session of its multi handle, with transfers in flight", function()
      local a = core.session{ transfer_thread = true }
      local b = core.session(nil, a)
      local slow = { ["X-Emu-Fault"] = emu.fault{ delay_ms = 300 } }
      assert(a:start{ url = emu.http .. "/_emu/echo?n=1", headers = slow })
      assert(b:start{ url = emu.http .. "/_emu/echo?n=2", headers = slow })
      a:close() -- b's transfer goes on, on the same thread
      local res = b:step()
      while res == false do
        b:wait(1)
        res = b:step()
      end
      assert.equal("2", res.body.query.n)
      assert(b:start{ url = emu.http .. "/_emu/echo", headers = slow })
      b:close() -- the last one: stops and joins the thread mid-transfer
      assert.has_error(function() b:step() end, "attempt to use a closed userlist session")
    end)
  end)
end)
