-- The userlist command (bin/userlist, userlist.cli), run as a user runs it:
-- a child process of the Lua under test, against the emulator, with its
-- exit status, stdout and stderr apart; and in a terminal under tmux for
-- the progress line and the chart.
local emu = require "support.emu"
local core = require "userlist.core"
local cli = require "userlist.cli"
local userlist = require "userlist"

local lua = assert(os.getenv("USERLIST_LUA"), "USERLIST_LUA is unset: run the specs with make test")

local KEYS = ("HELICONE_API_KEY=%s OPENLAYER_API_KEY=%s ARTHUR_API_KEY=%s USERTOUR_API_KEY=%s")
  :format(emu.keys.helicone, emu.keys.openlayer, emu.keys.arthur, emu.keys.usertour)
local PIPELINE = "3fa85f64-5717-4562-b3fc-2c963f66afa6"

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function slurp(path)
  local f = assert(io.open(path))
  local s = f:read("*a")
  f:close()
  os.remove(path)
  return s
end

-- Runs `userlist ARGS` (a shell-quoted string) with the emulator's keys
-- (unless env says otherwise); returns status, stdout, stderr.
local function run(args, env)
  local out, err = os.tmpname(), os.tmpname()
  local cmd = ("env -u USERLIST_PROGRESS -u COLUMNS %s %s %s %s bin/userlist %s >%s 2>%s </dev/null; echo $?")
    :format(emu.child_env, KEYS, env or "", lua, args, out, err)
  local p = assert(io.popen(cmd))
  local status = tonumber(p:read("*a"):match("(%d+)%s*$"))
  p:close()
  return status, slurp(out), slurp(err)
end

-- Runs `userlist ARGS` with stdout appended to the file `path` (>>), as a
-- user continues a --resume listing; returns status, stderr.
local function run_append(args, path, env)
  local err = os.tmpname()
  local cmd = ("env -u USERLIST_PROGRESS -u COLUMNS %s %s %s %s bin/userlist %s >>%s 2>%s </dev/null;"
    .. " echo $?"):format(emu.child_env, KEYS, env or "", lua, args, q(path), err)
  local p = assert(io.popen(cmd))
  local status = tonumber(p:read("*a"):match("(%d+)%s*$"))
  p:close()
  return status, slurp(err)
end

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

local function read(path)
  local f = assert(io.open(path))
  local s = f:read("*a")
  f:close()
  return s
end

local function write(path, s)
  local f = assert(io.open(path, "w"))
  f:write(s)
  f:close()
end

-- A fresh path for a --resume file or an output (no file there yet).
local function scratch()
  local path = os.tmpname()
  os.remove(path)
  return path
end

