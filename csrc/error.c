/* Structured error values: plain tables with a shared metatable, so that the
 * Lua layer can add provider fields (code, retry_after, ...) freely. */
#include "core.h"
#include "compat.h"

#include <lauxlib.h>
#include <string.h>

void ul_push_error(lua_State *L, const char *kind, long status,
                   const char *message, const char *method, const char *url,
                   const char *secret)
{
    lua_newtable(L);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    if (secret != NULL && secret[0] != '\0' && strstr(message, secret) != NULL) {
        luaL_gsub(L, message, secret, "[REDACTED]");
    } else {
        lua_pushstring(L, message);
    }
    lua_setfield(L, -2, "message");
    if (status > 0) {
        ul_pushint(L, status);
        lua_setfield(L, -2, "status");
    }
    if (method != NULL) {
        lua_pushstring(L, method);
        lua_setfield(L, -2, "method");
    }
    if (url != NULL) {
        lua_pushstring(L, url);
        lua_setfield(L, -2, "url");
    }
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "retryable");
    lua_getfield(L, UL_STATE, UL_ST_ERRMT);
    lua_setmetatable(L, -2);
}

/* core.error(t): gives a table the error metatable (used by the Lua layer). */
int ul_error_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "kind");
    if (lua_type(L, -1) != LUA_TSTRING)
        return luaL_argerror(L, 1, "error table needs a string 'kind'");
    lua_pop(L, 1);
    lua_settop(L, 1);
    lua_getfield(L, UL_STATE, UL_ST_ERRMT);
    lua_setmetatable(L, 1);
    return 1;
}

static void add_field(lua_State *L, luaL_Buffer *b, int t, const char *name,
                      const char *prefix, const char *suffix)
{
    lua_getfield(L, t, name);
    if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER) {
        size_t len, i;
        const char *s = lua_tolstring(L, -1, &len);
        luaL_addstring(b, prefix);
        /* one line, whatever a server put into its message */
        for (i = 0; i < len; i++) {
            char c = s[i];
            luaL_addchar(b, (c == '\n' || c == '\r' || c == '\0') ? ' ' : c);
        }
        luaL_addstring(b, suffix);
    }
    lua_pop(L, 1);
}

/* "userlist: http 429 E1013: Too many requests (GET https://host/v1/users)" */
int ul_error_tostring(lua_State *L)
{
    luaL_Buffer b;
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "userlist: ");
    add_field(L, &b, 1, "provider", "", " ");
    add_field(L, &b, 1, "kind", "", "");
    add_field(L, &b, 1, "status", " ", "");
    add_field(L, &b, 1, "code", " ", "");
    add_field(L, &b, 1, "message", ": ", "");
    lua_getfield(L, 1, "url");
    if (lua_type(L, -1) == LUA_TSTRING) {
        lua_pop(L, 1);
        luaL_addstring(&b, " (");
        add_field(L, &b, 1, "method", "", " ");
        add_field(L, &b, 1, "url", "", ")");
    } else {
        lua_pop(L, 1);
    }
    luaL_pushresult(&b);
    return 1;
}
