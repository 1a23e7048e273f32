/* Lua 5.1/LuaJIT .. 5.4 shims. Everything here is static so that no symbol
 * clashes with a Lua that already has it (LuaJIT 2.1 ships luaL_setfuncs). */
#ifndef USERLIST_COMPAT_H
#define USERLIST_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM < 502
static inline void ul_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
    luaL_checkstack(L, nup + 1, "too many upvalues");
    for (; l->name != NULL; l++) {
        int i;
        for (i = 0; i < nup; i++)
            lua_pushvalue(L, -nup);
        lua_pushcclosure(L, l->func, nup);
        lua_setfield(L, -(nup + 2), l->name);
    }
    lua_pop(L, nup);
}
#define ul_rawlen(L, i) lua_objlen(L, (i))
#else
#define ul_setfuncs luaL_setfuncs
#define ul_rawlen(L, i) lua_rawlen(L, (i))
#endif

#if LUA_VERSION_NUM >= 504
#define ul_newuserdata(L, sz) lua_newuserdatauv(L, (sz), 0)
#else
#define ul_newuserdata(L, sz) lua_newuserdata(L, (sz))
#endif

/* Integers stay integers on 5.3+, where Lua has them. */
#if LUA_VERSION_NUM >= 503
#define ul_pushint(L, n) lua_pushinteger(L, (lua_Integer)(n))
#else
#define ul_pushint(L, n) lua_pushnumber(L, (lua_Number)(n))
#endif

#endif
