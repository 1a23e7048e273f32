/* Structured error values: plain tables with a shared metatable, so that the
 * Lua layer can add provider fields (code, retry_after, ...) freely. */
#include "core.h"
#include "body.h"
#include "compat.h"

#include <lauxlib.h>
#include <stdarg.h>
#include <string.h>

void ul_push_error(lua_State *L, const char *kind, long status,
                   const char *message, const char *method, const char *url,
                   const char *secret)
{
    lua_newtable(L);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    ul_push_redacted(L, message, strlen(message), secret, NULL);
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
    /* no `retryable`: whether to try again is the Lua layer's call
     * (userlist.transport), from the facts reported here */
    lua_getfield(L, UL_STATE, UL_ST_ERRMT);
    lua_setmetatable(L, -2);
}

int ul_fail(lua_State *L, const char *kind, long status, const char *message,
            const char *method, const char *url, const char *secret)
{
    lua_pushnil(L);
    ul_push_error(L, kind, status, message, method, url, secret);
    return 2;
}

/* The raise-or-return rule (core.h). The message is formatted first either
 * way; luaL_error raises it, so that it says where the Lua caller is just
 * as it does on every Lua (LuaJIT finds the caller its own way). */
int ul_reject(lua_State *L, ul_fault fault, const char *method, const char *url,
              const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    if (fault == UL_CODE)
        return luaL_error(L, "%s", lua_tostring(L, -1));
    ul_fail(L, "invalid", 0, lua_tostring(L, -1), method, url, NULL);
    lua_remove(L, -3); /* the message: nil, err are left */
    return 2;
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

/* The fields tostring shows, read onto the stack at these fixed indexes
 * before the buffer opens: between luaL_buffinit and luaL_pushresult the
 * buffer owns the stack top (5.1 and LuaJIT keep pieces there, 5.4 a box that
 * moves as the text outgrows LUAL_BUFFERSIZE), so nothing may be pushed or
 * popped in between; a stray push there gave garbage or a use-after-free. */
enum { F_PROVIDER = 2, F_KIND, F_STATUS, F_CODE, F_MESSAGE, F_METHOD, F_URL };

static const char *const shown[] = { "provider", "kind", "status", "code", "message",
                                     "method", "url" };
#define NSHOWN ((int)(sizeof shown / sizeof shown[0]))

/* Adds the string at idx (if any) between prefix and suffix, on one line
 * whatever a server put into it. Reads the stack only. */
static void add_field(lua_State *L, luaL_Buffer *b, int idx, const char *prefix,
                      const char *suffix)
{
    size_t len, i;
    const char *s;
    if (lua_type(L, idx) != LUA_TSTRING)
        return;
    s = lua_tolstring(L, idx, &len);
    luaL_addstring(b, prefix);
    for (i = 0; i < len; i++) {
        char c = s[i];
        luaL_addchar(b, (c == '\n' || c == '\r' || c == '\0') ? ' ' : c);
    }
    luaL_addstring(b, suffix);
}

/* "userlist: http 429 E1013: Too many requests (GET https://host/v1/users)" */
int ul_error_tostring(lua_State *L)
{
    luaL_Buffer b;
    int has_url, i;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    /* room for the fields and for what 5.1's buffer keeps on the stack */
    luaL_checkstack(L, NSHOWN + LUA_MINSTACK, "tostring");
    has_url = 0;
    for (i = 0; i < NSHOWN; i++) {
        int idx = F_PROVIDER + i, t;
        lua_getfield(L, 1, shown[i]);
        t = lua_type(L, idx);
        if (idx == F_URL)
            has_url = t == LUA_TSTRING; /* a numeric url shows no "(...)" part */
        if (t == LUA_TNUMBER)
            lua_tolstring(L, idx, NULL); /* converted in place, before the buffer */
        else if (t != LUA_TSTRING) {
            lua_pop(L, 1);
            lua_pushnil(L);
        }
    }
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "userlist: ");
    add_field(L, &b, F_PROVIDER, "", " ");
    add_field(L, &b, F_KIND, "", "");
    add_field(L, &b, F_STATUS, " ", "");
    add_field(L, &b, F_CODE, " ", "");
    add_field(L, &b, F_MESSAGE, ": ", "");
    if (has_url) {
        luaL_addstring(&b, " (");
        add_field(L, &b, F_METHOD, "", " ");
        add_field(L, &b, F_URL, "", ")");
    }
    luaL_pushresult(&b);
    return 1;
}
