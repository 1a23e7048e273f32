/* userlist.core: module entry point. Sets up the per-state table (a private
 * cjson instance, the error metatable) that every function gets as upvalue. */
#include "core.h"
#include "body.h"
#include "compat.h"

#include <curl/curl.h>
#include <lauxlib.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_OK;

/* libcurl's global state is process-wide by nature: initialised once, never
 * cleaned up (cleanup from __gc would break other users of libcurl). */
static void global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* core.escape(s): percent-encodes everything but RFC 3986 unreserved
 * characters (so '/' becomes %2F): for path segments. */
static int core_escape(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    char *e;
    if (len > 0x7fffffff)
        return luaL_argerror(L, 1, "string too long");
    e = curl_easy_escape(NULL, s, (int)len);
    if (e == NULL)
        return ul_raise(L, "out of memory");
    lua_pushstring(L, e);
    curl_free(e);
    return 1;
}

/* core.sleep(seconds): blocking; the Lua layer uses ngx.sleep inside nginx. */
static int core_sleep(lua_State *L)
{
    double secs = luaL_checknumber(L, 1);
    struct timespec ts;
    luaL_argcheck(L, secs >= 0 && secs <= 86400, 1, "seconds must be between 0 and 86400");
    ts.tv_sec = (time_t)secs;
    ts.tv_nsec = (long)((secs - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    return 0;
}

/* core.now(): monotonic seconds, for deadlines that wall-clock jumps cannot
 * stretch or cut. */
static int core_now(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

static int core_version_info(lua_State *L)
{
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    lua_newtable(L);
    lua_pushliteral(L, USERLIST_VERSION_STRING);
    lua_setfield(L, -2, "userlist");
    lua_pushstring(L, v->version);
    lua_setfield(L, -2, "curl");
    lua_pushstring(L, v->ssl_version ? v->ssl_version : "");
    lua_setfield(L, -2, "ssl");
    lua_pushstring(L, v->libz_version ? v->libz_version : "");
    lua_setfield(L, -2, "libz");
    lua_pushboolean(L, (v->features & CURL_VERSION_SSL) != 0);
    lua_setfield(L, -2, "tls");
    lua_pushboolean(L, (v->features & CURL_VERSION_HTTP2) != 0);
    lua_setfield(L, -2, "http2");
    lua_pushstring(L, LUA_VERSION);
    lua_setfield(L, -2, "lua");
    return 1;
}

/* core.json_decode(text): the value; raises a decode error (offset,
 * excerpt) on text that is not JSON. */
static int core_json_decode(lua_State *L)
{
    size_t len, off;
    const char *msg, *text = luaL_checklstring(L, 1, &len);
    if (ul_json_value(L, text, len, NULL, &off, &msg))
        return 1;
    ul_push_decode_error(L, text, len, off, msg, NULL, NULL, NULL);
    return lua_error(L);
}

/* core.decode_body(text, method, url [, key [, rows]]): a response body
 * decoded as the request path decodes it: the value, or nil and a decode
 * error with the offset and an excerpt (key redacted). For bodies fetched
 * raw. With rows ({spec, naive_offset, shift, lenient}), a page's rows are
 * shaped as they are decoded, and the outcome follows the value. */
static int core_decode_body(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    const char *method = luaL_checkstring(L, 2), *url = luaL_checkstring(L, 3);
    const char *key = luaL_optstring(L, 4, NULL);
    if (!lua_isnoneornil(L, 5)) {
        luaL_checktype(L, 5, LUA_TTABLE);
        if (len > 0) {
            ul_decode_rows(L, text, len, 5, method, url, key);
            return 2;
        }
    }
    return ul_decode_body(L, text, len, NULL, method, url, key);
}

static int core_json_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    lua_getfield(L, UL_STATE, UL_ST_ENCODE);
    lua_insert(L, 1);
    lua_call(L, 1, 1);
    return 1;
}

/* Calls inst[name](arg) to configure the private cjson instance. */
static void cjson_set(lua_State *L, int inst, const char *name, int arg)
{
    lua_getfield(L, inst, name);
    if (lua_isfunction(L, -1)) {
        if (arg < 0)
            lua_pushboolean(L, 0);
        else
            lua_pushinteger(L, arg);
        lua_call(L, 1, 0);
    } else {
        lua_pop(L, 1);
    }
}

/* The only exported symbol (the build hides everything else). */
#define UL_EXPORT __attribute__((visibility("default")))
UL_EXPORT int luaopen_userlist_core(lua_State *L);

UL_EXPORT int luaopen_userlist_core(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"session", ul_session_new},
        {"error", ul_error_new},
        {"escape", core_escape},
        {"sleep", core_sleep},
        {"now", core_now},
        {"version_info", core_version_info},
        {"json_decode", core_json_decode},
        {"json_encode", core_json_encode},
        {"shape", ul_shape},
        {"parse_time", ul_parse_time},
        {"redact", ul_redact},
        {"to_number", ul_to_number},
        {"to_int", ul_to_int},
        {"to_id", ul_to_id},
        {"decode_body", core_decode_body},
        {"digest", ul_digest},
        {"token_seal", ul_token_seal},
        {"token_open", ul_token_open},
        {NULL, NULL}};
    int st, inst;

    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK)
        return ul_raise(L, "curl_global_init failed: %s", curl_easy_strerror(global_rc));

    /* state table */
    lua_newtable(L);
    st = lua_gettop(L);

    /* a private cjson instance: the application's cjson settings are neither
     * used nor changed */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "cjson");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "new");
    if (!lua_isfunction(L, -1))
        return ul_raise(L, "userlist needs lua-cjson 2.1 or newer (cjson.new missing)");
    lua_call(L, 0, 1);
    inst = lua_gettop(L);
    cjson_set(L, inst, "encode_max_depth", 200);
    cjson_set(L, inst, "encode_invalid_numbers", -1);
    lua_getfield(L, inst, "encode");
    lua_setfield(L, st, UL_ST_ENCODE);
    lua_getfield(L, inst, "null");
    lua_setfield(L, st, "null");
    lua_pop(L, 2); /* instance, cjson */

    /* error metatable */
    lua_newtable(L);
    lua_pushvalue(L, st);
    lua_pushcclosure(L, ul_error_tostring, 1);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "userlist.error");
    lua_setfield(L, -2, "__name");
    lua_setfield(L, st, UL_ST_ERRMT);

    /* User-Agent: userlist/<version> libcurl/<version> */
    lua_pushfstring(L, "userlist/%s libcurl/%s", USERLIST_VERSION_STRING,
                    curl_version_info(CURLVERSION_NOW)->version);

    ul_session_register(L); /* uses state + user agent */

    lua_newtable(L);
    lua_pushvalue(L, st);
    lua_pushvalue(L, -3);
    ul_setfuncs(L, funcs, 2);
    lua_pushliteral(L, USERLIST_VERSION_STRING);
    lua_setfield(L, -2, "version");
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "user_agent");
    lua_getfield(L, st, "null");
    lua_setfield(L, -2, "null");
    lua_getfield(L, st, UL_ST_ERRMT);
    lua_setfield(L, -2, "error_mt");
    ul_push_defaults(L);
    lua_setfield(L, -2, "defaults");
    lua_pushinteger(L, UL_TOKEN_MAX);
    lua_setfield(L, -2, "token_max");
    return 1;
}
