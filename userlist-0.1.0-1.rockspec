rockspec_format = "3.0"
package = "userlist"
version = "0.1.0-1"
source = {
  url = "git+https://example.invalid/userlist.git",
  tag = "v" .. version:match("^[^-]+"),
}
description = {
  summary = "List the users of Helicone, Openlayer, Arthur and Usertour as Lua iterators",
  detailed = [[
A Lua module with a C core (libcurl + lua-cjson) that lists the users of
LLM-observability and product-adoption platforms as idiomatic iterators.
Works on Lua 5.1-5.4 and LuaJIT, and inside OpenResty.]],
  license = "MIT",
  labels = { "http", "api", "libcurl" },
}
dependencies = {
  "lua >= 5.1, < 5.5",
  "lua-cjson >= 2.1.0",
  "argparse >= 0.7", -- the userlist command only (Debian: lua-argparse)
}
-- libcurl is found by LuaRocks' search of its external_deps_dirs, which knows
-- multiarch library folders (/usr/lib/x86_64-linux-gnu). Its headers are not
-- asked for by name: Debian keeps curl/curl.h in /usr/include/<multiarch>/,
-- where LuaRocks does not look but the C compiler does by default, so
-- `header = "curl/curl.h"` would fail there. Elsewhere CURL_INCDIR is the
-- prefix's include/ (/usr/local, Homebrew, a CURL_DIR=... given to luarocks).
external_dependencies = {
  CURL = { library = "curl" },
}
build = {
  type = "builtin",
  modules = {
    userlist = "lua/userlist/init.lua",
    ["userlist.args"] = "lua/userlist/args.lua",
    ["userlist.client"] = "lua/userlist/client.lua",
    ["userlist.errors"] = "lua/userlist/errors.lua",
    ["userlist.normalize"] = "lua/userlist/normalize.lua",
    ["userlist.pager"] = "lua/userlist/pager.lua",
    ["userlist.resume"] = "lua/userlist/resume.lua",
    ["userlist.transport"] = "lua/userlist/transport.lua",
    ["userlist.engine.blocking"] = "lua/userlist/engine/blocking.lua",
    ["userlist.engine.nginx"] = "lua/userlist/engine/nginx.lua",
    ["userlist.time"] = "lua/userlist/time.lua",
    ["userlist.providers"] = "lua/userlist/providers.lua",
    ["userlist.helicone"] = "lua/userlist/helicone.lua",
    ["userlist.openlayer"] = "lua/userlist/openlayer.lua",
    ["userlist.arthur"] = "lua/userlist/arthur.lua",
    ["userlist.usertour"] = "lua/userlist/usertour.lua",
    ["userlist.cli"] = "lua/userlist/cli.lua",
    ["userlist.core"] = {
      sources = {
        "csrc/body.c", "csrc/buffer.c", "csrc/core.c", "csrc/error.c", "csrc/headers.c", "csrc/json.c", "csrc/multi.c", "csrc/request.c", "csrc/response.c", "csrc/session.c", "csrc/shape.c", "csrc/token.c",
      },
      libraries = { "curl", "pthread" },
      incdirs = { "$(CURL_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)" },
      defines = { "_POSIX_C_SOURCE=200809L", "USERLIST_VERSION=" .. version:match("^[^-]+") }, -- as make does
    },
  },
  install = {
    bin = { userlist = "bin/userlist" },
  },
}
