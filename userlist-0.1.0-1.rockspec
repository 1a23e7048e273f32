rockspec_format = "3.0"
package = "userlist"
version = "0.1.0-1"
source = {
  url = "git+https://example.invalid/userlist.git",
  tag = "v0.1.0",
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
}
external_dependencies = {
  CURL = { header = "curl/curl.h", library = "curl" },
}
build = {
  type = "builtin",
  modules = {
    userlist = "lua/userlist/init.lua",
    ["userlist.client"] = "lua/userlist/client.lua",
    ["userlist.errors"] = "lua/userlist/errors.lua",
    ["userlist.normalize"] = "lua/userlist/normalize.lua",
    ["userlist.pager"] = "lua/userlist/pager.lua",
    ["userlist.time"] = "lua/userlist/time.lua",
    ["userlist.helicone"] = "lua/userlist/helicone.lua",
    ["userlist.openlayer"] = "lua/userlist/openlayer.lua",
    ["userlist.arthur"] = "lua/userlist/arthur.lua",
    ["userlist.usertour"] = "lua/userlist/usertour.lua",
    ["userlist.core"] = {
      sources = {
        "csrc/body.c", "csrc/buffer.c", "csrc/core.c", "csrc/error.c", "csrc/headers.c", "csrc/session.c",
      },
      libraries = { "curl", "pthread" },
      incdirs = { "$(CURL_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)" },
    },
  },
}
