-- The pager's loop guard judges a repeated page by each row's unique
-- identity, never by the dedupe key: pages of one row over sorts with ties,
-- and one Arthur user in two tasks, list to the end; a server that answers
-- the same position again still stops with a loop error.
local userlist = require "userlist"
local emu = require "support.emu"

local PIPE = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
local USERS = 60

local function opts(key, base, extra)
  local o = { api_key = key, base_url = base, max_retries = 0, sleep = function() end,
              headers = { ["X-Emu-Users"] = tostring(USERS) } }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

-- Every row of a listing as "id/task" (task only for Arthur).
local function rows(c, q)
  local out = {}
  for u in c:users(q) do out[#out + 1] = u.id .. (u.task_id and ("/" .. u.task_id) or "") end
  return out
end

local function raised(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "no error was raised")
  assert.is_true(userlist.is_error(err), "not a userlist error: " .. tostring(err))
  return err
end

describe("loop guard over honest listings of one-row pages", function()
  before_each(function() emu.reset() end)

  for _, conc in ipairs{ 1, 4 } do
    describe("at concurrency " .. conc, function()
      local function arthur() return userlist.arthur(opts(emu.keys.arthur, emu.http,
        { concurrency = conc })) end

      it("Arthur dedupe = \"user\": a user with rows in two tasks on adjacent pages is no loop",
        function()
          local q = { task_ids = { "task-1", "task-2", "task-3" }, sort = "asc", dedupe = "user" }
          local whole = rows(arthur(), q)
          q.page_size = 1
          local tiny = rows(arthur(), q)
          assert.is_true(#whole > 40, tostring(#whole))
          assert.same(whole, tiny)
        end)

      it("Arthur without dedupe: (user, task) rows one a page list to the end", function()
        local q = { task_ids = { "task-1", "task-2", "task-3" }, sort = "asc" }
        local whole = rows(arthur(), q)
        q.page_size = 1
        local tiny = rows(arthur(), q)
        assert.is_true(#whole > USERS, tostring(#whole)) -- some users have two rows
        assert.same(whole, tiny)
      end)

      it("Openlayer per_page = 1 sorted by a column with ties (sessions) lists to the end",
        function()
          local ol = userlist.openlayer(opts(emu.keys.openlayer, emu.http .. "/v1",
            { concurrency = conc }))
          local q = { pipeline_id = PIPE, sort_column = "sessions", asc = false }
          local whole = rows(ol, q)
          q.per_page = 1
          assert.equal(USERS, #whole)
          assert.same(whole, rows(ol, q))
        end)

      it("Helicone limit = 1 sorted by a figure with ties (active_for) lists to the end",
        function()
          local h = userlist.helicone(opts(emu.keys.helicone, emu.http, { concurrency = conc }))
          local q = { sort = { active_for = "desc" } }
          local whole = rows(h, q)
          q.limit = 1
          assert.equal(USERS, #whole)
          assert.same(whole, rows(h, q))
        end)
    end)
  end
end)

describe("loop guard over a server that answers the same position again", function()
  before_each(function() emu.reset() end)

  local ARTHUR_PAGE = '{"count":9,"users":['
    .. '{"user_id":"u1","task_id":"t1","session_ids":[],"session_count":0,"trace_ids":[],'
    .. '"trace_count":1,"span_count":1,"earliest_start_time":"2025-01-01T00:00:00",'
    .. '"latest_end_time":"2025-01-01T00:00:01"},'
    .. '{"user_id":"u1","task_id":"t2","session_ids":[],"session_count":0,"trace_ids":[],'
    .. '"trace_count":1,"span_count":1,"earliest_start_time":"2025-01-01T00:00:00",'
    .. '"latest_end_time":"2025-01-01T00:00:01"}]}'

  it("Arthur with dedupe = \"user\" still stops when page 2 repeats page 1's rows", function()
    emu.faults("/api/v1/traces/users", { { body = ARTHUR_PAGE }, { body = ARTHUR_PAGE } })
    local a = userlist.arthur(opts(emu.keys.arthur, emu.http, { concurrency = 1 }))
    local got = {}
    local err = raised(function()
      for u in a:users{ task_ids = { "t1", "t2" }, page_size = 2, dedupe = "user" } do
        got[#got + 1] = u.id
      end
    end)
    assert.equal("loop", err.kind)
    assert.matches("page 2 returned exactly the users of page 1", err.message)
    assert.same({ "u1" }, got)
  end)

  it("a one-row page repeated stops too (Openlayer ignoring page)", function()
    local path = "/v1/inference-pipelines/" .. PIPE .. "/users"
    emu.faults(path, { { body = '{"items":[{"id":"a"}]}' }, { body = '{"items":[{"id":"a"}]}' } })
    local ol = userlist.openlayer(opts(emu.keys.openlayer, emu.http .. "/v1", { concurrency = 1 }))
    local err = raised(function() for _ in ol:users{ pipeline_id = PIPE, per_page = 1 } do end end)
    assert.equal("loop", err.kind)
    assert.matches("page 2 returned exactly the users of page 1", err.message)
  end)

  it("a page that differs from the one before only in a middle row is no loop", function()
    local path = "/v1/inference-pipelines/" .. PIPE .. "/users"
    emu.faults(path, { { body = '{"items":[{"id":"a"},{"id":"b"},{"id":"c"}]}' },
                       { body = '{"items":[{"id":"a"},{"id":"x"},{"id":"c"}]}' },
                       { body = '{"items":[]}' } })
    local ol = userlist.openlayer(opts(emu.keys.openlayer, emu.http .. "/v1", { concurrency = 1 }))
    assert.same({ "a", "b", "c", "a", "x", "c" }, rows(ol, { pipeline_id = PIPE, per_page = 3 }))
  end)
end)
