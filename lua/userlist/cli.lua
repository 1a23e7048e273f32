--- The `userlist` command: a provider's users in a terminal or a file.
--
--    userlist helicone --since 7d --top 10 --by cost
--    userlist openlayer --pipeline-id 182bd5e5-6e1a-4fe4-a799-aa6d9a6ab26e --format csv > users.csv
--    userlist arthur --task-id task-1 --format jsonl --fields id,task_id,tokens
--
-- One subcommand per provider of the registry (userlist.providers), its
-- flags made from the provider's declared query and options (userlist.args);
-- this module adds presentation only: summaries, default columns, text
-- syntax (7d, FIELD:dir, "COLUMN OP VALUE"), output. Keys come from the
-- environment (each provider's `env_key`, e.g. `HELICONE_API_KEY`, and
-- Arthur's base URL `ARTHUR_BASE_URL`); there is no option for a key, so
-- that none ends up in a shell history or a process list. Arguments are
-- parsed by argparse. While a listing runs and stderr is
-- a terminal, one progress line on stderr shows users, pages, the rate,
-- retries and waits (`USERLIST_PROGRESS=always|never` or `--progress`
-- overrides the terminal test). `--resume FILE` keeps the listing's resume
-- token in FILE as it goes, so that the same command, run again with its
-- output appended (>>), continues an interrupted listing (see "--resume").
--
-- Exit status: 0 done, 1 an API or network error (its one-line message on
-- stderr), 2 a usage error (bad arguments, a missing key, a query the
-- provider refuses before any request), 130 interrupted (Ctrl-C).
-- @module userlist.cli
local argparse = require "argparse"
local userlist = require "userlist"
local uargs = require "userlist.args"

local core = userlist.core
local DEFAULTS = core.defaults -- the one table of option defaults (csrc/session.c)
local floor, huge = math.floor, math.huge
local concat, sort = table.concat, table.sort

local M = {}

--- Output formats, in the order `--format` lists them.
M.FORMATS = { "table", "jsonl", "csv" }
--- Metrics `--by` ranks users by.
M.METRICS = { "cost", "tokens", "requests" }
--- The common user fields, in the order a full `jsonl` record starts with.
M.COMMON_FIELDS = { "id", "email", "requests", "sessions", "prompt_tokens", "completion_tokens",
  "tokens", "cost", "first_seen", "last_seen" }
--- Fields that hold Lua times and are written as ISO 8601 UTC strings.
M.TIME_FIELDS = { first_seen = true, last_seen = true }

-- ------------------------------------------------------------ converters
-- argparse calls these on an option's text: value, or nil and a message
-- (a usage error naming the option).

local function int_arg(s)
  local n = tonumber(s)
  if not n or n ~= floor(n) or n ~= n or n == huge or n == -huge then
    return nil, ("'%s' is not a whole number"):format(s)
  end
  return math.tointeger and math.tointeger(n) or n
end

local function positive_int(s)
  local n, err = int_arg(s)
  if not n then return nil, err end
  if n < 1 then return nil, ("'%s' must be at least 1"):format(s) end
  return n
end

local function seconds_arg(s)
  local n = tonumber(s)
  if not n or n ~= n or n < 0 or n == huge then
    return nil, ("'%s' is not a number of seconds >= 0"):format(s)
  end
  return n
end

local UNITS = { s = 1, m = 60, h = 3600, d = 86400, w = 7 * 86400 }

-- A time `ago` seconds before the run's now, which main() settles (M.pin):
-- a --resume run goes on with the now of the run that began the listing,
-- so that `--since 7d` stays the same query.
local AGO = {}

--- A time argument: `7d`, `12h`, `30m`, `90s`, `2w` (that long ago: a
-- table that M.pin turns into a Lua time), a Lua time (seconds since the
-- epoch) or an ISO 8601 string (the provider checks it).
function M.time_arg(s)
  local n, unit = s:match("^(%d+%.?%d*)([smhdw])$")
  if n then return setmetatable({ ago = floor(tonumber(n) * UNITS[unit]) }, AGO) end
  if s:match("^%d+$") then return int_arg(s) end
  if not s:match("^%d%d%d%d%-%d%d%-%d%d") then
    return nil, ("'%s' is not a time (7d, 12h, 30m, seconds since the epoch, or ISO 8601"
      .. " like 2025-06-01T00:00:00Z)"):format(s)
  end
  return s
end

-- Helicone `--sort FIELD[:asc|desc]` -> {FIELD = dir}; `none` -> false (no
-- `sort` sent: servers before 2025-03-29 refuse it)
local function sort_arg(s)
  if s == "none" then return false end
  local field, dir = s:match("^([%w_]+):(%a+)$")
  if not field then field, dir = s:match("^([%w_]+)$"), "asc" end
  if not field or (dir ~= "asc" and dir ~= "desc") then
    return nil, ("'%s' is not FIELD or FIELD:asc or FIELD:desc"):format(s)
  end
  return { [field] = dir }
end

local SET_OPS = { contains_none = true, contains_any = true, contains_all = true, one_of = true,
  none_of = true }

local function scalar(s)
  if s == "null" then return core.null end
  if s == "true" then return true end
  if s == "false" then return false end
  return tonumber(s) or s
end

--- Openlayer `--where "COLUMN OP VALUE"` -> a column filter: `records >= 10`,
-- `id one_of a,b`, `cost is null`. Values that read as numbers are numbers.
function M.where_arg(s)
  local m, op, v = s:match("^%s*(%S+)%s+(%S+)%s+(.-)%s*$")
  if not m or v == "" then return nil, ("'%s' is not \"COLUMN OPERATOR VALUE\""):format(s) end
  if SET_OPS[op] then
    local list = {}
    for item in v:gmatch("[^,]+") do list[#list + 1] = tonumber(item) or item end
    return { measurement = m, operator = op, value = list }
  end
  return { measurement = m, operator = op, value = scalar(v) }
end

local function header_arg(s)
  local name, value = s:match("^%s*([%w!#$%%&'*+.^_`|~-]+)%s*:%s*(.-)%s*$")
  if not name then return nil, ("'%s' is not \"Name: value\""):format(s) end
  return { name, value }
end

local function file_arg(s)
  if s == "" then return nil, "a file name is required" end
  return s
end

local function fields_arg(s)
  local list = {}
  for f in (s .. ","):gmatch("([^,]*),") do
    f = f:match("^%s*(.-)%s*$")
    if f == "" then return nil, ("'%s' has an empty field name"):format(s) end
    list[#list + 1] = f
  end
  return list
end

-- ------------------------------------------------------------ providers
-- Each provider's flags come from what it declares once (its query schema
-- and client options: userlist.providers, userlist.args); the command adds
-- only presentation. A flag here: { flag, help, to = "query key" | client
-- = "client option", convert =, many = (repeatable), flag_value = (a flag),
-- choices =, map =, argname = }.

local TIME_HELP = " (7d, 12h, 30m, a Lua time or ISO 8601)"

-- The text syntax of a schema type on the command line: its converter, the
-- argument's name, what the help adds.
local SYNTAX = {
  int = { convert = int_arg, arg = "<n>" },
  time = { convert = M.time_arg, arg = "<time>", help = TIME_HELP },
  sort = { convert = sort_arg, arg = "<field[:dir]>" },
}
-- Converters of particular keys, over their type's.
local CONVERT = { max_pages = positive_int, column_filters = M.where_arg }

-- Per provider: the subcommand's summary, the default fields (columns),
-- whether users have metrics (--top).
local PRESENT = {
  helicone = {
    summary = "Helicone users: POST /v1/user/metrics/query (with --user-id, /v1/user/query)",
    fields = { "id", "requests", "prompt_tokens", "completion_tokens", "tokens", "cost", "first_seen",
      "last_seen" },
    metrics = true,
  },
  openlayer = {
    summary = "Openlayer users of an inference pipeline: POST /inference-pipelines/{id}/users",
    fields = { "id", "requests", "sessions", "tokens", "cost", "first_seen", "last_seen" },
    metrics = true,
  },
  arthur = {
    summary = "Arthur GenAI Engine users of tasks: GET /api/v1/traces/users (self-hosted)",
    fields = { "id", "task_id", "requests", "sessions", "tokens", "cost", "first_seen", "last_seen" },
    metrics = true,
  },
  usertour = {
    summary = "Usertour users: GET /v1/users (v2 with --project-id and --environment-id)",
    fields = { "id", "email", "first_seen", "last_seen" },
    metrics = false,
  },
}

-- The flags of a schema's keys; `dest`: "to" (the query) or "client".
local function schema_flags(schema, dest, list)
  for _, e in ipairs(schema) do
    local syntax = SYNTAX[e.type] or {}
    for _, f in ipairs(uargs.flags(e)) do
      local o = { f[1], f.help or e.help, [dest] = e.name }
      if f.value ~= nil then
        o.flag_value = f.value
      elseif e.words then
        local words, values = {}, {}
        for i, w in ipairs(e.words) do words[i], values[w[1]] = w[1], w[2] end
        o.choices, o.map = words, function(v) return values[v] end
      else
        if syntax.help then o[2] = o[2] .. syntax.help end
        o.convert = CONVERT[e.name] or syntax.convert
        o.many = e.repeatable
        if e.choices and (e.type == "enum" or e.type == "strings") then o.choices = e.choices end
        o.argname = f.arg or e.arg or syntax.arg
        if not o.argname and not o.choices then
          o.argname = e.name:match("_ids?$") and "<id>" or ("<" .. e.name:gsub("_", "-") .. ">")
        end
      end
      list[#list + 1] = o
    end
  end
  return list
end

local PROVIDERS, NAMES = {}, {}
for name, d in userlist.providers.each() do
  local present = PRESENT[name] or { summary = name .. " users", fields = { "id" }, metrics = false }
  NAMES[#NAMES + 1] = name
  PROVIDERS[name] = {
    order = #NAMES, summary = present.summary, fields = present.fields, metrics = present.metrics,
    env = d.env_key, base_env = d.base_url_env,
    options = schema_flags(d.options, "client", schema_flags(d.query, "to", {})),
  }
end
--- The subcommands: per provider its summary, `env` (the key's variable),
-- `base_env`, default `fields`, `metrics`, and `options` (its own flags).
M.PROVIDERS = PROVIDERS

-- Options every provider takes (its own come first, with --max-pages and
-- --dedupe); `client` ones go to the constructor.
local COMMON = {
  { "--base-url", "the API's base URL (a self-hosted server, a proxy, the emulator)", client = "base_url",
    argname = "<url>" },
  { "--format", "table (default), jsonl or csv", choices = M.FORMATS, default = "table" },
  { "--fields", "comma-separated fields to show, e.g. id,cost (a.b reads a nested field)",
    convert = fields_arg, argname = "<list>" },
  { "--top", "only the N users with the highest --by; a bar chart with --format table",
    convert = positive_int, argname = "<n>" },
  { "--by", "what --top ranks by: cost (default), tokens or requests", choices = M.METRICS },
  { "--header", "an extra request header \"Name: value\" (repeat it)", convert = header_arg, many = true,
    argname = "<header>" },
  { "--timeout", ("seconds for one request (default %d)"):format(DEFAULTS.timeout), client = "timeout",
    convert = seconds_arg, argname = "<seconds>" },
  { "--deadline", "seconds for the whole listing, retries and waits included", client = "deadline",
    convert = seconds_arg, argname = "<seconds>" },
  { "--max-retries", ("retries of a failed request (default %d)"):format(DEFAULTS.max_retries),
    client = "max_retries", convert = int_arg, argname = "<n>" },
  { "--concurrency", ("pages fetched at once (default %d; 1: one at a time)"):format(DEFAULTS.concurrency),
    client = "concurrency", convert = positive_int, argname = "<n>" },
  { "--cafile", "CA bundle to verify TLS against", client = "cafile", argname = "<file>" },
  { "--strict", "stop on a field that cannot be read (default: warn on stderr, go on)",
    client = "strict", flag_value = true },
  { "--progress", "auto (default: when stderr is a terminal), always or never",
    choices = { "auto", "always", "never" } },
  { "--ascii", "draw the --top chart with # instead of block characters", flag_value = true },
  { "--resume", "keep where the listing stands in <file>, page by page, and continue from it when it"
    .. " exists: run the same command again, appending the output (>> users.csv); <file> is removed"
    .. " once the listing is complete", convert = file_arg, argname = "<file>" },
}

-- "--base-url" -> "base_url", argparse's target name
local function target_of(flag) return (flag:gsub("^%-%-", ""):gsub("%-", "_")) end

-- ------------------------------------------------------------ the parser

-- Help is printed by our own flag (argparse's calls os.exit): main() returns.
local function add_help(p, state)
  p:add_help(false)
  p:flag("-h --help", "Show this help and exit."):action(function()
    state.help = true
    state.out:write(p:get_help(), "\n")
  end)
end

local function add_options(cmd, list)
  for _, o in ipairs(list) do
    if o.flag_value ~= nil then
      cmd:flag(o[1], o[2])
    else
      local opt = cmd:option(o[1], o[2])
      if o.argname then opt:argname(o.argname) end
      if o.choices then opt:choices(o.choices) end
      if o.default then opt:default(o.default) end
      if o.convert then
        local convert, flag = o.convert, o[1]
        opt:convert(function(s)
          local v, err = convert(s)
          if v == nil then return nil, flag .. ": " .. tostring(err) end
          return v
        end)
      end
      if o.many then opt:count("*") end
    end
  end
end

local function build_parser(state)
  local titles, keys = {}, {}
  for i, name in ipairs(NAMES) do
    local def = PROVIDERS[name]
    titles[i] = name:sub(1, 1):upper() .. name:sub(2)
    keys[i] = def.env .. (def.base_env and (" (and " .. def.base_env .. ")") or "")
  end
  local parser = argparse("userlist", "List the users of " .. concat(titles, ", ", 1, #titles - 1)
      .. " or " .. titles[#titles] .. ".")
    :command_target("provider")
    :help_max_width(100)
    :epilog(table.concat({
      "Run `userlist <provider> --help` for a provider's filters.",
      "Keys come from the environment: " .. concat(keys, ", ") .. ".",
      "Progress goes to stderr while it is a terminal (USERLIST_PROGRESS=always|never overrides).",
      "Exit status: 0 done, 1 an API or network error, 2 a usage error, 130 interrupted (Ctrl-C).",
    }, "\n"))
  add_help(parser, state)
  parser:flag("--version", "Show the version and exit."):action(function()
    state.help = true
    state.out:write(("userlist %s (%s)\n"):format(userlist.version, core.user_agent))
  end)
  for _, name in ipairs(NAMES) do
    local def = PROVIDERS[name]
    local cmd = parser:command(name, def.summary):summary(def.summary)
    add_help(cmd, state)
    add_options(cmd, def.options)
    add_options(cmd, COMMON)
    local env = "Key: " .. def.env .. " (environment)"
    if def.base_env then env = env .. "; base URL: --base-url or " .. def.base_env end
    cmd:epilog(env .. ".\nDefault fields: " .. concat(def.fields, ",")
      .. (def.metrics and "" or "\nThese users have no cost, tokens or requests: --top does not apply.")
      .. "\n--resume <file> continues an interrupted listing (an error, Ctrl-C): run the same command again,"
      .. "\nappending its output (>>); no row is repeated, nor the CSV or table header."
      .. "\nExit status: 0 done, 1 an API or network error, 2 a usage error, 130 interrupted (Ctrl-C).")
  end
  return parser
end

-- ------------------------------------------------------------ values

local function is_integer(v)
  if math.type then return math.type(v) == "integer" or (v == floor(v) and v > -2 ^ 63 and v < 2 ^ 63) end
  return v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53
end

--- A number as text: whole numbers without a fraction, others with
-- `decimals` places (default: up to 14 significant digits).
function M.number_text(v, decimals)
  if v ~= v or v == huge or v == -huge then return tostring(v) end
  if is_integer(v) then
    if math.type and math.type(v) == "integer" then return tostring(v) end
    return ("%.0f"):format(v)
  end
  if decimals then return ("%." .. decimals .. "f"):format(v) end
  return ("%.14g"):format(v)
end

--- ISO 8601 UTC text of a Lua time.
function M.iso(t)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", floor(t))
end

-- user[name], or a nested field for "a.b.c" (when the user has no key "a.b.c").
local function field_value(user, name)
  local v = user[name]
  if v ~= nil or not name:find(".", 1, true) then return v end
  v = user
  for part in name:gmatch("[^.]+") do
    if type(v) ~= "table" then return nil end
    v = v[part]
  end
  return v
end
M.field_value = field_value

-- A cell's text for table and csv: nil is empty, times are ISO, tables JSON.
local function text_of(name, v, decimals)
  if v == nil or v == core.null then return "" end
  local t = type(v)
  if t == "number" then
    if M.TIME_FIELDS[name] then return M.iso(v) end
    return M.number_text(v, decimals)
  end
  if t == "table" then
    local ok, s = pcall(core.json_encode, v)
    return ok and s or "?"
  end
  return tostring(v)
end

-- Terminal text: control characters (an escape sequence in an id) shown as '?'.
local function safe(s) return (s:gsub("%c", "?")) end

-- Characters, not bytes, of a UTF-8 string.
local function width(s) return #s - select(2, s:gsub("[\128-\191]", "")) end

local function pad(s, w, right)
  local n = w - width(s)
  if n <= 0 then return s end
  return right and (string.rep(" ", n) .. s) or (s .. string.rep(" ", n))
end

-- ------------------------------------------------------------ writers
-- A writer takes users one at a time (add) and finishes (close); emit(s)
-- writes to stdout. `flush` gives emit all it holds (the table's first
-- rows) and the header, if it is yet to come: a --resume checkpoint's page
-- is then whole on stdout. `no_header`: a continued listing's output goes
-- on after the header of the run that began it.

--- CSV (RFC 4180 quoting): a field with a comma, a quote, CR, LF or
-- surrounding spaces is quoted, with quotes doubled.
function M.csv_field(s)
  if s:find('[,"\r\n]') or s:find("^%s") or s:find("%s$") then
    return '"' .. s:gsub('"', '""') .. '"'
  end
  return s
end

local function csv_writer(emit, fields, no_header)
  local started = no_header == true
  local function start()
    started = true
    local head = {}
    for i, f in ipairs(fields) do head[i] = M.csv_field(f) end
    emit(concat(head, ",") .. "\n")
  end
  return {
    add = function(user)
      if not started then start() end
      local row = {}
      for i, f in ipairs(fields) do row[i] = M.csv_field(text_of(f, field_value(user, f))) end
      emit(concat(row, ",") .. "\n")
    end,
    flush = function() if not started then start() end end,
  }
end

local function json_value(name, v)
  if M.TIME_FIELDS[name] and type(v) == "number" then v = M.iso(v) end
  local ok, s = pcall(core.json_encode, v)
  if ok then return s end
  return core.json_encode(tostring(v))
end

-- The keys of a full record: the common fields first, then the rest sorted.
local COMMON_RANK = {}
for i, f in ipairs(M.COMMON_FIELDS) do COMMON_RANK[f] = i end

local function record_keys(user)
  local keys = {}
  for k in pairs(user) do
    if type(k) == "string" then keys[#keys + 1] = k end
  end
  sort(keys, function(a, b)
    local ra, rb = COMMON_RANK[a], COMMON_RANK[b]
    if ra and rb then return ra < rb end
    if ra or rb then return ra ~= nil end
    return a < b
  end)
  return keys
end

--- One JSON object a line, keys in a stable order: with `fields` those
-- (absent ones as null), else the whole user record.
local function jsonl_writer(emit, fields)
  return {
    add = function(user)
      local keys = fields or record_keys(user)
      local parts = {}
      for i, k in ipairs(keys) do
        local v = field_value(user, k)
        parts[i] = core.json_encode(k) .. ":" .. (v == nil and "null" or json_value(k, v))
      end
      emit("{" .. concat(parts, ",") .. "}\n")
    end,
    flush = function() end,
  }
end

-- Aligned columns; the widths come from the first BUFFERED rows (later,
-- longer cells just push their line wider), so a long listing streams.
local BUFFERED = 100

local function table_writer(emit, fields, no_header)
  local rows, widths, numeric, fixed = {}, {}, {}, false
  for i, f in ipairs(fields) do widths[i], numeric[i] = width(f), true end
  local function line(cells)
    local out = {}
    for i, c in ipairs(cells) do
      out[i] = (i == #cells and not numeric[i]) and c or pad(c, widths[i], numeric[i])
    end
    return (concat(out, "  "):gsub("%s+$", "")) .. "\n"
  end
  local function fix()
    fixed = true
    if not no_header then emit(line(fields)) end
    for _, r in ipairs(rows) do emit(line(r)) end
    rows = nil
  end
  return {
    add = function(user)
      local cells = {}
      for i, f in ipairs(fields) do
        local v = field_value(user, f)
        cells[i] = safe(text_of(f, v, 6))
        if not fixed then
          if v ~= nil and type(v) ~= "number" then numeric[i] = false end
          if M.TIME_FIELDS[f] then numeric[i] = false end
          local w = width(cells[i])
          if w > widths[i] then widths[i] = w end
        end
      end
      if fixed then emit(line(cells)) else
        rows[#rows + 1] = cells
        if #rows >= BUFFERED then fix() end
      end
    end,
    flush = function() if not fixed then fix() end end,
  }
end

-- A writer of `fmt`; its close is its flush (what it holds, the header if
-- none was written).
local function new_writer(fmt, emit, fields, no_header)
  local w
  if fmt == "csv" then w = csv_writer(emit, fields, no_header)
  elseif fmt == "jsonl" then w = jsonl_writer(emit, fields)
  else w = table_writer(emit, fields, no_header) end
  w.close = w.flush
  return w
end

-- ------------------------------------------------------------ --top

-- A min-heap of the n best {value, index, user}: a user that ties keeps
-- the place of the one listed first.
local function worse(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  return a[2] > b[2]
end

local function top_collector(n, by)
  local heap, count, missing = {}, 0, 0
  local function up(i)
    while i > 1 do
      local p = floor(i / 2)
      if not worse(heap[i], heap[p]) then break end
      heap[i], heap[p] = heap[p], heap[i]
      i = p
    end
  end
  local function down(i)
    local size = #heap
    while true do
      local l, r, m = 2 * i, 2 * i + 1, i
      if l <= size and worse(heap[l], heap[m]) then m = l end
      if r <= size and worse(heap[r], heap[m]) then m = r end
      if m == i then return end
      heap[i], heap[m] = heap[m], heap[i]
      i = m
    end
  end
  return {
    add = function(user)
      count = count + 1
      local v = user[by]
      if type(v) ~= "number" or v ~= v then
        missing = missing + 1
        return
      end
      local e = { v, count, user }
      if #heap < n then
        heap[#heap + 1] = e
        up(#heap)
      elseif worse(heap[1], e) then
        heap[1] = e
        down(1)
      end
    end,
    -- the kept users, best first, and the counts
    result = function()
      local list = {}
      for i = 1, #heap do list[i] = heap[i] end
      sort(list, function(a, b) return worse(b, a) end)
      return list, count, missing
    end,
  }
end

local EIGHTHS = { "▏", "▎", "▍", "▌", "▋", "▊", "▉" }

--- A horizontal bar of `cells` characters for value/max (eighth blocks,
-- or `#` with ascii).
function M.bar(value, max, cells, ascii)
  if max <= 0 or value <= 0 then return "" end
  local eighths = floor(value / max * cells * 8 + 0.5)
  if ascii then return string.rep("#", floor(eighths / 8 + 0.5)) end
  local s = string.rep("█", floor(eighths / 8))
  local rest = eighths % 8
  if rest > 0 then s = s .. EIGHTHS[rest] end
  return s
end

local function metric_text(by, v)
  if by == "cost" then return M.number_text(v, 6) end
  return M.number_text(v)
end

--- The chart's lines: a title, then one line a user (label, bar, value).
function M.chart_lines(list, opts)
  local lines = {}
  lines[1] = ("top %d %s users by %s (of %d listed%s)"):format(#list, opts.provider, opts.by, opts.count,
    opts.missing > 0 and (", %d without %s"):format(opts.missing, opts.by) or "")
  if #list == 0 then return lines end
  local labels, values, lw, vw = {}, {}, 0, 0
  for i, e in ipairs(list) do
    local label = safe(tostring(e[3].id or "?"))
    if width(label) > 32 then label = label:sub(1, 31) .. "~" end
    labels[i], values[i] = label, metric_text(opts.by, e[1])
    if width(label) > lw then lw = width(label) end
    if #values[i] > vw then vw = #values[i] end
  end
  local cells = math.max(10, math.min(opts.columns, 120) - lw - vw - 5)
  local max = list[1][1]
  for i, e in ipairs(list) do
    local b = M.bar(e[1], max, cells, opts.ascii)
    lines[#lines + 1] = pad(labels[i], lw) .. "  " .. pad(b, cells) .. "  " .. pad(values[i], vw, true)
  end
  return lines
end

-- ------------------------------------------------------------ progress

local function plural(n, word) return ("%d %s%s"):format(n, word, n == 1 and "" or "s") end

-- One line on stderr, redrawn in place ("\r" and erase to the end of the
-- line) at most ten times a second, and at once for retries and waits.
local function new_progress(sys, provider, enabled)
  local p = { users = 0, pages = 0, requests = 0, retries = 0, waits = 0, waited = 0, shown = false }
  local start, last = core.now(), -1
  local note

  local function text(final)
    local t = core.now() - start
    local parts = { ("%s: %s, %s"):format(provider, plural(p.users, "user"), plural(p.pages, "page")) }
    if t > 0 and p.users > 0 then parts[#parts + 1] = ("%.0f users/s"):format(p.users / t) end
    if p.retries > 0 then parts[#parts + 1] = plural(p.retries, "retry"):gsub("retrys", "retries") end
    if p.waits > 0 then parts[#parts + 1] = ("%s (%.1fs)"):format(plural(p.waits, "wait"), p.waited) end
    local s = concat(parts, ", ")
    if final then return s .. (" - %s in %.1fs"):format(final, t) end
    if note then s = s .. " - " .. note end
    return s
  end

  local function draw(force, final)
    if not enabled then return end
    local now = core.now()
    if not force and now - last < 0.1 then return end
    last = now
    local s = text(final)
    local cols = sys.columns or 80
    if width(s) > cols - 1 then s = s:sub(1, cols - 2) .. "~" end
    sys.err:write("\r", s, "\27[K", final and "\n" or "")
    p.shown = not final
  end

  function p.user()
    p.users = p.users + 1
    if enabled then draw(false) end
  end

  function p.event(ev)
    local t = ev.type
    if t == "request" then
      p.requests = p.requests + 1
      note = nil
    elseif t == "response" then
      local s = ev.status
      if s and s >= 200 and s < 300 and s ~= 202 and not ev.kind then p.pages = p.pages + 1 end
      draw(false)
    elseif t == "retry" then
      p.retries = p.retries + 1
      note = ("retry %d after %s"):format(ev.attempt or p.retries,
        ev.status and ("http " .. ev.status) or tostring(ev.kind))
      draw(true)
    elseif t == "wait" then
      p.waits = p.waits + 1
      p.waited = p.waited + (ev.wait or 0)
      note = ("waiting %.1fs (%s)"):format(ev.wait or 0, tostring(ev.reason))
      draw(true)
    elseif t == "warning" or t == "recover" or t == "fallback" then
      -- what the listing could not read, or worked around: said whatever the
      -- progress mode, one line each
      local what = t == "warning" and ev.message
        or t == "recover" and ("a stale cursor (its user was deleted): asked again for " .. tostring(ev.url))
        or ("the server refused the default sort (" .. tostring(ev.message) .. "): listing without it")
      p.clear()
      sys.err:write(("userlist: %s %s: %s\n"):format(tostring(ev.provider), t, what))
      draw(true)
    end
  end

  -- Erases the line before stdout writes to the same terminal.
  function p.clear()
    if p.shown then
      sys.err:write("\r\27[K")
      p.shown = false
    end
  end

  function p.finish(how) draw(true, how) end
  return p
end

-- ------------------------------------------------------------ running

local function is_tty(fd)
  local ok, how, code = os.execute("test -t " .. fd)
  if type(ok) == "number" then return ok == 0 end -- Lua 5.1: the status
  return ok == true and (how == nil or how == "exit") and (code == nil or code == 0)
end

local function terminal_columns(getenv)
  local c = tonumber(getenv("COLUMNS") or "")
  if c and c >= 20 then return floor(c) end
  local p = io.popen("stty size 2>/dev/null")
  if p then
    local s = p:read("*a") or ""
    p:close()
    c = tonumber(s:match("^%s*%d+%s+(%d+)"))
    if c and c >= 20 then return c end
  end
  return 80
end

local function default_sys()
  local sys = { out = io.stdout, err = io.stderr, getenv = os.getenv, time = os.time }
  return sys
end

-- "cli.lua:12: userlist.helicone: no API key" -> the message alone
local function plain(msg)
  msg = tostring(msg)
  return (msg:gsub("^[^:\n]*:%d+: ", ""))
end

local function usage(sys, provider, msg)
  sys.err:write("userlist: ", msg, "\n",
    ("Try 'userlist %s--help'.\n"):format(provider and (provider .. " ") or ""))
  return 2
end

-- The key and base URL from the environment: copts, or nil and a usage message.
local function environment(sys, def, parsed)
  local key = sys.getenv(def.env)
  if key == nil or key == "" then
    return nil, ("no API key: set %s in the environment"):format(def.env)
  end
  local base_url = parsed.base_url or (def.base_env and sys.getenv(def.base_env)) or nil
  if def.base_env and (base_url == nil or base_url == "") then
    return nil, ("no base URL: pass --base-url or set %s"):format(def.base_env)
  end
  -- the key as sys.getenv has it (the constructor would read os.getenv)
  return { api_key = key, base_url = (base_url ~= "" and base_url) or nil }
end

-- The parsed flags as the query and the client options (into copts).
local function query_of(def, parsed, copts)
  local q = {}
  for _, list in ipairs{ def.options, COMMON } do
    for _, o in ipairs(list) do
      local v = parsed[target_of(o[1])]
      if o.flag_value ~= nil then v = v and o.flag_value or nil end
      if o.many and type(v) == "table" and #v == 0 then v = nil end
      if v ~= nil and o.map then v = o.map(v) end
      if v ~= nil then
        if o.to then q[o.to] = v elseif o.client then copts[o.client] = v end
      end
    end
  end
  if parsed.header and #parsed.header > 0 then
    copts.headers = {}
    for _, h in ipairs(parsed.header) do copts.headers[h[1]] = h[2] end
  end
  return q
end

-- What to write and where: {fields, fmt, by, show, stdout_tty}, or nil and
-- a usage message.
local function output_of(sys, name, def, parsed)
  local o = { fields = parsed.fields, fmt = parsed.format, by = parsed.by }
  if o.by and not parsed.top then return nil, "--by goes with --top N" end
  if parsed.top and parsed.resume then
    return nil, "--resume does not go with --top (the top needs every user in one run)"
  end
  if parsed.top then
    if not def.metrics then
      return nil, name .. " users have no cost, tokens or requests: --top does not apply"
    end
    o.by = o.by or "cost"
  end
  if not o.fields and o.fmt ~= "jsonl" then o.fields = def.fields end
  local stderr_tty = sys.stderr_tty
  local mode = parsed.progress or sys.getenv("USERLIST_PROGRESS") or "auto"
  if mode ~= "auto" and mode ~= "always" and mode ~= "never" then
    return nil, ("USERLIST_PROGRESS must be auto, always or never, got '%s'"):format(mode)
  end
  if mode == "auto" and stderr_tty == nil then stderr_tty = is_tty(2) end
  o.show = mode == "always" or (mode == "auto" and stderr_tty)
  o.stdout_tty = sys.stdout_tty
  if o.stdout_tty == nil then o.stdout_tty = o.show and is_tty(1) or false end
  if o.show or (parsed.top and o.fmt == "table") then
    sys.columns = sys.columns or terminal_columns(sys.getenv)
  end
  return o
end

-- Lists the users into the writer (or the --top collector, then the chart or
-- the writer). A failed listing shows the rows it got (stdout), then the
-- error (stderr). @return true, or false and the error
local function list(sys, name, client, q, parsed, o, progress, emit)
  local writer = new_writer(o.fmt, emit, o.fields)
  local top = parsed.top and top_collector(parsed.top, o.by)
  local sink = top or writer
  local ok, err = pcall(function()
    for user in client:users(q) do
      progress.user()
      sink.add(user)
    end
  end)
  client:close()
  progress.finish(ok and "done" or "stopped")
  if ok and top then
    local rows, count, missing = top.result()
    if o.fmt == "table" then
      local lines = M.chart_lines(rows, { provider = name, by = o.by, count = count, missing = missing,
        columns = sys.columns or 80, ascii = parsed.ascii or not M.utf8_locale(sys.getenv) })
      for _, l in ipairs(lines) do emit(l .. "\n") end
    else
      for _, e in ipairs(rows) do writer.add(e[3]) end
      writer.close()
    end
  elseif ok or (not top and progress.users > 0) then
    writer.close()
  end
  sys.out:flush()
  return ok, err
end

-- Ctrl-C: the standalone interpreter (lua.c, luajit.c) turns SIGINT into
-- an "interrupted!" error raised at the next Lua instruction (a second one
-- kills the process). A library that caught it on the way and made it a
-- userlist error keeps the words in the message.
local function interrupted(err)
  local msg = err
  if userlist.is_error(err) then msg = err.message end
  return type(msg) == "string" and msg:find("interrupted!", 1, true) ~= nil
end

M.INTERRUPTED = 130 -- the exit status of a listing stopped by Ctrl-C (128 + SIGINT)

-- The exit status of a failed listing, its one line on stderr.
local function failed(sys, name, err)
  if interrupted(err) then
    sys.err:write("userlist: interrupted\n")
    return M.INTERRUPTED
  end
  if not userlist.is_error(err) then error(err, 0) end -- a bug, not the API: let Lua show where
  sys.err:write(tostring(err), "\n")
  if err.kind == "invalid" then
    sys.err:write(("Try 'userlist %s --help'.\n"):format(name))
    return 2
  end
  return 1
end

-- ------------------------------------------------------------ --resume
-- `--resume FILE` keeps the listing's resume token (userlist.resume) in
-- FILE, saved once a page is consumed (the query's on_checkpoint) and only
-- after that page's rows are written and flushed, so that the rows out and
-- the token in FILE agree: the next run (the same command, its output
-- appended) starts where those rows end. Rows of a page are held until its
-- checkpoint and written in one call; a page not consumed when the run
-- stops (an error, Ctrl-C) is dropped, and comes again in the next run.
-- FILE is replaced whole (FILE.tmp, then a rename) and removed when the
-- listing is complete.
--
-- Ctrl-C can land on any Lua instruction, a checkpoint's too: the
-- checkpoint is pending from when its rows are set apart until its token is
-- saved, and a run that stops while one is pending finishes it first (the
-- rows written once, then the token). Whether the rows went out is a flag
-- set just before the write; on a file (what >> gives), the file's end
-- before the write tells for sure.

local TOKEN_MAX = require("userlist.args").common.resume.max_len -- the longest token a query takes

-- FILE: the token on its first line, then "now <seconds>" when the query
-- has times relative to now (--since 7d): the now they were taken from.

--- Turns the query's relative times (time_arg) into Lua times before `now`.
-- @return whether there were any
function M.pin(q, now)
  local any = false
  for k, v in pairs(q) do
    if getmetatable(v) == AGO then
      q[k], any = now - v.ago, true
    end
  end
  return any
end

-- The token in `path`, trimmed ("" for an empty file), and the now its
-- relative times were taken from (or nil); nil when there is no such file;
-- nil and a message when it cannot be read.
local function read_token(path)
  local f, err, code = io.open(path, "rb")
  if not f then
    if code == 2 then return nil end -- ENOENT: a new listing
    return nil, err
  end
  local s = f:read(TOKEN_MAX + 64) or "" -- a directory reads as nothing: not a token
  f:close()
  local token, now = s:match("^%s*(%S*)%s+now (%d+)%s*$")
  if token then return token, nil, tonumber(now) end
  return (s:match("^%s*(.-)%s*$"))
end

-- Writes `token` (and `now`, if any) to `path` at once: FILE holds a whole
-- token, this one or the one before. true, or nil and a message.
local function save_token(path, token, now)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then return nil, err end
  local ok, werr = f:write(token, "\n", now and ("now %d\n"):format(now) or "")
  local closed, cerr = f:close()
  if ok and closed then
    ok, werr = os.rename(tmp, path)
    if ok then return true end
  end
  os.remove(tmp)
  return nil, werr or cerr
end

-- Whether a token can be saved next to `path`: nil, or a usage message.
local function unwritable(path)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then return ("--resume: cannot write %s (%s)"):format(tmp, tostring(err)) end
  f:close()
  os.remove(tmp)
end

-- The command's own failures in a --resume run (FILE or stdout cannot be
-- written): error values {message =} with this metatable.
local FAILED = {}
local function fail(message) error(setmetatable({ message = message }, FAILED), 0) end

local function users_of(token)
  local info = token and userlist.token_info(token)
  return info and info.users
end

-- Lists the users of a --resume run. `token`: FILE's text (nil: no FILE).
-- @return the exit status
local function list_resumable(sys, name, client, q, o, progress, file, token, now)
  local out = sys.out
  local start = token and userlist.token_info(token) -- nil for a token the listing will refuse
  -- a token past a page: that page's run wrote the header
  local continuing = start ~= nil and start.pages > 0
  local sok, pos = pcall(out.seek, out, "cur")
  local seekable = sok and pos ~= nil -- a file (not a terminal or a pipe)
  local buf = {} -- the rows of the page being read
  local cp = { pending = nil, chunk = nil, written = false, mark = nil } -- the checkpoint under way
  local saved, done -- the last token saved by this run; whether its page was the listing's last

  local writer = new_writer(o.fmt, function(s) buf[#buf + 1] = s end, o.fields, continuing)
  local function write_out(s)
    if s == "" then return true end
    if o.stdout_tty then progress.clear() end
    return out:write(s)
  end

  -- the pending checkpoint: its rows once, flushed, then its token in FILE
  local function commit()
    local ok, err = true, nil
    if not cp.written then
      cp.mark = nil
      if seekable then cp.mark = out:seek("end") end
      cp.written = true
      ok, err = write_out(cp.chunk)
    end
    if ok then ok, err = out:flush() end
    if not ok then
      cp.pending = nil -- FILE stays where the rows written surely end
      fail(("cannot write the output (%s)"):format(tostring(err)))
    end
    ok, err = save_token(file, cp.pending, now)
    if not ok then fail(("--resume: cannot save the resume token in %s (%s)"):format(file, tostring(err))) end
    saved = cp.pending
    cp.pending = nil
  end

  -- a run that stops while a checkpoint is pending finishes it
  local function finish_pending()
    if not cp.pending then return true end
    if cp.written and cp.mark then
      -- did the write happen? the file's end says (seek writes what the buffer holds)
      local ok, at = pcall(out.seek, out, "end")
      if ok and at == cp.mark then cp.written = false end
    end
    return pcall(commit)
  end

  q.on_checkpoint = function(t, info)
    writer.flush()
    cp.written, cp.mark = false, nil
    cp.chunk = concat(buf)
    buf = {}
    done = info.done
    cp.pending = t -- from here the page is as good as written
    commit()
  end

  local ok, err = pcall(function()
    local iter, state, first, closing = client:users(q)
    if start then
      progress.clear()
      sys.err:write(("userlist: continuing from %s: after %s, %s%s\n"):format(file,
        plural(start.users, "user"), plural(start.pages, "page"),
        start.done and " (the listing was complete)" or ""))
    end
    for user in iter, state, first, closing do
      progress.user()
      writer.add(user)
    end
    writer.close() -- what a run without a page gives (a complete listing resumed)
    local done_ok, why = write_out(concat(buf))
    buf = {}
    if done_ok then done_ok, why = out:flush() end
    if not done_ok then fail(("cannot write the output (%s)"):format(tostring(why))) end
  end)
  local fok, ferr = finish_pending()
  client:close()
  progress.finish(ok and "done" or "stopped")
  local function say(s) sys.err:write("userlist: ", s, "\n") end

  if ok then
    if done == false then
      say(("stopped after --max-pages; %s holds where to continue (run the same command again)")
        :format(file))
    else
      os.remove(file)
    end
    return 0
  end
  if not fok then err = ferr end
  if getmetatable(err) == FAILED then
    say(err.message)
    return 1
  end
  -- the token to continue at the page that failed: the last checkpoint's,
  -- or one that knows more (a fallback the listing made since)
  local current, unsaved = saved or token, nil
  if userlist.is_error(err) and err.resume then
    local saved_now, why = save_token(file, err.resume, now)
    if saved_now then current = err.resume else unsaved = why end
  end
  if interrupted(err) then
    if users_of(current) then
      say(("interrupted; run the same command again to continue from %s (after %s)")
        :format(file, plural(users_of(current), "user")))
    else
      say("interrupted before a page was listed; run the same command again to start over")
    end
    return M.INTERRUPTED
  end
  -- a bug, or a query the provider refuses: as without --resume
  if not userlist.is_error(err) or (err.kind == "invalid" and err.field ~= "resume") then
    return failed(sys, name, err)
  end
  sys.err:write(tostring(err), "\n")
  if err.kind == "invalid" then
    say(("--resume %s: the file holds no resume token of this listing; remove it to start over")
      :format(file))
    return 2
  end
  if unsaved then
    say(("--resume: cannot save the resume token in %s (%s)"):format(file, tostring(unsaved)))
  end
  if users_of(current) then
    say(("run the same command again to continue from %s (%s listed)")
      :format(file, plural(users_of(current), "user")))
  end
  return 1
end


--- Runs the command. `argv`: the arguments (Lua's `arg`); `sys` (for tests):
-- `out`, `err` (files), `getenv`, `stderr_tty`, `stdout_tty`, `columns`,
-- `time` (the clock of relative times such as --since 7d).
-- @return the exit status
function M.main(argv, sys)
  local base = default_sys()
  for k, v in pairs(sys or {}) do base[k] = v end
  sys = base
  local args = {}
  for i = 1, #(argv or {}) do args[i] = argv[i] end

  local state = { out = sys.out }
  local parser = build_parser(state)
  local ok, parsed = parser:pparse(args)
  if state.help then return 0 end
  local named = PROVIDERS[args[1] or ""] and args[1] or nil
  if not ok then return usage(sys, named, parsed) end
  local name = parsed.provider
  local def = PROVIDERS[name]

  local copts, why = environment(sys, def, parsed)
  if not copts then return usage(sys, name, why) end
  local q = query_of(def, parsed, copts)
  local o
  o, why = output_of(sys, name, def, parsed)
  if not o then return usage(sys, name, why) end
  local file, token, now = parsed.resume, nil, nil
  if file then
    token, why, now = read_token(file)
    if why then return usage(sys, name, ("--resume: cannot read %s (%s)"):format(file, tostring(why))) end
    why = unwritable(file)
    if why then return usage(sys, name, why) end
    q.resume = token
  end
  now = now or sys.time()
  if not M.pin(q, now) then now = nil end -- nothing relative: FILE holds the token alone

  local progress = new_progress(sys, name, o.show)
  copts.on_event = progress.event
  local function emit(s)
    if o.stdout_tty then progress.clear() end
    sys.out:write(s)
  end
  local okc, client = pcall(userlist[name], copts)
  if not okc then return usage(sys, name, plain(client)) end
  if file then return list_resumable(sys, name, client, q, o, progress, file, token, now) end
  local okl, err = list(sys, name, client, q, parsed, o, progress, emit)
  if not okl then return failed(sys, name, err) end
  return 0
end

--- Whether the locale says UTF-8 (the chart's block characters).
function M.utf8_locale(getenv)
  getenv = getenv or os.getenv
  local l = getenv("LC_ALL")
  if l == nil or l == "" then l = getenv("LC_CTYPE") end
  if l == nil or l == "" then l = getenv("LANG") end
  return l ~= nil and l:lower():gsub("%-", ""):find("utf8", 1, true) ~= nil
end

return M
