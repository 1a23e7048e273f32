-- Long lines: errors, events and the userlist command's lines built from
-- 4 KiB messages, URLs, headers, codes and ids come out whole, on one line,
-- with nothing else in them. tostring(err) (csrc/error.c) once read fields
-- onto the stack inside an open luaL_Buffer: past the buffer's first box
-- (LUAL_BUFFERSIZE) that gave garbage on Lua 5.4 and LuaJIT, and a
-- heap-use-after-free under ASan. The suite's ASan and valgrind runs go
-- through every path here.
local userlist = require "userlist"
local core = require "userlist.core"
local emu = require "support.emu"
local socket = require "socket"

local lua = assert(os.getenv("USERLIST_LUA"), "USERLIST_LUA is unset: run the specs with make test")

-- A text of n bytes that shows where it was cut or shifted: "<tag>-" then
-- hex digits (all unreserved in a URL), so that a misplaced or repeated
-- piece does not match.
local function long(tag, n)
  local s = tag .. "-" .. ("0123456789abcdef"):rep(math.ceil(n / 16))
  return s:sub(1, n)
end

local K4 = 4096
-- Keys as long as real ones (the emulator's own are short); the faults below
-- answer before any key check.
local ARTHUR_KEY = "arthur_" .. ("7f3a9c2e5b1d4860"):rep(4)
local USERTOUR_KEY = "ak_" .. ("c0ffee42deadbeef"):rep(3)

-- What tostring does to a field: one line.
local function one_line(s) return (s:gsub("[\r\n]", " ")) end

local function esc(s) return (s:gsub("%p", "%%%0")) end

-- 40 task ids of 100 bytes: the URL of a listing passes 4 KiB.
local TASKS = {}
for i = 1, 40 do TASKS[i] = long(("task-%02d"):format(i), 100) end
local function task_query(ids)
  return "page=0&page_size=1000&task_ids=" .. table.concat(ids, "&task_ids=")
end
local ARTHUR_PATH = "/api/v1/traces/users"

-- A loopback port with nothing listening: one just bound and closed.
local function closed_url()
  local s = assert(socket.tcp())
  assert(s:bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return "http://127.0.0.1:" .. port, port
end

-- Lists everything; returns the raised value (nil when it ended normally),
-- the rows and the events.
local function walk(new, opts, query)
  local events, rows, waits = {}, {}, {}
  opts.on_event = function(ev) events[#events + 1] = ev end
  opts.sleep = function(s) waits[#waits + 1] = s end
  opts.concurrency = opts.concurrency or 1
  local c = new(opts)
  local ok, err = pcall(function()
    for u in c:users(query) do rows[#rows + 1] = u end
  end)
  c:close()
  return (not ok) and err or nil, rows, events, waits
end

-- The emulator's log entry for the request with this path and query.
local function logged(path, args)
  for _, r in ipairs(emu.requests()) do
    if r.uri == path and r.args == args then return r end
  end
end

describe("long lines", function()
  before_each(function() emu.reset() end)

  describe("tostring of an error value", function()
    it("holds a 4 KiB provider, code, message and url whole, on one line", function()
      local provider, code = long("provider", K4), long("code", K4)
      local message = long("message", 2048) .. "\n" .. long("next line", 2048) .. "\r\n"
      local url = "https://x.example" .. ARTHUR_PATH .. "?" .. long("q", K4)
      local err = core.error{ kind = "http", status = 400, provider = provider, code = code,
                              message = message, method = "GET", url = url }
      assert.equal("userlist: " .. provider .. " http 400 " .. code .. ": " .. one_line(message)
        .. " (GET " .. url .. ")", tostring(err))
      -- the value is left as it was: a second rendering is the same line
      assert.equal(message, err.message)
      assert.equal(tostring(err), tostring(err))
    end)

    it("renders the issue's case: a 600-byte message and a URL of 60 task ids", function()
      local url = "https://x/api/v1/traces/users?" .. ("task_ids=abcdefgh&"):rep(60)
      local err = core.error{ kind = "http", status = 400, message = ("m"):rep(600), method = "GET",
                              url = url }
      assert.equal("userlist: http 400: " .. ("m"):rep(600) .. " (GET " .. url .. ")", tostring(err))
    end)

    it("shows numeric fields as text and no '(...)' without a string url, next to a long message", function()
      local message = long("m", 3 * K4)
      local err = core.error{ kind = "api", status = 200, code = 1007, message = message, method = "GET" }
      assert.equal("userlist: api 200 1007: " .. message, tostring(err))
      err.url = 42
      assert.equal("userlist: api 200 1007: " .. message, tostring(err))
    end)

    it("holds a decode error's message and 4 KiB URL, with the key out of both", function()
      local url = "https://x.example/v1?" .. long("q", K4)
      local body = '{"users": [' .. long("row", K4) .. ' ' .. ARTHUR_KEY .. ' oops'
      local value, err = core.decode_body(body, "GET", url, ARTHUR_KEY)
      assert.is_nil(value)
      assert.equal("decode", err.kind)
      assert.matches("^invalid JSON at byte %d+: .* near '.*'$", err.message)
      assert.equal("userlist: decode: " .. err.message .. " (GET " .. url .. ")", tostring(err))
      assert.is_nil(tostring(err):find(ARTHUR_KEY, 1, true))
    end)
  end)

  describe("a listing's error", function()
    it("Arthur, 40 long task ids, nothing listening: the network error names the whole URL", function()
      local base, port = closed_url()
      local err = walk(userlist.arthur, { api_key = ARTHUR_KEY, base_url = base, max_retries = 0 },
        { task_ids = TASKS })
      assert.is_true(userlist.is_error(err), tostring(err))
      assert.equal("network", err.kind)
      local url = base .. ARTHUR_PATH .. "?" .. task_query(TASKS)
      assert.equal(url, err.url)
      assert.matches("^Failed to connect to 127%.0%.0%.1 port " .. port .. " after %d+ ms: ", err.message)
      assert.equal("userlist: arthur network: " .. err.message .. " (GET " .. url .. ")", tostring(err))
    end)

    it("Arthur's 400 with a 4 KiB detail and a 4 KiB header, for a 4 KiB URL", function()
      local detail = long("detail", K4) .. "\nsecond line with the key " .. ARTHUR_KEY
      local request_id, trace = long("rid", K4), long("trace", K4)
      emu.faults(ARTHUR_PATH, { { status = 400, headers = { ["X-Request-Id"] = request_id },
                                  body = core.json_encode{ detail = detail } } })
      local err = walk(userlist.arthur, { api_key = ARTHUR_KEY, base_url = emu.http, max_retries = 0,
                                          headers = { ["X-Trace"] = trace } }, { task_ids = TASKS })
      assert.is_true(userlist.is_error(err), tostring(err))
      local url = emu.http .. ARTHUR_PATH .. "?" .. task_query(TASKS)
      local shown = one_line((detail:gsub(esc(ARTHUR_KEY), "[REDACTED]")))
      assert.equal("userlist: arthur http 400: " .. shown .. " (GET " .. url .. ")", tostring(err))
      assert.equal(request_id, err.headers["x-request-id"])
      -- the server got that URL and the 4 KiB request header
      local r = assert(logged(ARTHUR_PATH, task_query(TASKS)), "request not in the emulator's log")
      assert.equal(trace, r.headers["x-trace"])
    end)

    it("Usertour's 400 with a 4 KiB code and message", function()
      local code, message = long("E9", K4), long("usertour says", K4)
      emu.faults("/v1/users", { { status = 400, body = core.json_encode{ error = {
        code = code, message = message, doc_url = "https://docs.usertour.io" } } } })
      local err = walk(userlist.usertour, { api_key = USERTOUR_KEY, base_url = emu.http, max_retries = 0 },
        { limit = 100 })
      assert.is_true(userlist.is_error(err), tostring(err))
      assert.equal("userlist: usertour http 400 " .. code .. ": " .. message .. " (GET " .. emu.http
        .. "/v1/users?limit=100)", tostring(err))
    end)
  end)

  describe("events", function()
    it("carry a 4 KiB URL whole through on_event, on every try", function()
      local prefix = "/" .. long("base", K4)
      local base = emu.http .. prefix
      local detail = long("overloaded", K4)
      local fault = { status = 503, body = core.json_encode{ detail = detail } }
      emu.faults(prefix, { fault, fault })
      local err, _, events, waits = walk(userlist.arthur,
        { api_key = ARTHUR_KEY, base_url = base, max_retries = 1 }, { task_ids = { "task-1" } })
      assert.is_true(userlist.is_error(err), tostring(err))
      local url = base .. ARTHUR_PATH
      local seen = {}
      for i, ev in ipairs(events) do
        assert.equal("GET", ev.method)
        assert.equal("arthur", ev.provider)
        assert.equal(url, ev.url, "event " .. i .. " (" .. tostring(ev.type) .. ")")
        seen[i] = ev.type
      end
      assert.same({ "request", "response", "retry", "wait", "request", "response" }, seen)
      assert.equal(503, events[2].status)
      assert.equal(1, #waits)
      assert.equal("userlist: arthur http 503: " .. detail .. " (GET " .. url .. "?page=0&page_size=1000"
        .. "&task_ids=task-1)", tostring(err))
    end)
  end)

  describe("the userlist command", function()
    -- Runs bin/userlist with ARGS (shell-quoted) and Arthur's key; returns
    -- status, stdout, stderr.
    local function run(args)
      local out, errf = os.tmpname(), os.tmpname()
      local cmd = ("env -u USERLIST_PROGRESS -u COLUMNS %s ARTHUR_API_KEY=%s %s bin/userlist %s >%s 2>%s"
        .. " </dev/null; echo $?"):format(emu.child_env, ARTHUR_KEY, lua, args, out, errf)
      local p = assert(io.popen(cmd))
      local status = tonumber(p:read("*a"):match("(%d+)%s*$"))
      p:close()
      local texts = {}
      for i, path in ipairs{ out, errf } do
        local f = assert(io.open(path))
        texts[i] = f:read("*a")
        f:close()
        os.remove(path)
      end
      return status, texts[1], texts[2]
    end

    local TASK_ARGS = "--task-id " .. table.concat(TASKS, " --task-id ")

    it("prints a 400's 4 KiB detail and the 4 KiB URL as its one error line", function()
      local detail = long("detail", K4) .. "\r\nmore"
      emu.faults(ARTHUR_PATH, { { status = 400, body = core.json_encode{ detail = detail } } })
      local status, out, err = run("arthur --base-url " .. emu.http .. " " .. TASK_ARGS
        .. " --max-retries 0 --concurrency 1")
      assert.equal(1, status, err)
      assert.equal("", out)
      assert.equal("userlist: arthur http 400: " .. one_line(detail) .. " (GET " .. emu.http .. ARTHUR_PATH
        .. "?" .. task_query(TASKS) .. ")\n", err)
    end)

    it("prints a refused connection's network error with the whole URL on one line", function()
      local base, port = closed_url()
      local status, out, err = run("arthur --base-url " .. base .. " " .. TASK_ARGS .. " --max-retries 0")
      assert.equal(1, status, err)
      assert.equal("", out)
      local message = err:match("^userlist: arthur network: (Failed to connect to 127%.0%.0%.1 port "
        .. port .. " after %d+ ms: [^\n]-) %(GET ")
      assert.is_string(message, err)
      assert.equal("userlist: arthur network: " .. message .. " (GET " .. base .. ARTHUR_PATH .. "?"
        .. task_query(TASKS) .. ")\n", err)
    end)

    it("writes 4 KiB user ids whole in its CSV lines", function()
      local a, b = long("user-a", K4), long("user-b", K4)
      local rows = {}
      for i, id in ipairs{ a, b } do
        rows[i] = core.json_encode{ user_id = id, task_id = "task-1", trace_count = i }
      end
      emu.faults(ARTHUR_PATH, { { body = '{"count":2,"display_currency":"USD","users":['
        .. table.concat(rows, ",") .. "]}" } })
      local status, out, err = run("arthur --base-url " .. emu.http .. " --task-id task-1"
        .. " --concurrency 1 --format csv --fields id,task_id,requests")
      assert.equal(0, status, err)
      assert.equal("id,task_id,requests\n" .. a .. ",task-1,1\n" .. b .. ",task-1,2\n", out)
      assert.equal("", err)
    end)
  end)
end)
