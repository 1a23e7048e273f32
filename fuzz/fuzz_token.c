/* libFuzzer target: resume tokens (csrc/token.c). Any input, as a token and
 * behind the "ul1." prefix, is opened without a crash, and what opens is
 * canonical: sealing its payload gives back the very input. Any non-empty
 * input sealed opens to itself. */
#include "../csrc/core.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int luaopen_userlist_core(lua_State *L);

static lua_State *L;

static const char CHECK[] =
    "local core = package.loaded['userlist.core']\n"
    "return function(s)\n"
    "  for _, t in ipairs{ s, 'ul1.' .. s } do\n"
    "    local p, why = core.token_open(t)\n"
    "    if p then assert(core.token_seal(p) == t, 'not canonical')\n"
    "    else assert(type(why) == 'string') end\n"
    "  end\n"
    "  if #s > 0 and #s < 12000 then assert(core.token_open(core.token_seal(s)) == s, 'round trip') end\n"
    "end\n";

static void setup(void)
{
    L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "userlist.core", luaopen_userlist_core, 0);
    lua_pop(L, 1);
    if (luaL_loadstring(L, CHECK) != 0 || lua_pcall(L, 0, 1, 0) != 0)
        abort();
    lua_setglobal(L, "check");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (L == NULL)
        setup();
    lua_getglobal(L, "check");
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 0) != 0) {
        fprintf(stderr, "fuzz_token: %s\n", lua_tostring(L, -1));
        abort();
    }
    return 0;
}
