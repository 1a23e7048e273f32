-- Helicone's requests through Prism, each validated against its OpenAPI
-- document (spec/providers/helicone/openapi.json), then read back from the
-- emulator's request log: every query key of the metrics listing and of the
-- user_ids lookup, and client:query's seed request.
-- This needs the Prism proxies (spec/emulator/run exec -- spec/prism/run exec
-- -- spec/run.sh) and fails, never skips, without them: make check and make
-- check-tsan leave spec/providers/*/openapi_spec.lua out by name. The helpers
-- (through, must, all, forwarded, ...): spec/support/prism.lua.
local userlist = require "userlist"
local emu = require "support.emu"
local prism = require "support.prism"

local through, must, all, page = prism.through, prism.must, prism.all, prism.page
local forwarded, json_body, ids = prism.forwarded, prism.json_body, prism.ids

local USERS = 250 -- the emulator's default population

describe("OpenAPI conformance through Prism", function()
  before_each(function() emu.reset() end)

  describe("Helicone", function()
    local function client(opts)
      opts = opts or {}
      opts.api_key, opts.base_url, opts.max_retries = emu.keys.helicone, through("HELICONE"), 0
      opts.concurrency = 1 -- the request log is read in order
      return userlist.helicone(opts)
    end

    it("lists every user over /v1/user/metrics/query: the default query, then pages of 100", function()
      assert.equal(USERS, #all(client())) -- one page: limit 1000
      local defaults = json_body(forwarded()[1])
      assert.same({ filter = "all", offset = 0, limit = 1000, sort = { user_id = "asc" } }, defaults)
      emu.reset()
      local users = all(client(), { limit = 100 })
      assert.equal(USERS, #users)
      local reqs = forwarded()
      assert.equal(3, #reqs) -- 100 + 100 + 50
      for i, r in ipairs(reqs) do
        assert.equal("/v1/user/metrics/query", r.uri)
        local b = json_body(r)
        assert.equal((i - 1) * 100, b.offset)
        assert.equal(100, b.limit)
        assert.equal("all", b.filter)
        assert.same({ user_id = "asc" }, b.sort)
      end
    end)

    it("sends no sort with sort = false, and none after an old server refuses the default", function()
      local users = all(client(), { limit = 100, sort = false })
      assert.equal(USERS, #users)
      local reqs = forwarded()
      assert.equal(3, #reqs)
      for _, r in ipairs(reqs) do assert.is_nil(json_body(r).sort) end
      -- a server from before 2025-03-29 answers the default sort 422 (spec/10)
      emu.reset()
      users = all(client{ headers = { ["X-Emu-Helicone-Version"] = "2025-03-01" } }, { limit = 100 })
      assert.equal(USERS, #users)
      reqs = forwarded()
      assert.equal(4, #reqs)
      assert.same({ user_id = "asc" }, json_body(reqs[1]).sort)
      for i = 2, 4 do assert.is_nil(json_body(reqs[i]).sort) end
    end)

    it("sends offset, limit, sort, a filter tree, the time window and time zone", function()
      local filter = {
        left = { users_view = { user_total_requests = { gte = 1 } } },
        operator = "and",
        right = {
          left = { users_view = { user_last_active = { gte = "2025-01-01T00:00:00Z" } } },
          operator = "or",
          right = { request_response_rmt = { user_id = { ["not-equals"] = "nobody" } } },
        },
      }
      local users = all(client(), { offset = 10, limit = 20, max_pages = 2, sort = { cost = "desc" },
        filter = filter, since = 1735689600, ["until"] = "2025-03-01T00:00:00Z",
        time_zone_difference_minutes = -60 })
      assert.equal(40, #users)
      local reqs = forwarded()
      assert.equal(2, #reqs)
      local b = json_body(reqs[2])
      assert.equal(30, b.offset)
      assert.equal(20, b.limit)
      assert.same({ cost = "desc" }, b.sort)
      assert.same(filter, b.filter)
      assert.same({ startTimeUnixSeconds = 1735689600, endTimeUnixSeconds = 1740787200 }, b.timeFilter)
      assert.equal(-60, b.timeZoneDifferenceMinutes)
    end)

    it("accepts every sort field the client knows, both directions, and the string form", function()
      local c = client()
      local fields = { "id", "user_id", "active_for", "first_active", "last_active", "total_requests",
        "average_requests_per_day_active", "average_tokens_per_request", "total_prompt_tokens",
        "total_completion_tokens", "cost", "rate_limited_count" }
      for _, f in ipairs(fields) do
        page(c, { limit = 1, sort = { [f] = "asc" } })
        page(c, { limit = 1, sort = { [f] = "desc" } })
      end
      local p = page(c, { limit = 5, sort = "total_requests" })
      assert.equal(5, #p.users)
      assert.equal(5, p.next) -- the next offset
      assert.equal(#fields * 2 + 1, #forwarded())
    end)

    it("looks up user_ids in batches of 100 over /v1/user/query, with the time window", function()
      local want = ids(150)
      local users = all(client(), { user_ids = want, since = 1735689600, ["until"] = 1767225600 })
      assert.equal(150, #users)
      local reqs = forwarded()
      assert.equal(2, #reqs)
      assert.equal("/v1/user/query", reqs[1].uri)
      local b1, b2 = json_body(reqs[1]), json_body(reqs[2])
      assert.equal(100, #b1.userIds)
      assert.equal(50, #b2.userIds)
      -- the seed endpoint reads its "seconds" as milliseconds
      assert.same({ startTimeUnixSeconds = 1735689600000, endTimeUnixSeconds = 1767225600000 }, b1.timeFilter)
    end)

    it("skips offset distinct ids of user_ids, and dedupes a metrics listing", function()
      local want = ids(120)
      want[#want + 1] = "user-0000001" -- a repeat is asked once
      local users = all(client(), { user_ids = want, offset = 15 })
      assert.equal(105, #users)
      users = all(client(), { limit = 50, max_pages = 2, dedupe = true, sort = { total_requests = "asc" } })
      assert.equal(100, #users)
      local reqs = forwarded()
      assert.equal(4, #reqs)
      assert.equal(100, #json_body(reqs[1]).userIds)
      assert.equal("user-0000016", json_body(reqs[1]).userIds[1])
      assert.equal(5, #json_body(reqs[2]).userIds)
      assert.equal(50, json_body(reqs[4]).offset)
    end)

    it("sends real seconds with time_filter_in_seconds, and only user_ids without a window", function()
      all(client{ time_filter_in_seconds = true }, { user_ids = { "user-0000001" }, since = 1735689600,
        ["until"] = 1767225600 })
      all(client(), { user_ids = { "user-0000001", "user-0000002" } })
      local reqs = forwarded()
      assert.same({ startTimeUnixSeconds = 1735689600, endTimeUnixSeconds = 1767225600 },
        json_body(reqs[1]).timeFilter)
      assert.same({ userIds = { "user-0000001", "user-0000002" } }, json_body(reqs[2]))
    end)

    it("sends the seed request of client:query with and without ids", function()
      local c = client()
      local r = must(function() return c:query() end)
      assert.is_true(r.truncated)
      r = must(function() return c:query{ user_ids = ids(3), since = 1735689600, ["until"] = 1767225600 } end)
      assert.equal(3, #r.users)
      local reqs = forwarded()
      assert.equal(2, #reqs)
      assert.same({}, json_body(reqs[1]))
    end)
  end)
end)
