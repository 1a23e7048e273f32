--- The one pager every provider shares. A listing declaration says how to
-- ask for a page and how to read one; the pager walks the pages, stops,
-- guards against loops, and turns them into iterators.
--
-- listing = {
--   prepare(client, q) -> p       validated request facts (raises invalid errors)
--   first(p) -> state             the first page's position
--   request(client, p, state) -> {method, path, query, json}
--   parse(client, body, p, state, shaped) -> items, next_state | nil (last page), facts
--                                 (`shaped`: what the core found shaping the
--                                 rows as it decoded them, for normalize.rows)
--   key(user) -> string           optional: the dedupe key
--   identity(user) -> string      optional: a row's unique identity (default
--                                 its id), for the loop guard
--   ahead(p, state) -> state      optional: the position after `state` if
--                                 its page is full (nil: unknown or past
--                                 the end), so pages can be fetched ahead
--   rows(p) -> spec, naive_offset, shift  optional: the shape of a page's
--                                 rows (normalize.shape; its `list` the
--                                 path), so that the core shapes each row
--                                 as it decodes it (parse's normalize.rows,
--                                 then only reports what it found)
--   guess(client, text, p, state) -> state  optional, cursor listings: a
--                                 guess at the next position from a page's
--                                 raw body, before it is decoded
--   recover(client, p, state, err) -> bool  optional, cursor listings:
--                                 whether the page at `state` failed with
--                                 `err` (nil: it came back empty, the last)
--                                 because its cursor went stale, its row
--                                 deleted meanwhile. Then the pager asks
--                                 again for the page before (its own
--                                 position, kept with that page's
--                                 identities: nothing more), skips the rows
--                                 already given, and goes on from that
--                                 page's new next position; a `recover`
--                                 event says so. If that position is stale
--                                 too, an error names the rows that may be
--                                 missing. Never for the first position.
--   save(client, p, state) -> string   a position as text, for resume
--                                 tokens (no newline; the token seals it)
--   load(client, p, text) -> state     the position saved; raises
--                                 resume.bad for text it cannot take
-- }
--
-- Resume tokens (userlist.resume): each page carries `page.resume`, the
-- token to continue after it; an error raised mid-listing carries
-- `err.resume`, the token to continue at the page that failed; a query's
-- `resume` continues from one, and its `on_checkpoint(token, info)` is
-- called once a page is consumed: when the caller asks for more after it.
-- Rows already given are never asked for again, so a listing resumed after
-- the last page consumed gives each row once where the server's order
-- holds still. `max_pages` bounds one run; page numbers go on.
--
-- Pages are fetched ahead, up to the client's `concurrency` (default 4) at
-- once on sessions that share one libcurl multi handle: for page-number and
-- offset listings (`ahead`), the next positions are asked for while the
-- current page is read; for cursor listings, the next page is asked for as
-- soon as its cursor is known. Users still come in order, a failed prefetch
-- goes through the transport (retries included), and at the
-- end at most `concurrency` requests were sent past it. With concurrency
-- 1 nothing is fetched ahead: each page is asked for when the caller wants it.
-- @module userlist.pager
local errors = require "userlist.errors"
local resume = require "userlist.resume"

local M = {}

-- Lua 5.3's incremental collector does not keep up with a streaming
-- listing: its heap grows to many times what the application already holds
-- (an Arthur listing of 2,500-row pages, beside 15 MB of live data: 280 MB
-- above it; 5.1, 5.2, 5.4 and LuaJIT stay within 3 times). There, each page
-- read pays for a step of collection twice the size of the tables it built
-- (they take about 4 bytes per body byte): that listing then stays within
-- 30 MB, for less CPU than before (a step of 1 KiB a row let it reach 130 MB,
-- and 52 MB inside busted).
local STEP_PER_BYTE = _VERSION == "Lua 5.3" and 8 / 1024 or nil

local guesser -- below: the raw-body guess of cursor listings

-- The query's resume token and checkpoint, for walk `w`: its fingerprints,
-- and the position, counts and end it continues from.
local function resumable(w, q)
  local client, listing = w.client, w.listing
  w.on_checkpoint = q.on_checkpoint
  -- a listing without save/load (or a client without a query schema) has no tokens
  if not (listing.save and client.schema) then
    if q.resume ~= nil then resume.bad("cannot be taken: this listing has no resume tokens") end
    return
  end
  w.fp_base, w.fp_query = resume.fingerprint(client, client.schema, q)
  if q.resume == nil then return end
  local t = resume.open(w, q.resume)
  w.base_pages, w.base_given = t.pages, t.users
  if t.done then
    w.done, w.ended = true, true
  else
    w.state = listing.load(client, w.p, t.position)
  end
