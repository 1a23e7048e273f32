-- Usertour's requests through Prism, each validated against its OpenAPI
-- documents (spec/providers/usertour/openapi-v1.yaml and openapi-v2.json),
-- then read back from the emulator's request log: every query key of the v1
-- and v2 listings, their next links, user(id), upsert and delete.
-- This needs the Prism proxies (spec/emulator/run exec -- spec/prism/run exec
-- -- spec/run.sh) and fails, never skips, without them: make check and make
-- check-tsan leave spec/providers/*/openapi_spec.lua out by name. The helpers
-- (through, must, all, forwarded, ...): spec/support/prism.lua.
local userlist = require "userlist"
local emu = require "support.emu"
local prism = require "support.prism"

local through, problem_of, explain = prism.through, prism.problem_of, prism.explain
local must, all, forwarded, has_params = prism.must, prism.all, prism.forwarded, prism.has_params
local json_body = prism.json_body

local USERS = 250 -- the emulator's default population

describe("OpenAPI conformance through Prism", function()
  before_each(function() emu.reset() end)

  describe("Usertour v1", function()
    local function client()
      return userlist.usertour{ api_key = emu.keys.usertour, base_url = through("USERTOUR_V1"),
        max_retries = 0, concurrency = 1 }
    end

    it("lists every user by following the next links (default query)", function()
      local users = all(client())
      assert.equal(USERS, #users)
      local reqs = forwarded()
      assert.equal(3, #reqs)
      assert.same({ "100" }, reqs[1].q.limit)
      assert.same({ "user-0000100" }, reqs[2].q.cursor)
      assert.same({ "user-0000200" }, reqs[3].q.cursor)
    end)

    it("sends limit, orderBy, expand repeated, segmentId and a cursor, across next links", function()
      -- seg-1 holds users 1, 6, ..., 246, all before user-0000249: pages of 20, 20, 10
      local users = all(client(), { limit = 20, order_by = "-createdAt", max_pages = 5,
        expand = { "companies", "memberships", "memberships.company" }, segment_id = "seg-1",
        cursor = "user-0000249" })
      assert.equal(50, #users)
      assert.equal("user-0000246", users[1].id)
      local reqs = forwarded()
      assert.equal(3, #reqs)
      has_params(reqs[1], { "limit", "orderBy", "expand", "segmentId", "cursor" })
      assert.same({ "companies", "memberships", "memberships.company" }, reqs[1].q.expand)
      has_params(reqs[2], { "limit", "orderBy", "segmentId", "cursor" }) -- the server's next link
      -- which re-emits expand as expand[]=, a name the document does not have, so
      -- Prism cannot check it (spec/prism/README.md, per-document notes)
      assert.same({ "companies", "memberships", "memberships.company" }, reqs[2].q["expand[]"])
    end)

    it("sends email and companyId filters and orderBy createdAt", function()
      local c = client()
      local users = all(c, { email = "user0000007@example.com", order_by = "createdAt", dedupe = true })
      assert.equal(1, #users)
      all(c, { company_id = "co-3", expand = "companies", limit = 100 })
      local reqs = forwarded()
      has_params(reqs[1], { "email", "orderBy" })
      has_params(reqs[2], { "companyId", "expand", "limit" })
    end)

    it("gets, upserts and deletes a user", function()
      local c = client()
      local u = must(function()
        return c:user("user-0000001", { expand = { "companies", "memberships" } })
      end)
      assert.equal("user-0000001", u.id)
      u = must(function()
        return c:upsert{ id = "new-user-1", attributes = { name = "New", plan = "pro" },
          companies = { { id = "co-1", attributes = { name = "Company 1" } } },
          memberships = { { company = { id = "co-2" }, attributes = { role = "admin" } } } }
      end)
      assert.equal("new-user-1", u.id)
      u = must(function() return c:upsert("new-user-1", { plan = "enterprise" }) end)
      assert.equal("enterprise", u.attributes.plan)
      assert.is_true(must(function() return c:delete("new-user-1") end))
      -- an id that needs escaping validates too: the 404 is the server's
      local none, err = c:user("no such/user")
      assert.is_nil(none)
      assert.is_nil(problem_of(err), explain(err))
      assert.equal(404, err.status)
      local reqs = forwarded()
      assert.equal(5, #reqs)
      assert.equal("/v1/users/no%20such%2Fuser", reqs[5].uri)
      assert.equal("GET", reqs[1].method)
      assert.same({ "companies", "memberships" }, reqs[1].q.expand)
      assert.equal("POST", reqs[2].method)
      assert.equal("/v1/users", reqs[2].uri)
      assert.same({ "co-1" }, { json_body(reqs[2]).companies[1].id })
      assert.equal("POST", reqs[3].method)
      assert.equal("DELETE", reqs[4].method)
      assert.equal("/v1/users/new-user-1", reqs[4].uri)
    end)
  end)

  describe("Usertour v2", function()
    local P, E = "proj-1", "env-1"
    local BASE = "/v2/projects/" .. P .. "/environments/" .. E .. "/users"
    local function client(opts)
      opts = opts or {}
      opts.api_key, opts.base_url, opts.max_retries = emu.keys.usertour_v2, through("USERTOUR_V2"), 0
      opts.concurrency = 1
      return userlist.usertour(opts)
    end

    it("lists every user of a project/environment by following the next links", function()
      local users = all(client{ project_id = P, environment_id = E })
      assert.equal(USERS, #users)
      local reqs = forwarded()
      assert.equal(3, #reqs)
      for _, r in ipairs(reqs) do assert.equal(BASE, r.uri) end
      assert.same({ "user-0000200" }, reqs[3].q.cursor)
    end)

    it("sends createdAfter/createdBefore, email, companyId, segmentId, orderBy, expand", function()
      local c = client()
      local users = all(c, { project_id = P, environment_id = E, since = "2025-01-01T00:30:00Z",
        ["until"] = 1735689600 + 60 * 120, limit = 40, order_by = "-createdAt", segment_id = "seg-2",
        expand = { "memberships.company", "companies" } })
      assert.is_true(#users > 0)
      users = all(c, { project_id = P, environment_id = E, email = "user0000007@example.com",
        company_id = "co-7", cursor = "user-0000001", expand = "memberships" })
      assert.equal(1, #users)
      local reqs = forwarded()
      has_params(reqs[1], { "createdAfter", "createdBefore", "limit", "orderBy", "segmentId", "expand" })
      assert.same({ "2025-01-01T00:30:00.000Z" }, reqs[1].q.createdAfter)
      has_params(reqs[#reqs], { "email", "companyId", "cursor", "expand" })
    end)

    it("sends a date-only window as given, across next links, and dedupes", function()
      local c = client{ project_id = P, environment_id = E }
      local users = all(c, { since = "2025-01-01", ["until"] = "2025-01-01", dedupe = true })
      assert.equal(USERS, #users)
      local reqs = forwarded()
      assert.equal(3, #reqs)
      for _, r in ipairs(reqs) do
        assert.same({ "2025-01-01" }, r.q.createdAfter)
        assert.same({ "2025-01-01" }, r.q.createdBefore)
      end
    end)

    it("gets a user with expand", function()
      local c = client{ project_id = P, environment_id = E }
      local u = must(function()
        return c:user("user-0000002", { expand = { "companies", "memberships.company" } })
      end)
      assert.equal("user-0000002", u.id)
      local r = forwarded()[1]
      assert.equal(BASE .. "/user-0000002", r.uri)
      assert.same({ "companies", "memberships.company" }, r.q.expand)
    end)

    it("upserts a user (PUT .../users/{id}) and deletes it", function()
      local c = client{ project_id = P, environment_id = E }
      local u = must(function()
        return c:upsert{ id = "new-user-2", attributes = { name = "New", plan = "pro" } }
      end)
      assert.equal("new-user-2", u.id)
      u = must(function() return c:upsert("new-user-2", { plan = "free" }) end)
      assert.equal("free", u.attributes.plan)
      assert.is_true(must(function() return c:delete("new-user-2") end))
      local none, err = c:user("no such/user")
      assert.is_nil(none)
      assert.is_nil(problem_of(err), explain(err))
      assert.equal(404, err.status)
      local reqs = forwarded()
      assert.equal(4, #reqs)
      assert.equal(BASE .. "/no%20such%2Fuser", reqs[4].uri)
      assert.equal("PUT", reqs[1].method)
      assert.equal(BASE .. "/new-user-2", reqs[1].uri)
      assert.same({ attributes = { name = "New", plan = "pro" } }, json_body(reqs[1]))
      assert.equal("DELETE", reqs[3].method)
      assert.equal(BASE .. "/new-user-2", reqs[3].uri)
    end)
  end)
end)
