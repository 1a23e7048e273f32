-- The request primitive over real HTTP to the emulator's echo endpoint.
local core = require "userlist.core"
local emu = require "support.emu"

local function echo(req)
  local s = core.session()
  req.url = req.url or (emu.http .. "/_emu/echo")
  local res, err = s:request(req)
  s:close()
  assert(res, err and tostring(err))
  return res.body, res
end

describe("session:request", function()
  before_each(function() emu.reset() end)

  it("sends GET by default and returns status, lower-cased headers and the decoded body", function()
    local body, res = echo{}
    assert.equal(200, res.status)
    assert.equal("GET", body.method)
    assert.equal("/_emu/echo", body.uri)
    assert.matches("application/json", res.headers["content-type"])
    assert.is_nil(res.headers["Content-Type"])
    assert.equal("number", type(res.bytes))
  end)

  it("escapes query keys and values with libcurl and repeats array values as keys", function()
    local body = echo{ query = {
      task_ids = { "a", "b,c", "d&e" },
      email = "a+b@example.com",
      q = "é ?#=/",
      n = 25, f = 0.5, yes = true, no = false,
      empty = {},
    } }
    -- sorted keys, one repeated key per array element, everything escaped
    assert.equal("email=a%2Bb%40example.com&f=0.5&n=25&no=false&q=%C3%A9%20%3F%23%3D%2F"
      .. "&task_ids=a&task_ids=b%2Cc&task_ids=d%26e&yes=true", body.args:gsub("%%%x%x", string.upper))
    assert.same({ "a", "b,c", "d&e" }, body.query.task_ids)
    assert.equal("a+b@example.com", body.query.email)
    assert.equal("é ?#=/", body.query.q)
    assert.is_nil(body.query.empty)
  end)

  it("keeps a query the URL already has and appends the new pairs", function()
    local body = echo{ url = emu.http .. "/_emu/echo?cursor=abc&expand%5B%5D=companies",
      query = { limit = 2 } }
    assert.equal("cursor=abc&expand%5B%5D=companies&limit=2", body.args)
  end)

  it("builds Authorization: Bearer <key> and the userlist User-Agent", function()
    local body = echo{ api_key = "sk-test-123" }
    assert.equal("Bearer sk-test-123", body.headers.authorization)
    assert.equal(core.user_agent, body.headers["user-agent"])
    assert.equal("application/json", body.headers.accept)
  end)

  it("sends caller headers", function()
    local body = echo{ headers = { ["X-Trace-Id"] = "t-1", ["X-Count"] = 3 } }
    assert.equal("t-1", body.headers["x-trace-id"])
    assert.equal("3", body.headers["x-count"])
  end)

  it("encodes a json body with the private cjson and sets Content-Type", function()
    local body = echo{ json = { userIds = { "u1", "u2" }, timeFilter = { startTimeUnixSeconds = 1000 } } }
    assert.equal("POST", body.method)
    assert.equal("application/json", body.headers["content-type"])
    assert.same({ userIds = { "u1", "u2" }, timeFilter = { startTimeUnixSeconds = 1000 } },
      core.json_decode(body.body))
  end)

  it("sends an empty JSON object as {}", function()
    local body = echo{ method = "POST", json = {} }
    assert.equal("{}", body.body)
  end)

  it("sends other methods and raw bodies", function()
    assert.equal("DELETE", echo{ method = "DELETE" }.method)
    local body = echo{ method = "PUT", body = "raw text", headers = { ["Content-Type"] = "text/plain" } }
    assert.equal("PUT", body.method)
    assert.equal("raw text", body.body)
  end)

  it("returns the raw body when decode = false", function()
    local s = core.session()
    local res = assert(s:request{ url = emu.http .. "/_emu/echo", decode = false })
    assert.equal("string", type(res.body))
    assert.matches('"method":"GET"', res.body)
    s:close()
  end)

  describe("refuses before anything is sent", function()
    local function refused(req, pattern)
      local before = emu.stats().requests
      local s = core.session()
      req.url = req.url or (emu.http .. "/_emu/echo")
      local res, err = s:request(req)
      s:close()
      assert.is_nil(res)
      assert.equal("invalid", err.kind)
      assert.matches(pattern, err.message)
      assert.equal(before, emu.stats().requests)
      return err
    end

    it("a key holding CR, LF or NUL", function()
      for _, k in ipairs{ "k\r\nX-Evil: 1", "k\nx", "k\0x" } do
        local err = refused({ api_key = k }, "api_key contains CR, LF or NUL")
        assert.not_matches("X%-Evil", tostring(err))
      end
    end)

    it("a header value holding CR, LF or NUL", function()
      refused({ headers = { ["X-A"] = "v\r\nX-Evil: 1" } }, "header value")
      refused({ headers = { ["X-A"] = "v\0" } }, "header value")
    end)

    it("a header name that is not a token", function()
      refused({ headers = { ["X A"] = "v" } }, "header name")
    end)

    it("a key over plain http to a non-loopback host", function()
      -- example.invalid never resolves: the refusal must come before any lookup
      local err = refused({ url = "http://example.invalid/v1/users", api_key = "secret-key" },
        "plain http")
      assert.not_matches("secret%-key", tostring(err))
    end)

    it("a non-http scheme and credentials inside the URL", function()
      refused({ url = "ftp://127.0.0.1/x" }, "scheme")
      refused({ url = "http://user:pw@127.0.0.1/x" }, "credentials")
      refused({ url = "http://127.0.0.1/a b" }, "space")
      refused({ url = "not a url" }, "")
    end)
  end)

  it("allows a key over plain http to a non-loopback host only when the caller opts in", function()
    local s = core.session{ allow_insecure_http = true, connect_timeout = 0.5 }
    local _, err = s:request{ url = "http://example.invalid/x", api_key = "k" }
    s:close()
    -- it tried (and could not resolve the name): the guard let it through
    assert.equal("network", err.kind)
  end)

  describe("raises naming the argument for programmer mistakes", function()
    local s = core.session()
    local cases = {
      { "request table", function() s:request("http://x") end, "bad argument #1" },
      { "url", function() s:request{ url = 1 } end, "'url'" },
      { "method", function() s:request{ url = "http://x/", method = {} } end, "'method'" },
      { "query", function() s:request{ url = "http://x/", query = "a=b" } end, "'query'" },
      { "query value", function() s:request{ url = "http://x/", query = { a = {} , b = print } } end, "'b'" },
      { "query key", function() s:request{ url = "http://x/", query = { [1] = "x" } } end, "query key" },
      { "headers", function() s:request{ url = "http://x/", headers = "x" } end, "'headers'" },
      { "api_key", function() s:request{ url = "http://x/", api_key = 5 } end, "'api_key'" },
      { "body", function() s:request{ url = "http://x/", body = {} } end, "'body'" },
      { "json", function() s:request{ url = "http://x/", json = { f = print } } end, "'json'" },
      { "decode", function() s:request{ url = "http://x/", decode = "yes" } end, "'decode'" },
      { "timeout", function() s:request{ url = "http://x/", timeout = -1 } end, "'timeout'" },
      { "Authorization with api_key", function()
          s:request{ url = "http://x/", api_key = "k", headers = { authorization = "x" } } end, "api_key" },
    }
    for _, c in ipairs(cases) do
      it(c[1], function()
        local ok, err = pcall(c[2])
        assert.is_false(ok)
        assert.matches(c[3], err, 1, true)
      end)
    end
  end)
end)