end

-- One listing in progress: its own sessions (so that break, an error or the
-- end releases those connections at once), its position and the requests
-- it has in flight ahead of it (`queue`, in page order).
local function open_walk(client, listing, q)
  local transport = client.transport
  q = q == nil and {} or q
  local ok, p = pcall(listing.prepare, client, q)
  local w
  if ok then
    w = {
      client = client, transport = transport, listing = listing, p = p,
      state = listing.first(p), number = 0, done = false,
      pages = 0, given = 0, base_pages = 0, base_given = 0, -- resume tokens' counts
    }
    ok, p = pcall(resumable, w, q)
  end
  if not ok then
    if errors.is(p) then p.provider = client.provider end
    error(p, 0)
  end
  p = w.p
  p.warned = {} -- fields this listing has warned of (normalize.rows)
  local rows
  if listing.rows then
    local spec, naive, shift = listing.rows(p)
    rows = spec and { spec, naive or 0, shift or 0, not transport.strict }
  end
  w.max_pages = p.max_pages
  -- the client's deadline bounds the whole listing, not each request
  w.deadline_at = transport:deadline_at()
  w.power, w.steps = 1, 0 -- loop guard state (check_loop)
  w.queue, w.idle = {}, {}
  w.concurrency = transport.concurrency
  w.rows = rows -- the core shapes rows as it decodes them
  if listing.guess and w.concurrency > 1 then w.guess = guesser(w) end
  return w
end

