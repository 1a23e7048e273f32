/* make check-tsan's Lua: the standalone interpreter's job (arg, the script)
 * in an executable built with -fsanitize=thread, so that ThreadSanitizer's
 * runtime starts with the process instead of through LD_PRELOAD, which the
 * specs' child processes would inherit (Debian's sh crashes under it).
 * Usage: tsan-lua LUA SCRIPT [ARGS...]; LUA (the name run.sh passes) is
 * ignored: this is Lua 5.4. */
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>

static int traceback(lua_State *L)
{
    luaL_traceback(L, L, lua_tostring(L, 1), 1);
    return 1;
}

int main(int argc, char **argv)
{
    lua_State *L;
    int i, status;
    if (argc < 3) {
        fprintf(stderr, "usage: %s LUA SCRIPT [ARGS...]\n", argv[0]);
        return 2;
    }
    L = luaL_newstate();
    luaL_openlibs(L);
    lua_createtable(L, argc, 0); /* arg: the script at 0, as lua.c does */
    for (i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - 2);
    }
    lua_setglobal(L, "arg");
    lua_pushcfunction(L, traceback);
    status = luaL_loadfile(L, argv[2]);
    if (status == LUA_OK) {
        for (i = 3; i < argc; i++)
            lua_pushstring(L, argv[i]);
        status = lua_pcall(L, argc - 3, 0, 1);
    }
    if (status != LUA_OK)
        fprintf(stderr, "%s: %s\n", argv[0], lua_tostring(L, -1));
    lua_close(L);
    return status == LUA_OK ? 0 : 1;
}