local function lines(s)
  local t = {}
  for l in s:gmatch("([^\n]*)\n") do t[#t + 1] = l end
  return t
end

local function no_keys(...)
  for _, text in ipairs{ ... } do
    for name, key in pairs(emu.keys) do assert.is_nil(text:find(key, 1, true), name .. " key shown") end
  end
end

local E = emu.http

describe("userlist command", function()
  before_each(function() emu.reset() end)

  describe("help and usage", function()
    it("--help lists the providers, the keys and the exit codes, and exits 0", function()
      local status, out, err = run("--help")
      assert.equal(0, status, err)
      for _, p in ipairs{ "helicone", "openlayer", "arthur", "usertour", "HELICONE_API_KEY",
                          "ARTHUR_BASE_URL", "Exit status" } do
        assert.matches(p, out, 1, true)
      end
      assert.equal("", err)
    end)

    for name, def in pairs(cli.PROVIDERS) do
      it(name .. " --help shows its own filters and key, without the key's value", function()
        local status, out = run(name .. " --help")
        assert.equal(0, status)
        assert.matches("Usage: userlist " .. name, out, 1, true)
        assert.matches(def.env, out, 1, true)
        for _, o in ipairs(def.options) do assert.matches(o[1], out, 1, true) end
        for _, o in ipairs{ "--format", "--fields", "--top", "--by", "--base-url" } do
          assert.matches(o, out, 1, true)
        end
        no_keys(out)
      end)
    end

    it("--version names the version", function()
      local status, out = run("--version")
      assert.equal(0, status)
      assert.matches("userlist " .. userlist.version, out, 1, true)
    end)

    local usage = {
      { "", "command is required" },
      { "nope", "unknown command 'nope'" },
      { "helicone --bogus", "unknown option '--bogus'" },
      { "helicone --limit ten", "--limit: 'ten' is not a whole number" },
      { "helicone --top 0", "--top: '0' must be at least 1" },
      { "helicone --format xml", "--format" },
      { "helicone --since yesterday", "--since: 'yesterday' is not a time" },
      { "helicone --sort cost:up", "--sort: 'cost:up'" },
      { "helicone --by cost", "--by goes with --top N" },
      { "usertour --top 3", "usertour users have no cost, tokens or requests" },
      { "openlayer --where records", "--where: 'records' is not" },
      { "helicone --header nocolon", "--header: 'nocolon'" },
    }
    for _, case in ipairs(usage) do
      it(("'userlist %s' is a usage error: exit 2, no request"):format(case[1]), function()
        local status, out, err = run(case[1] == "" and "" or (case[1] .. " --base-url " .. E))
        assert.equal(2, status, err)
        assert.equal("", out)
        assert.matches(case[2], err, 1, true)
        assert.matches("Try 'userlist", err, 1, true)
        assert.equal(0, emu.stats().requests)
      end)
    end

    it("a missing key names the variable to set, and exits 2", function()
      local status, out, err = run("helicone --base-url " .. E, "HELICONE_API_KEY=")
      assert.equal(2, status)
      assert.equal("", out)
      assert.matches("set HELICONE_API_KEY", err, 1, true)
      local s2, _, err2 = run("arthur --task-id task-1", "ARTHUR_BASE_URL=")
      assert.equal(2, s2)
      assert.matches("--base-url or set ARTHUR_BASE_URL", err2, 1, true)
    end)

    it("ARTHUR_BASE_URL is read from the environment", function()
      local status, out, err = run("arthur --task-id task-1 --max-pages 1 --page-size 2 --format csv"
        .. " --fields id", "ARTHUR_BASE_URL=" .. E)
      assert.equal(0, status, err)
      -- newest first, the server's default; user 250 has no row in task-1
      assert.same({ "id", "user-0000249", "user-0000246" }, lines(out))
    end)

    it("a query the provider refuses is a usage error naming the field, before any request", function()
      local status, out, err = run("helicone --base-url " .. E .. " --limit 5000")
      assert.equal(2, status)
      assert.equal("", out)
      assert.matches("'limit' must be between 1 and 1000, got 5000", err, 1, true)
      assert.equal(0, emu.stats().requests)
      status, out, err = run("openlayer --base-url " .. E .. "/v1")
      assert.equal("", out)
      assert.equal(2, status)
      assert.matches("'pipeline_id' is required", err, 1, true)
    end)
  end)

  describe("API and network errors", function()
    it("a wrong key: exit 1, the error's one line on stderr, no key shown", function()
      local status, out, err = run("helicone --base-url " .. E, "HELICONE_API_KEY=sk-wrong-secret-key")
      assert.equal(1, status)
      assert.equal("", out)
      assert.equal(1, #lines(err))
      assert.matches("^userlist: helicone http 401 isAuthenticated.error: Invalid API key %(POST "
        .. E:gsub("%p", "%%%0"), err)
      assert.is_nil(err:find("sk-wrong-secret-key", 1, true))
    end)

    it("a server that keeps failing: exit 1 after the retries", function()
      emu.faults("/api/v1/traces/users", { { status = 503 }, { status = 503 } })
      -- one page at a time, so the queued failures go to the first page
      local status, _, err = run("arthur --base-url " .. E
        .. " --task-id task-1 --max-retries 1 --concurrency 1")
      assert.equal(1, status)
      assert.matches("^userlist: arthur http 503", err)
      assert.equal(2, emu.stats().requests)
    end)

    it("nothing listening: a network error, exit 1", function()
      local status, _, err = run("usertour --base-url http://127.0.0.1:1 --max-retries 0")
      assert.equal(1, status)
      assert.matches("^userlist: usertour network", err)
    end)

    it("a field it cannot read: the rows, one warning line on stderr, exit 0; --strict: exit 1",
      function()
        local page = { body = '{"items":[{"id":"u1","dateOfFirstRecord":"string","records":2},'
          .. '{"id":"u2","dateOfFirstRecord":"string","records":3}]}' }
        local path = "/v1/inference-pipelines/" .. PIPELINE .. "/users"
        local args = "openlayer --base-url " .. E .. "/v1 --pipeline-id " .. PIPELINE
          .. " --format csv --fields id,requests,first_seen --concurrency 1"
        emu.faults(path, { page })
        local status, out, err = run(args)
        assert.equal(0, status, err)
        assert.same({ "id,requests,first_seen", "u1,2,", "u2,3," }, lines(out))
        assert.same({ "userlist: openlayer warning: items[1] field 'dateOfFirstRecord' is not an ISO 8601 "
          .. "time (a string): the common field is left out and the row keeps the value as sent "
          .. "(this listing warns once per field; strict = true makes it an error)" }, lines(err))
        emu.reset()
        emu.faults(path, { page })
        status, out, err = run(args .. " --strict")
        assert.equal(1, status)
        assert.equal("", out) -- the first page failed: no rows, no header
        assert.same({ "userlist: openlayer decode: items[1] field 'dateOfFirstRecord' is not an ISO 8601 "
          .. "time (a string) (POST " .. E .. path .. ")" }, lines(err))
      end)

    it("a listing that fails midway prints the rows it got, then the error", function()
      emu.faults("/v1/users", { {}, { status = 500 } })
      local status, out, err = run("usertour --base-url " .. E .. " --limit 2 --max-retries 0 --format csv"
        .. " --fields id")
      assert.equal(1, status)
      assert.same({ "id", "user-0000001", "user-0000002" }, lines(out))
      assert.matches("usertour http 500", err, 1, true)
    end)
  end)

  describe("--resume FILE", function()
    local file, out
    before_each(function() file, out = scratch(), scratch() end)
    after_each(function()
      os.remove(file)
      os.remove(file .. ".tmp")
      os.remove(out)
    end)

    -- the rows a listing gives in one run, without --resume
    local function reference(args)
      local status, all, err = run(args)
      assert.equal(0, status, err)
      return all
    end

    it("--help says how: FILE, run the same command again, append the output (>>)", function()
      local status, help = run("usertour --help")
      assert.equal(0, status)
      assert.matches("--resume <file>", help, 1, true)
      assert.matches("--resume <file> continues an interrupted listing", help, 1, true)
      assert.matches(">>", help, 1, true)
      assert.matches("run the same command", help, 1, true)
      assert.matches("130 interrupted", help, 1, true)
    end)

    it("--since 7d: FILE keeps the now it was taken from, so the next run, hours later, is the same query",
    function()
      local function main(args, clock, path)
        local o, e = assert(io.open(path, "ab")), assert(io.open(path .. ".err", "wb"))
        local argv = {}
        for a in args:gmatch("%S+") do argv[#argv + 1] = a end
        local status = cli.main(argv, { out = o, err = e, time = function() return clock end,
          getenv = function(k) return k == "HELICONE_API_KEY" and emu.keys.helicone or nil end,
          stderr_tty = false, stdout_tty = false })
        o:close()
        e:close()
        return status, slurp(path .. ".err")
      end
      local T = 1764720000 -- 2025-12-03: 400 days after it, every emulated user was active
      local args = "helicone --base-url " .. E .. " --since 400d --limit 25 --max-retries 0 --concurrency 1"
        .. " --format csv --fields id --resume " .. file
      local function windows()
        local t = {}
        for _, r in ipairs(emu.requests()) do
          if r.uri == "/v1/user/metrics/query" then
            t[#t + 1] = require("userlist.core").json_decode(r.body).timeFilter.startTimeUnixSeconds
          end
        end
        return t
      end
      emu.reset()
      emu.faults("/v1/user/metrics/query", { {}, { status = 500 } })
      local status, err = main(args, T, out)
      assert.equal(1, status, err)
      local held = read(file)
      local token, now = held:match("^(%S+)\nnow (%d+)\n$")
      assert.is_string(token, held)
      assert.equal(T, tonumber(now))
      local first = windows()
      -- three hours later: 400d is another time now, but not for this listing
      status, err = main(args, T + 3 * 3600, out)
      assert.equal(0, status, err)
      assert.matches("continuing from", err, 1, true)
      assert.is_false(exists(file))
      local all = windows()
      assert.equal(T - 400 * 86400, first[1])
      for _, w in ipairs(all) do assert.equal(first[1], w) end
      local rows = lines(slurp(out))
      assert.equal("id", rows[1])
      assert.equal(251, #rows) -- the header, then the 250 users once
      os.remove(out .. ".err")
    end)

    it("a listing cut by an error keeps FILE; the same command again appends the rest, once", function()
      local args = "usertour --base-url " .. E .. " --limit 20 --max-retries 0 --concurrency 1 --format csv"
        .. " --fields id,email"
      local all = reference(args)
      assert.equal(251, #lines(all))
      -- pages 1 and 2 come, page 3 fails past the retries (none)
      emu.reset()
      emu.faults("/v1/users", { {}, {}, { status = 500 } })
      local status, err = run_append(args .. " --resume " .. q(file), out)
      assert.equal(1, status, err)
      local l = lines(err)
      assert.equal(2, #l, err)
      assert.matches("^userlist: usertour http 500", l[1])
      assert.equal(("userlist: run the same command again to continue from %s (40 users listed)")
        :format(file), l[2])
      assert.is_true(exists(file))
      local token = read(file):match("^(%S+)\n$")
      assert.same({ provider = "usertour", pages = 2, users = 40, done = false }, userlist.token_info(token))
      -- the rows of the pages done, with their header
      assert.equal(table.concat(lines(all), "\n", 1, 41) .. "\n", read(out))

      status, err = run_append(args .. " --resume " .. q(file), out)
      assert.equal(0, status, err)
      assert.equal(("userlist: continuing from %s: after 40 users, 2 pages\n"):format(file), err)
      -- every user once, in order, one header
      assert.equal(all, read(out))
      assert.is_false(exists(file))
      assert.is_false(exists(file .. ".tmp"))
      no_keys(token, err)
    end)

    it("a listing whose first page fails writes no header; the next run writes it once", function()
      local args = "arthur --base-url " .. E .. " --task-id task-1 --page-size 50 --max-retries 0"
        .. " --concurrency 1 --format csv --fields id,task_id"
      local all = reference(args)
      emu.reset()
      emu.faults("/api/v1/traces/users", { { status = 503 } })
      local status, err = run_append(args .. " --resume " .. q(file), out)
      assert.equal(1, status, err)
      assert.matches("continue from " .. file .. " (0 users listed)", err, 1, true)
      assert.equal("", read(out))
      status, err = run_append(args .. " --resume " .. q(file), out)
      assert.equal(0, status, err)
      assert.equal(all, read(out))
      assert.is_false(exists(file))
    end)

    it("--max-pages: a listing in batches, FILE kept between them, one table header", function()
      local args = "openlayer --base-url " .. E .. "/v1 --pipeline-id " .. PIPELINE
        .. " --per-page 25 --max-pages 4 --fields id,requests --resume " .. q(file)
      local batches = 0
      repeat
        batches = batches + 1
        local status, err = run_append(args, out)
        assert.equal(0, status, err)
        if batches < 3 then
          assert.is_true(exists(file), "kept after batch " .. batches)
          assert.matches(("userlist: stopped after --max-pages; %s holds where to continue"):format(file),
            err, 1, true)
          assert.equal(100 * batches, userlist.token_info(read(file):match("%S+")).users)
        end
        if batches > 1 then
          assert.matches(("^userlist: continuing from %s: after %d users, %d pages\n")
            :format(file:gsub("%p", "%%%0"), 100 * (batches - 1), 4 * (batches - 1)), err)
        end
      until not exists(file) or batches == 5
      assert.equal(3, batches) -- 100 + 100 + 50
      local l = lines(read(out))
      assert.equal(251, #l)
      assert.matches("^id%s+requests$", l[1])
      for i = 2, 251 do assert.matches(("^user%%-%07d%%s+%%d+$"):format(i - 1), l[i]) end
    end)

    it("a FILE of another query, or not a token, is a usage error naming FILE; FILE is left alone",
      function()
        local args = "helicone --base-url " .. E .. " --format csv --fields id --resume " .. q(file)
        local status, err = run_append(args .. " --limit 10 --max-pages 1", out)
        assert.equal(0, status, err)
        local token = read(file)
        emu.reset()
        -- another --limit is another listing
        status, err = run_append(args .. " --limit 20", out)
        assert.equal(2, status)
        assert.matches("'resume' belongs to another query", err, 1, true)
        assert.matches(("--resume %s: the file holds no resume token of this listing; remove it to start"
          .. " over"):format(file), err, 1, true)
        assert.equal(token, read(file))
        -- another provider's token
        status, err = run_append("usertour --base-url " .. E .. " --resume " .. q(file), out)
        assert.equal(2, status)
        assert.matches("^userlist: usertour invalid: 'resume' belongs to a[^\n]* helicone", err)
        assert.equal(11, #lines(read(out))) -- the first run's rows only
        for _, text in ipairs{ "not a token\n", "", token:sub(1, 40) .. "\n" } do
          write(file, text)
          status, err = run_append(args .. " --limit 10", out)
          assert.equal(2, status, err)
          assert.matches("userlist: helicone invalid: 'resume' ", err, 1, true)
          assert.matches("--resume " .. file .. ": ", err, 1, true)
          assert.matches("remove it to start over", err, 1, true)
          assert.equal(text, read(file))
        end
        assert.equal(0, emu.stats().requests)
        assert.equal(11, #lines(read(out)))
      end)

    it("with --top is a usage error (the top needs every user in one run)", function()
      local status, o, err = run("helicone --base-url " .. E .. " --top 5 --resume " .. q(file))
      assert.equal(2, status)
      assert.equal("", o)
      assert.matches("--resume does not go with --top", err, 1, true)
      assert.matches("Try 'userlist helicone --help'", err, 1, true)
      assert.is_false(exists(file))
      assert.equal(0, emu.stats().requests)
    end)

    it("a FILE that cannot be written is a usage error before any request", function()
      local status, _, err = run("usertour --base-url " .. E .. " --resume /nonexistent-dir/resume.token")
      assert.equal(2, status)
      assert.matches("--resume: cannot write /nonexistent-dir/resume.token.tmp", err, 1, true)
      assert.equal(0, emu.stats().requests)
    end)

    it("an output that cannot be written (a full disk): exit 1, FILE stays where the rows out end", function()
      local args = "usertour --base-url " .. E .. " --limit 20 --format csv --resume " .. q(file)
      local status, err = run_append(args .. " --max-pages 2", out)
      assert.equal(0, status, err)
      local token = read(file)
      status, err = run_append(args, "/dev/full")
      assert.equal(1, status)
      assert.matches("^userlist: continuing from [^\n]*\nuserlist: cannot write the output %(", err)
      assert.equal(token, read(file))
    end)

    it("a FILE whose listing was complete gives nothing more and is removed", function()
      -- a run stopped between its last page and removing FILE leaves the end token
      local ut = userlist.usertour{ api_key = emu.keys.usertour, base_url = E }
      local last
      for page in ut:pages{ limit = 100 } do last = page end
      ut:close()
      assert.is_true(userlist.token_info(last.resume).done)
      write(file, last.resume .. "\n")
      emu.reset()
      local status, err = run_append("usertour --base-url " .. E .. " --limit 100 --format csv --resume "
        .. q(file), out)
      assert.equal(0, status, err)
      assert.equal(("userlist: continuing from %s: after 250 users, 3 pages (the listing was complete)\n")
        :format(file), err)
      assert.is_false(exists(file))
      assert.equal("", read(out))
      assert.equal(0, emu.stats().requests)
    end)
  end)

  describe("formats", function()
    it("table: a header and aligned columns, numbers right-aligned, times in ISO 8601", function()
      local status, out, err = run("helicone --base-url " .. E .. " --limit 3 --max-pages 1")
      assert.equal(0, status, err)
      local l = lines(out)
      assert.equal(4, #l)
      assert.matches("^id%s+requests%s+prompt_tokens%s+completion_tokens%s+tokens%s+cost%s+first_seen"
        .. "%s+last_seen$", l[1])
      assert.matches("^user%-0000001%s+2%s+660%s+462%s+1122%s+0%.008910%s+2025%-01%-01T00:01:00Z%s+"
        .. "2025%-01%-02T18:01:00Z$", l[2])
      -- right-aligned: every row's cost ends in the same column
      local col = l[1]:find("cost") + 3
      for i = 2, 4 do assert.equal(col, (l[i]:find("%d%.%d+%s"))
        + #l[i]:match("%d%.%d+%s", (l[i]:find("%d%.%d+%s"))) - 2) end
      assert.equal("", err) -- stderr is no terminal: quiet
      no_keys(out, err)
    end)

    it("csv: a header, then RFC 4180 quoting of commas, quotes and newlines", function()
      local status, out, err = run("usertour --base-url " .. E .. " --limit 2 --max-pages 1 --format csv"
        .. " --fields id,email,attributes")
      assert.equal(0, status, err)
      local l = lines(out)
      assert.equal("id,email,attributes", l[1])
      assert.matches('^user%-0000001,user0000001@example%.com,"{.*""name"":""User 0000001"".*}"$', l[2])
      assert.equal(3, #l)
      assert.equal("plain", cli.csv_field("plain"))
      assert.equal('"a,b"', cli.csv_field("a,b"))
      assert.equal('"say ""hi"""', cli.csv_field('say "hi"'))
      assert.equal('"two\nlines"', cli.csv_field("two\nlines"))
      assert.equal('" padded"', cli.csv_field(" padded"))
    end)

    it("csv keeps a name with a comma and a quote in one field", function()
      local ut = userlist.usertour{ api_key = emu.keys.usertour, base_url = E }
      assert(ut:upsert("odd-user", { name = 'Doe, "J"' }))
      ut:close()
      local status, out = run("usertour --base-url " .. E .. " --email odd@example.com --format csv"
        .. " --fields id,attributes.name", "")
      assert.equal(0, status)
      assert.equal("id,attributes.name\n", out) -- email is exact: none
      status, out = run("usertour --base-url " .. E .. " --cursor user-0000250 --format csv"
        .. " --fields id,attributes.name")
      assert.equal(0, status)
      assert.same({ "id,attributes.name", 'odd-user,"Doe, ""J"""' }, lines(out))
    end)

    it("jsonl: one JSON object a line, the whole record or the --fields in order", function()
      local status, out, err = run("openlayer --base-url " .. E .. "/v1 --pipeline-id " .. PIPELINE
        .. " --per-page 3 --max-pages 1 --format jsonl")
      assert.equal(0, status, err)
      local l = lines(out)
      assert.equal(3, #l)
      for i, line in ipairs(l) do
        local u = assert(core.json_decode(line))
        assert.equal(("user-%07d"):format(i), u.id)
        assert.equal(u.records, u.requests)
        assert.matches("^2025%-01%-01T00:0%d:00Z$", u.first_seen)
        assert.matches('^{"id":"user%-000000' .. i .. '","requests":', line)
      end
      status, out = run("openlayer --base-url " .. E .. "/v1 --pipeline-id " .. PIPELINE
        .. " --per-page 1 --max-pages 1 --format jsonl --fields cost,id,nothing")
      assert.equal(0, status)
      assert.equal('{"cost":0.00891,"id":"user-0000001","nothing":null}\n', out)
    end)

    it("streams a long listing: widths from the first rows, every user once", function()
      local status, out, err = run("helicone --base-url " .. E .. " --header 'X-Emu-Users: 3000' --limit 1000"
        .. " --fields id,requests")
      assert.equal(0, status, err)
      local l = lines(out)
      assert.equal(3001, #l)
      assert.equal("user-0003000", l[3001]:match("^%S+"))
    end)
  end)

  describe("filters reach the API as its own query keys", function()
    local function last_request()
      local log = emu.requests()
      return log[#log]
    end

    it("helicone: --sort, --since, --until, --limit, --tz-minutes", function()
      local status, _, err = run("helicone --base-url " .. E .. " --sort cost:desc"
        .. " --since 2025-01-01T00:00:00Z --until 1767225600 --limit 7 --tz-minutes 60 --max-pages 1")
      assert.equal(0, status, err)
      local r = last_request()
      assert.equal("/v1/user/metrics/query", r.uri)
      local b = core.json_decode(r.body)
      assert.same({ cost = "desc" }, b.sort)
      assert.equal(7, b.limit)
      assert.equal(60, b.timeZoneDifferenceMinutes)
      assert.same({ startTimeUnixSeconds = 1735689600, endTimeUnixSeconds = 1767225600 }, b.timeFilter)
    end)

    it("helicone: --sort none sends no sort field (servers before 2025-03-29 refuse one)", function()
      local status, _, err = run("helicone --base-url " .. E .. " --sort none --limit 3 --max-pages 1")
      assert.equal(0, status, err)
      assert.same({ filter = "all", offset = 0, limit = 3 }, core.json_decode(last_request().body))
    end)

    it("helicone: a server that refuses the default sort is listed without it, said on stderr",
      function()
        local status, out, err = run("helicone --base-url " .. E .. " --limit 3 --max-pages 1"
          .. " --format csv --fields id --concurrency 1 --header 'X-Emu-Helicone-Version: 2025-01-01'")
        assert.equal(0, status, err)
        assert.equal(4, #lines(out)) -- the header and a page of 3
        assert.equal(1, #lines(err))
        assert.matches("^userlist: helicone fallback: the server refused the default sort %(.*%): "
          .. "listing without it$", lines(err)[1])
      end)

    it("helicone: a relative --since is that long before now", function()
      local before = os.time()
      assert.equal(0, (run("helicone --base-url " .. E .. " --since 7d --max-pages 1")))
      local from = core.json_decode(last_request().body).timeFilter.startTimeUnixSeconds
      assert.is_true(from >= before - 7 * 86400 - 1 and from <= os.time() - 7 * 86400 + 1)
    end)

    it("helicone: --user-id goes to /v1/user/query, in milliseconds", function()
      local status, out = run("helicone --base-url " .. E .. " --user-id user-0000002 --user-id user-0000001"
        .. " --format csv --fields id,requests --since 1735689600")
      assert.equal(0, status)
      assert.same({ "id,requests", "user-0000002,4", "user-0000001,2" }, lines(out))
      local b = core.json_decode(last_request().body)
      assert.same({ "user-0000002", "user-0000001" }, b.userIds)
      assert.equal(1735689600000, b.timeFilter.startTimeUnixSeconds)
    end)

    it("openlayer: --where, --search, --sort-column, --order, --per-page", function()
      local status, out, err = run("openlayer --base-url " .. E .. "/v1 --pipeline-id " .. PIPELINE
        .. " --where 'records >= 19' --where 'id none_of user-0000005' --search 000"
        .. " --sort-column cost --order desc --per-page 5 --max-pages 1 --format csv --fields id,requests")
      assert.equal(0, status, err)
      local r = last_request()
      assert.matches("sortColumn=cost", r.args, 1, true)
      assert.matches("asc=false", r.args, 1, true)
      assert.matches("perPage=5", r.args, 1, true)
      local b = core.json_decode(r.body)
      assert.same({ { measurement = "records", operator = ">=", value = 19 },
                    { measurement = "id", operator = "none_of", value = { "user-0000005" } } },
        b.columnFilters)
      assert.same({ "000" }, b.searchQueryAnd)
      for i, l in ipairs(lines(out)) do
        if i > 1 then assert.matches(",%d+$", l); assert.is_true(tonumber(l:match(",(%d+)$")) >= 19) end
      end
    end)

    it("arthur: repeated --task-id, --sort, --page-size, --per-user", function()
      local status, out, err = run("arthur --base-url " .. E .. " --task-id task-1 --task-id task-2"
        .. " --sort asc --page-size 1000 --per-user --format csv --fields id")
      assert.equal(0, status, err)
      local r = last_request()
      assert.matches("task_ids=task%-1&task_ids=task%-2", r.args)
      assert.matches("sort=asc", r.args, 1, true)
      local seen = {}
      for i, l in ipairs(lines(out)) do
        if i > 1 then
          assert.is_nil(seen[l], "one row per user")
          seen[l] = true
        end
      end
    end)

    it("usertour: default columns id, email, first_seen, last_seen (the seen attributes)", function()
      local status, out, err = run("usertour --base-url " .. E .. " --limit 2 --max-pages 1")
      assert.equal(0, status, err)
      local l = lines(out)
      assert.matches("^id%s+email%s+first_seen%s+last_seen$", l[1])
      -- user 1 of the emulator: first_seen_at 00:22:01 (not createdAt 00:01), last_seen_at a day later
      assert.matches("^user%-0000001%s+user0000001@example%.com%s+2025%-01%-01T00:22:01Z%s+"
        .. "2025%-01%-02T18:01:00Z$", l[2])
      assert.equal(3, #l)
      status, out, err = run("usertour --base-url " .. E .. " --limit 1 --max-pages 1 --format csv")
      assert.equal(0, status, err)
      assert.same({ "id,email,first_seen,last_seen",
        "user-0000001,user0000001@example.com,2025-01-01T00:22:01Z,2025-01-02T18:01:00Z" }, lines(out))
    end)

    it("usertour: --expand, --order-by, --email, --header", function()
      local status, out, err = run("usertour --base-url " .. E .. " --expand companies --order-by=-createdAt"
        .. " --email user0000003@example.com --header 'X-Trace: abc' --fields id,email")
      assert.equal(0, status, err)
      local r = last_request()
      assert.matches("expand=companies", r.args, 1, true)
      assert.matches("orderBy=%-createdAt", r.args)
      assert.equal("abc", r.headers["x-trace"])
      assert.equal("user-0000003", lines(out)[2]:match("^%S+"))
      no_keys(out, err)
    end)
  end)

  describe("--top", function()
    local function expected(n, by)
      local hc = userlist.helicone{ api_key = emu.keys.helicone, base_url = E }
      local all = {}
      for u in hc:users{} do all[#all + 1] = u end
      hc:close()
      for i, u in ipairs(all) do u.index = i end
      table.sort(all, function(a, b)
        if a[by] ~= b[by] then return a[by] > b[by] end
        return a.index < b.index
      end)
      local ids = {}
      for i = 1, n do ids[i] = all[i].id end
      return ids, all
    end

    it("draws a horizontal bar chart of the top users, longest bar first", function()
      local ids, all = expected(5, "tokens")
      local status, out, err = run("helicone --base-url " .. E .. " --top 5 --by tokens",
        "LANG=C.UTF-8 COLUMNS=80")
      assert.equal(0, status, err)
      local l = lines(out)
      assert.equal("top 5 helicone users by tokens (of 250 listed)", l[1])
      assert.equal(6, #l)
      local prev = math.huge
      for i = 1, 5 do
        local id, bar, value = l[i + 1]:match("^(%S+)%s+(%S+)%s+(%d+)$")
        assert.equal(ids[i], id)
        assert.equal(all[i].tokens, tonumber(value))
        local len = select(2, bar:gsub("[\128-\191]", "")) -- each block is one character of 3 bytes
        len = #bar - len
        assert.is_true(len <= prev and len > 0)
        prev = len
        assert.is_true(#l[i + 1] - (#bar - len) <= 80, "fits the terminal")
      end
      assert.matches("^[█]+$", l[2]:match("^%S+%s+(%S+)"))
    end)

    it("draws with # outside a UTF-8 locale or with --ascii, and ranks by cost by default", function()
      local ids = expected(3, "cost")
      for _, env in ipairs{ "LANG=C LC_ALL=C", "LANG=C.UTF-8 --ascii" } do
        local extra = env:match("%-%-ascii") and " --ascii" or ""
        local status, out = run("helicone --base-url " .. E .. " --top 3" .. extra,
          (env:gsub(" %-%-ascii", "")) .. " COLUMNS=60")
        assert.equal(0, status)
        local l = lines(out)
        assert.equal("top 3 helicone users by cost (of 250 listed)", l[1])
        for i = 1, 3 do
          local id, bar = l[i + 1]:match("^(%S+)%s+(#+)%s+%d%.%d+$")
          assert.equal(ids[i], id)
          assert.truthy(bar)
        end
        assert.is_true(#l[2] <= 60)
      end
    end)

    it("with --format csv or jsonl gives the top users' rows instead", function()
      local ids = expected(4, "requests")
      local status, out = run("helicone --base-url " .. E .. " --top 4 --by requests --format csv"
        .. " --fields id")
      assert.equal(0, status)
      assert.same({ "id", ids[1], ids[2], ids[3], ids[4] }, lines(out))
    end)

    it("counts the users that lack the metric", function()
      -- Arthur drops the token fields of every 7th user
      local status, out = run("arthur --base-url " .. E .. " --task-id task-1 --top 2 --by cost", "LANG=C")
      assert.equal(0, status)
      assert.matches("^top 2 arthur users by cost %(of %d+ listed, %d+ without cost%)\n", out)
    end)
  end)

  describe("progress", function()
    it("is quiet when stderr is not a terminal", function()
      local status, _, err = run("helicone --base-url " .. E .. " --limit 50")
      assert.equal(0, status)
      assert.equal("", err)
    end)

    it("USERLIST_PROGRESS=always: users, pages, retries and waits on stderr, never on stdout", function()
      emu.faults("/v1/user/metrics/query", { { status = 503, headers = { ["retry-after-ms"] = "100" } } })
      local status, out, err = run("helicone --base-url " .. E .. " --limit 50 --format csv --fields id",
        "USERLIST_PROGRESS=always COLUMNS=200")
      assert.equal(0, status, err)
      assert.equal(251, #lines(out))
      assert.is_nil(out:find("users/s", 1, true))
      local final = lines(err)
      assert.equal(1, #final) -- one line, redrawn with \r
      local last = final[1]:match("([^\r]*)$")
      assert.matches("^helicone: 250 users, 6 pages, %d+ users/s, 1 retry, 1 wait %(0%.1s%) %- done in"
        .. " %d+%.%ds\27%[K$", last)
      assert.matches("retry 1 after http 503", err, 1, true)
      assert.matches("waiting 0.1s (retry)", err, 1, true)
      no_keys(out, err)
    end)

    it("--progress never wins over USERLIST_PROGRESS=always", function()
      local _, _, err = run("usertour --base-url " .. E .. " --progress never", "USERLIST_PROGRESS=always")
      assert.equal("", err)
    end)
  end)

  describe("in a terminal (tmux)", function()
    local sock, conf, n = nil, nil, 0

    -- tmux itself runs without the ASan run's preloaded runtime (it dies
    -- under it); the command inside gets it back, for the ASan-built core
    local SAN = { "LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS" }
    local inner = {}
    for _, name in ipairs(SAN) do
      local v = os.getenv(name)
      if v then inner[#inner + 1] = name .. "=" .. q(v) end
    end
    if emu.child_env ~= "" then inner[#inner + 1] = emu.child_env end
    inner = table.concat(inner, " ")

    local function tmux(args)
      local p = assert(io.popen(("env -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS"
        .. " tmux -u -L %s -f %s %s 2>&1"):format(sock, conf, args)))
      local s = p:read("*a")
      p:close()
      return s
    end

    -- the screen with its history (a detached pane may start small and scroll)
    local function screen() return tmux("capture-pane -p -J -S - -t spec") end

    -- polls the screen until fn(screen) is true (bounded), returning it
    local function wait_for(fn, what)
      local deadline = core.now() + 30
      local s
      repeat
        s = screen()
        if fn(s) then return s end
        core.sleep(0.02)
      until core.now() > deadline
      error("timed out waiting for " .. what .. "; the screen:\n" .. tostring(s))
    end

    -- `pre`: shell words before the command (a trap)
    local function start(args, env, pre)
      n = n + 1
      local cmd = ("%scd %s && env -u COLUMNS -u USERLIST_PROGRESS LANG=C.UTF-8 %s %s %s %s bin/userlist %s;"
        .. " echo EXIT=$?"):format(pre or "", q(os.getenv("PWD") or "."), inner, KEYS, env or "", lua, args)
      tmux(("new-session -d -s spec -x 100 -y 40 %s"):format(q(cmd)))
    end

    setup(function()
      sock = ("userlist-spec-%d-%d"):format(os.time(), math.random(1e6))
      conf = os.tmpname()
      local f = assert(io.open(conf, "w"))
      f:write("set -g remain-on-exit on\nset -g history-limit 10000\n")
      f:close()
    end)

    after_each(function() tmux("kill-session -t spec") end)

    teardown(function()
      tmux("kill-server")
      os.remove(conf)
    end)

    it("shows live progress on stderr while a listing runs, then a final line", function()
      emu.config{ delay_ms = 120 }
      start("helicone --base-url " .. E .. " --limit 25 --format csv --fields id >/dev/null")
      -- a progress line while the listing is still going: pages counted, no "done" yet
      local live = wait_for(function(s)
        local pages = tonumber(s:match("helicone: %d+ users, (%d+) pages?"))
        return pages and pages >= 2 and not s:find("done", 1, true)
      end, "live progress")
      assert.matches("users/s", live, 1, true)
      local final = wait_for(function(s) return s:find("EXIT=", 1, true) end, "the end")
      assert.matches("helicone: 250 users, 11 pages, %d+ users/s %- done in %d+%.%ds", final)
      assert.matches("EXIT=0", final, 1, true)
      -- one line, redrawn in place
      local _, count = final:gsub("helicone: ", "")
      assert.equal(1, count)
    end)

    it("shows a retry and the wait while it waits", function()
      emu.faults("/api/v1/traces/users", { { status = 503, headers = { ["retry-after-ms"] = "1500" } } })
      start("arthur --base-url " .. E .. " --task-id task-1 --format jsonl >/dev/null")
      local waiting = wait_for(function(s) return s:find("waiting 1.5s (retry)", 1, true) end, "the wait")
      assert.matches("arthur: 0 users, 0 pages, 1 retry, 1 wait (1.5s)", waiting, 1, true)
      local final = wait_for(function(s) return s:find("EXIT=", 1, true) end, "the end")
      assert.matches("1 retry, 1 wait %(1%.5s%) %- done in", final)
      assert.matches("EXIT=0", final, 1, true)
    end)

    it("draws the --top chart to the terminal's width, table rows and progress apart", function()
      start("helicone --base-url " .. E .. " --top 5 --by cost")
      local s = wait_for(function(x) return x:find("EXIT=", 1, true) end, "the end")
      assert.matches("EXIT=0", s, 1, true)
      assert.matches("helicone: 250 users, 1 page, %d+ users/s %- done", s)
      local bars = 0
      for l in s:gmatch("[^\n]+") do
        if l:find("█", 1, true) then
          bars = bars + 1
          local bar = assert(l:match("^user%-%d+%s+(%S+)%s+0%.%d+$"), l)
          local rest = bar:gsub("█", "")
          assert.is_true(rest == "" or ("▏▎▍▌▋▊▉"):find(rest, 1, true) ~= nil, l)
          assert.is_true(#l:gsub("[\128-\191]", "") <= 100)
        end
      end
      assert.equal(5, bars)
    end)

    it("--resume: Ctrl-C stops a listing where its rows and FILE agree; the same command goes on", function()
      local file, out = scratch(), scratch()
      finally(function()
        os.remove(file)
        os.remove(file .. ".tmp")
        os.remove(out)
      end)
      local args = "helicone --base-url " .. E .. " --limit 10 --concurrency 1 --format csv --fields id,cost"
      local status, all, err0 = run(args)
      assert.equal(0, status, err0)
      assert.equal(251, #lines(all))
      emu.reset()
      emu.config{ delay_ms = 150 } -- 25 pages: some 4 s
      -- the shell goes on to echo EXIT= after its child's Ctrl-C (bash would, dash might not)
      start(args .. " --resume " .. q(file) .. " >>" .. q(out), nil, "trap : INT; ")
      -- checkpoints: FILE is there (whole: it is renamed into place) and past page 3
      local deadline = core.now() + 30
      while not (exists(file) and userlist.token_info(read(file):match("%S+")).users >= 30) do
        assert.is_true(core.now() < deadline, "no checkpoint past page 3 in 30 s")
        core.sleep(0.02)
      end
      wait_for(function(s) return s:find("helicone: %d+ users") end, "live progress")
      tmux("send-keys -t spec C-c")
      local s = wait_for(function(x) return x:find("EXIT=", 1, true) end, "the end")
      assert.matches("EXIT=130", s, 1, true)
      assert.matches("userlist: interrupted; run the same command again to continue from " .. file
        .. " (after ", s, 1, true)
      local at = tonumber(s:match("to continue from [^\n]* %(after (%d+) users?%)"))
      assert.is_true(at >= 30 and at < 250, tostring(at))
      assert.is_nil(s:find("stack traceback", 1, true))
      -- the rows out are the rows FILE's token counts: the header and whole pages
      local token = read(file):match("^(%S+)\n$")
      assert.equal(at, userlist.token_info(token).users)
      assert.equal(table.concat(lines(all), "\n", 1, at + 1) .. "\n", read(out))
      no_keys(s, token)

      emu.config{ delay_ms = 0 }
      local err
      status, err = run_append(args .. " --resume " .. q(file), out)
      assert.equal(0, status, err)
      local pages = math.floor(at / 10)
      assert.equal(("userlist: continuing from %s: after %d users, %d page%s\n")
        :format(file, at, pages, pages == 1 and "" or "s"), err)
      assert.equal(all, read(out)) -- every user once, in order, one header
      assert.is_false(exists(file))
    end)

    it("without --resume, Ctrl-C says interrupted and exits 130, no traceback", function()
      emu.config{ delay_ms = 150 }
      start("usertour --base-url " .. E .. " --limit 10 --concurrency 1 --format csv >/dev/null", nil,
        "trap : INT; ")
      wait_for(function(s) return s:find("usertour: %d+ users, [1-9]%d* pages?") end, "a page")
      tmux("send-keys -t spec C-c")
      local s = wait_for(function(x) return x:find("EXIT=", 1, true) end, "the end")
      assert.matches("EXIT=130", s, 1, true)
      assert.matches("userlist: interrupted\n", s, 1, true)
      assert.is_nil(s:find("stack traceback", 1, true))
    end)

    it("keeps the table clean when stdout and stderr share the terminal", function()
      start("usertour --base-url " .. E .. " --limit 10 --fields id")
      local s = wait_for(function(x) return x:find("EXIT=", 1, true) end, "the end")
      local l = lines(s)
      assert.equal("id", l[1])
      for i = 2, 251 do assert.equal(("user-%07d"):format(i - 1), l[i]) end
      assert.matches("usertour: 250 users, 25 pages", s)
      no_keys(s)
    end)
  end)
end)