-- A session for one request of the walk: an idle one, or a new one that
-- shares the walk's multi handle (and so its connections).
local function take_session(w)
  local idle = w.idle
  local s = idle[#idle]
  if s then
    idle[#idle] = nil
    return s
  end
  s = w.transport:session(w.first_session)
  w.first_session = w.first_session or s
  return s
end

local function cancel_queue(w)
  local q = w.queue
  for i = #q, 1, -1 do
    q[i].session:cancel()
    w.idle[#w.idle + 1] = q[i].session
    q[i] = nil
  end
end

local function close_walk(w)
  w.done = true
  cancel_queue(w)
  if not w.single then -- page()'s one session is the client's, handed back by page()
    for i = #w.idle, 1, -1 do
      w.idle[i]:close()
      w.idle[i] = nil
    end
  end
end

-- A position as a set key: a cursor or link, a page number, an offset.
local function position(state)
  if type(state) == "table" then state = state.page or state.offset or state.cursor end
  if type(state) == "string" or type(state) == "number" then return state end
  return nil
end

-- A page as a set key: the unique identity of each of its rows, in order.
-- Never the dedupe key: one Arthur user in two tasks is two rows, and two
-- one-row pages of that user are honest (ties, tiny pages), not a loop.
local function fingerprint(w, items)
  local n = #items
  if n == 0 then return nil end
  local identity = w.listing.identity or function(u) return u.id end
  local ids = {}
  for i = 1, n do ids[i] = tostring(identity(items[i])) end
  return table.concat(ids, "\0")
end

-- A server that sends the listing round in circles would page forever:
-- stop when the next position was already asked for, or when a page holds
-- exactly the rows of the one before it (a server answering the same
-- position again). Returns a message, or nil.
local function check_loop(w, items, next_state)
  local print_ = fingerprint(w, items)
  if print_ and print_ == w.last_print then
    return ("page %d returned exactly the users of page %d; stopping instead of looping")
      :format(w.number, w.number - 1)
  end
  w.last_print = print_
  -- Brent's cycle detection: one remembered position, renewed at steps 1,
  -- 2, 4, 8...; it finds a cycle of any length in flat memory, where a set of
  -- every cursor seen would grow with the listing.
  local nxt = next_state ~= nil and position(next_state)
  if nxt == nil then return nil end
  if nxt == position(w.state) or nxt == w.mark then
    return ("the server pointed back to a position already listed (%s); stopping instead of looping")
      :format(tostring(nxt))
  end
  w.steps = w.steps + 1
  if w.steps == w.power then
    w.mark, w.power, w.steps = nxt, w.power * 2, 0
  end
  return nil
end

-- Bodies in flight are held whole until their page is read (a 5,000-row
-- Arthur page is 3 MB): past this many bytes of them, fewer pages are asked
-- for ahead, so that large pages do not make memory grow with concurrency.
local AHEAD_BYTES = 8 * 1024 * 1024

-- How many requests may be in flight: the client's concurrency, lowered to
-- what the last rate-limit headers said is left and to what fits in
-- AHEAD_BYTES at the size of the last page.
local function window(w)
  local n = w.transport:window(w.single and 1 or w.concurrency)
  local size = w.page_bytes
  if size and size * n > AHEAD_BYTES then
    n = math.max(1, math.floor(AHEAD_BYTES / size))
  end
  return n
end

local function same(a, b)
  if a == b then return true end
  local pa = position(a)
  return pa ~= nil and pa == position(b)
end

-- The request for the page at `state`, with what the walk does when its
-- body arrives, before it is decoded (`arrived`): start the next request.
local refill -- below
local function request_of(w, state)
  local req = w.listing.request(w.client, w.p, state)
  req.rows = w.rows
  req.arrived = w.guess
  if not req.arrived and w.listing.ahead and w.concurrency > 1 and not w.single then
    req.arrived = function() refill(w, state) end
  end
  return req
end

-- While a spent rate limit is waited out, nothing starts early: the next
-- request goes through the transport, which waits first.
local function paused(w) return w.transport:paused() end

-- Starts the request for `state` ahead of the caller, in page order.
local function start(w, state)
  local session = take_session(w)
  local req = request_of(w, state)
  local begun = w.transport:begin(req, session, w.deadline_at)
  local q = w.queue
  q[#q + 1] = { state = state, req = req, session = session, begun = begun }
end

-- Starts requests until `window` are in flight: the walk's position first,
-- then the positions `ahead` predicts (never past max_pages). `arrived`:
-- the position of a page that has come but is not read yet; the queue
-- follows it.
local function fill(w, arrived)
  local q, listing = w.queue, w.listing
  if paused(w) then return end
  local want = window(w)
  local read = w.number + (arrived ~= nil and 1 or 0)
  while #q < want do
    local state
    if #q > 0 then
      state = listing.ahead and listing.ahead(w.p, q[#q].state)
    elseif arrived ~= nil then
      state = listing.ahead(w.p, arrived)
    else
      state = w.state
    end
    if state == nil then return end
    if w.max_pages and read + #q >= w.max_pages then return end
    start(w, state)
  end
end

-- Page-number and offset listings: when the page at `state` arrives, the
-- next request of the window goes out before that page is decoded (else
-- each slot would idle for a page's decoding per cycle). Not on the first
-- page: only once a page has been read does `ahead` know what the server
-- said of the end (Arthur's count).
function refill(w, state)
  if not w.done and w.number > 0 then fill(w, state) end
end

-- Cursor listings with `guess`: the next position read from a page's raw
-- body as soon as it arrives, so that the next request is on its way while
-- this page is decoded. Only a guess: the pager keeps that request if parse
-- gives the same position, else cancels it and stops guessing.
function guesser(w)
  return function(text)
    if w.no_guess or #w.queue > 0 or paused(w) then return end
    if w.max_pages and w.number + 1 >= w.max_pages then return end
    local ok, guess = pcall(w.listing.guess, w.client, text, w.p, w.state)
    -- a link it cannot read spoils only the guess; anything else (a bug, the
    -- interpreter's "interrupted!" on Ctrl-C) is not the guess's to swallow
    if not ok and not errors.is(guess) then error(guess, 0) end
    if ok and guess ~= nil then
      w.guessed = true
      start(w, guess)
    end
  end
end

-- Reads a page's body (listing.parse); a parse error is raised with the
-- request it came from, after closing the walk.
local function parse_page(w, req, res, state)
  local client = w.client
  local ok, items, next_state, facts = pcall(w.listing.parse, client, res.body, w.p, state, res.shaped)
  if not ok then
    close_walk(w)
    if errors.is(items) then
      items.method, items.url = req.method, w.transport:url(req)
      items.provider = items.provider or client.provider
      w.transport:scrub(items)
    end
    error(items, 0)
  end
  return items, next_state, facts
end

-- Stale cursors (listing.recover) --------------------------------------------
-- A cursor listing's position is a row of the page before (Usertour: its
-- last user); deleting that row mid-listing makes it stale. The walk keeps
-- what recovery needs, and only that: the position of the last page read
-- (`prev_state`), the identities of its rows (`prev_ids`) and the last row
-- given (`last_given`).

local function default_identity(u) return u.id end

-- The identities of a page's rows, as a set.
local function identities(w, items)
  local identity, set = w.listing.identity or default_identity, {}
  for i = 1, #items do set[identity(items[i])] = true end
  return set
end

-- Whether the page at the walk's position went stale (err: its error; nil:
-- it came back empty and last), and what is left to do: "recover" when the
-- page before is known (recover() asks it again); "token" on a resumed
-- walk's first page, whose page before the token does not hold (an empty
-- last page there may be stale too: nothing can tell); else nil (the first
-- page of a listing has nothing before it).
local function stale(w, err)
  local listing = w.listing
  if listing.recover == nil or listing.recover(w.client, w.p, w.state, err) ~= true then return nil end
  if w.prev_state ~= nil and not w.single then return "recover" end
  if w.base_pages > 0 and w.number == 0 then return "token" end
  return nil
end

local STALE_TOKEN = "the resume token's position went stale: the row it continues after was deleted "
  .. "since the token was made, or none comes after it any more, and the page before it, which would "
  .. "tell, is not in the token; list again without it (dedupe on your side by the key)"

-- The page at the walk's position went stale: asks again for the page before
-- through the transport, and gives what it holds that was not given
-- yet, with its next position. Raises (after closing the walk) when that
-- page's position is stale too: the rows after the last one given may be
-- missing, and no position is left to find them from.
-- @return items, next_state, facts, res, req
local function recover(w, stale_req, cause)
  local client, listing, state = w.client, w.listing, w.prev_state
  local req = listing.request(client, w.p, state)
  req.rows = w.rows
  local url = w.transport:url(req)
  local stale_url = w.transport:url(stale_req)
  w.transport:emit{ type = "recover", method = req.method, url = url, stale = stale_url,
                status = cause and cause.status, code = cause and cause.code }
  local session = take_session(w)
  local res, err = w.transport:collect(req, session, w.deadline_at)
  w.idle[#w.idle + 1] = session
  local items, next_state, facts
  if res then items, next_state, facts = parse_page(w, req, res, state) end
  local gone
  if res then
    gone = #items == 0 and next_state == nil and listing.recover(client, w.p, state, nil) == true
  else
    gone = listing.recover(client, w.p, state, err) == true
  end
  if gone then
    close_walk(w)
    local why = err or cause
    error(w.transport:scrub(errors.new{ kind = why and why.kind or "api", provider = client.provider,
      status = why and why.status, code = why and why.code, method = req.method, url = url,
      message = ("users after %s may be missing: the cursor's user and the one before were both "
        .. "deleted meanwhile (%s is stale, and so is the page before it, asked again: %s)")
        :format(w.last_given ~= nil and tostring(w.last_given) or ("page " .. w.number),
          stale_url, url) }), 0)
  end
  if not res then
    close_walk(w)
    error(err, 0)
  end
  local given, kept = w.prev_ids, {}
  local identity = listing.identity or default_identity
  for i = 1, #items do
    if not given[identity(items[i])] then kept[#kept + 1] = items[i] end
  end
  -- the page before, as the server now has it, is what a later recovery skips
  w.prev_ids = identities(w, items)
  return kept, next_state, facts, res, req
end

-- The token to continue at `state` (nil: after the last page, an end
-- token); nil for a listing without tokens.
local function token_at(w, state)
  if not w.fp_query then return nil end
  return resume.seal(w, state ~= nil and w.listing.save(w.client, w.p, state) or nil)
end

-- Fetches the next page of a walk: page table, or nil at the end; raises
-- the error value on failure (after closing the walk).
local function next_page(w)
  if w.done then return nil end
  if w.max_pages and w.number >= w.max_pages then
    close_walk(w)
    return nil
  end
  local client, listing = w.client, w.listing
  fill(w)
  local head = table.remove(w.queue, 1) or { session = take_session(w), req = request_of(w, w.state) }
  local req = head.req
  local res, err = w.transport:collect(req, head.session, w.deadline_at, head.begun)
  w.idle[#w.idle + 1] = head.session
  if res then w.page_bytes = res.bytes end
  local items, next_state, facts, recovered
  if not res then
    local gone = stale(w, err)
    if gone ~= "recover" then
      close_walk(w)
      if gone == "token" then err.message = (err.message or err.kind) .. "; " .. STALE_TOKEN end
      error(err, 0)
    end
    items, next_state, facts, res, req = recover(w, req, err)
    recovered = true
  else
    items, next_state, facts = parse_page(w, req, res, w.state)
    local gone = #items == 0 and next_state == nil and stale(w, nil)
    if gone == "recover" then
      -- an empty last page reached through a stale cursor (v2 Usertour)
      -- looks like the end: the page before, asked again, tells
      items, next_state, facts, res, req = recover(w, req, nil)
      recovered = true
    elseif gone == "token" then
      close_walk(w)
      error(w.transport:scrub(errors.new{ kind = "api", provider = client.provider,
        status = res.status, method = req.method, url = w.transport:url(req),
        message = "an empty last page; " .. STALE_TOKEN }), 0)
    end
  end
  w.number = w.number + 1
  local loop = check_loop(w, items, next_state)
  if loop then
    close_walk(w)
    error(w.transport:scrub(errors.new{ kind = "loop", provider = client.provider, method = req.method,
      url = w.transport:url(req), message = loop }), 0)
  end
  local page = facts or {}
  w.pages, w.given = w.pages + 1, w.given + #items
  page.users, page.number, page.status = items, w.base_pages + w.number, res.status
  w.ended = next_state == nil
  page.resume = token_at(w, next_state)
  if listing.recover then
    -- a recovered page stands at the position asked again, whose
    -- identities recover() kept
    if not recovered then w.prev_state, w.prev_ids = w.state, identities(w, items) end
    if #items > 0 then w.last_given = (listing.identity or default_identity)(items[#items]) end
  end
  if next_state == nil then
    close_walk(w) -- what was fetched past the end is dropped
  else
    -- fetched ahead on a guess that this page was not the last: keep what
    -- matches the position the server gave, drop the rest
    if w.queue[1] and not same(w.queue[1].state, next_state) then
      cancel_queue(w)
      if w.guessed then w.no_guess = true end -- a wrong guess: no more of them
    end
    w.state = next_state
    -- the next page is on its way while this one is read (concurrency 1:
    -- nothing is asked before the caller asks for it)
    if w.concurrency > 1 and not w.single then fill(w) end
  end
  return page
end

-- next_page, with the token to continue at the walk's position on any
-- error it raises (the page that failed was not given). A token that
-- cannot be made leaves the error as it was.
local function step(w)
  local ok, page = pcall(next_page, w)
  if ok then return page end
  if errors.is(page) and page.resume == nil then
    local made, token = pcall(token_at, w, w.state)
    if made then page.resume = token end
  end
  error(page, 0)
end

-- A page consumed: its token to the application (on_checkpoint). Not an
-- event of on_event: those are the transport's, each of one request.
local function checkpoint(w, page)
  if not (w.on_checkpoint and page.resume) then return end
  -- done: the page was the listing's last (not where max_pages stopped it)
  local ok, err = pcall(w.on_checkpoint, page.resume,
    { page = page.number, users = w.base_given + w.given, done = w.ended == true })
  if not ok then
    close_walk(w) -- the application's error ends the listing, as a break would
    error(err, 0)
  end
end

-- A to-be-closed value for Lua 5.4's generic for: break releases the walk.
local function closer(w)
  return setmetatable({}, { __close = function() close_walk(w) end })
end

--- Iterator over pages: `for page in client:pages(q) do ... end`.
-- Raises a structured error on failure; never ends early in silence.
function M.pages(client, listing, q)
  local w = open_walk(client, listing, q)
  local last -- handed out, consumed once the caller asks for more
  return function()
    if last then
      checkpoint(w, last)
      last = nil
    end
    last = step(w)
    return last
  end, nil, nil, closer(w)
end

--- Iterator over users across all pages.
function M.users(client, listing, q)
  local w = open_walk(client, listing, q)
  local items, i, page = nil, 0, nil
  local seen = w.p.dedupe and listing.key and {}
  local function iter()
    while true do
      if items and i < #items then
        i = i + 1
        local u = items[i]
        if not seen then return u end
        local k = listing.key(u)
        if not seen[k] then
          seen[k] = true
          return u
        end
      else
        items = nil -- the page read so far is garbage from here on
        if page then
          checkpoint(w, page)
          page = nil
        end
        if STEP_PER_BYTE and w.page_bytes then
          collectgarbage("step", math.ceil(w.page_bytes * STEP_PER_BYTE))
        end
        page = step(w)
        if not page then return nil end
        items, i = page.users, 0
      end
    end
  end
  return iter, nil, nil, closer(w)
end

--- One page: page table, or nil, err; never raises for API errors.
function M.page(client, listing, q)
  return errors.protect(function()
    local w = open_walk(client, listing, q)
    local session = w.transport:acquire()
    w.idle[1], w.single, w.guess = session, true, nil
    local ok, page = pcall(step, w)
    cancel_queue(w)
    w.transport:release(session)
    if not ok then error(page, 0) end
    page.next = (not w.done) and w.state or nil
    return page
  end)
end

return M
