/* The session: one libcurl easy handle, reused so that consecutive requests
 * to one host share a connection; its lifetime, and the driving of its one
 * transfer at a time. request.c builds a request into it, response.c makes
 * the ended transfer into the response or the error.
 *
 * Lifetime rule: everything a request allocates (URL handle, header list,
 * buffers) hangs off the session userdata, so a Lua error raised at any point
 * cannot leak it; the next request or close() frees it. No Lua code runs
 * while libcurl works. The session's multi handle (multi.c) drives it:
 * either a transfer thread of its own (transfer_thread = true: the pages
 * fetched ahead are read while Lua shapes this one), or the caller,
 * to the end (request) or one non-blocking step at a time (start + step,
 * for callers that must yield between steps, such as nginx workers). */
#include "core.h"
#include "compat.h"
#include "session.h"
#include "request.h"
#include "response.h"

#include <curl/curl.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- options */

/* Every option's default, here only: a session reads its own from these
 * tables, and core.defaults hands them all to the Lua layer, which reads its
 * client options' there (their checks are Lua's). The docs point here. */
static const struct num_option {
    const char *name;
    double def, min, max;
} NUM_OPTIONS[] = {
    {"connect_timeout", 5, 0.001, 86400},
    {"timeout", 60, 0.001, 86400 * 7},
    {"low_speed_time", 30, 0, 86400},
    {"low_speed_limit", 1, 0, 1e12},
    {"max_size", 64.0 * 1024 * 1024, 1, 1e15},
    {"max_redirects", 5, 0, 50},
    /* the client's */
    {"max_retries", 2, 0, 0},
    {"max_retry_wait", 60, 0, 0},
    {"loading_timeout", 60, 0, 0},
    {"concurrency", 4, 0, 0},
};
static const struct bool_option {
    const char *name;
    int def;
} BOOL_OPTIONS[] = {
    {"verify", 1}, {"follow_redirects", 0}, {"allow_insecure_http", 0}, {"transfer_thread", 0},
    /* the client's */
    {"strict", 0},
};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Pushes core.defaults: {option = default}, every one of the tables above
 * and the client's engine. */
void ul_push_defaults(lua_State *L)
{
    size_t i;
    lua_newtable(L);
    for (i = 0; i < COUNT(NUM_OPTIONS); i++) {
        lua_Number v = NUM_OPTIONS[i].def;
        if (v == (lua_Number)(long long)v)
            ul_pushint(L, (long long)v);
        else
            lua_pushnumber(L, v);
        lua_setfield(L, -2, NUM_OPTIONS[i].name);
    }
    for (i = 0; i < COUNT(BOOL_OPTIONS); i++) {
        lua_pushboolean(L, BOOL_OPTIONS[i].def);
        lua_setfield(L, -2, BOOL_OPTIONS[i].name);
    }
    lua_pushliteral(L, "auto");
    lua_setfield(L, -2, "engine");
}

static const struct num_option *num_option(const char *name)
{
    size_t i;
    for (i = 0; i < COUNT(NUM_OPTIONS); i++)
        if (strcmp(NUM_OPTIONS[i].name, name) == 0)
            return &NUM_OPTIONS[i];
    return NULL; /* not reached: every caller names a session option */
}

static int bool_default(const char *name)
{
    size_t i;
    for (i = 0; i < COUNT(BOOL_OPTIONS); i++)
        if (strcmp(BOOL_OPTIONS[i].name, name) == 0)
            return BOOL_OPTIONS[i].def;
    return 0;
}

static int opt_field(lua_State *L, int t, const char *name, int type)
{
    int got;
    if (t == 0)
        return 0;
    lua_getfield(L, t, name);
    got = lua_type(L, -1);
    if (got == LUA_TNIL) {
        lua_pop(L, 1);
        return 0;
    }
    if (got != type)
        ul_raise(L, "bad option '%s' (%s expected, got %s)", name,
                   lua_typename(L, type), lua_typename(L, got));
    return 1;
}

static double opt_number(lua_State *L, int t, const char *name)
{
    const struct num_option *o = num_option(name);
    double v, min = o->min, max = o->max;
    if (!opt_field(L, t, name, LUA_TNUMBER))
        return o->def;
    v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (!(v >= min && v <= max)) /* also rejects NaN */
    {
        /* lua_pushfstring has no %g before 5.3 */
        char range[64];
        snprintf(range, sizeof range, "%g and %g", min, max);
        ul_raise(L, "bad option '%s' (must be between %s)", name, range);
    }
    return v;
}

static int opt_bool(lua_State *L, int t, const char *name)
{
    int v;
    if (!opt_field(L, t, name, LUA_TBOOLEAN))
        return bool_default(name);
    v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* Returns a malloc'ed copy (caller frees) or NULL. */
static char *opt_strdup(lua_State *L, int t, const char *name)
{
    size_t len;
    const char *s;
    char *copy;
    if (!opt_field(L, t, name, LUA_TSTRING))
        return NULL;
    s = lua_tolstring(L, -1, &len);
    if (strlen(s) != len)
        ul_raise(L, "bad option '%s' (contains a NUL byte)", name);
    copy = malloc(len + 1);
    if (copy == NULL)
        ul_raise(L, "out of memory");
    memcpy(copy, s, len + 1);
    lua_pop(L, 1);
    return copy;
}

/* ---------------------------------------------------------------- lifetime */

static ul_session *check_session(lua_State *L)
{
    ul_session *s = luaL_checkudata(L, 1, UL_SESSION_MT);
    if (s->easy == NULL)
        ul_raise(L, "attempt to use a closed userlist session");
    return s;
}

static void free_request(ul_session *s)
{
    if (s->url) {
        curl_url_cleanup(s->url);
        s->url = NULL;
    }
    if (s->hdrs) {
        curl_slist_free_all(s->hdrs);
        s->hdrs = NULL;
    }
    ul_buffer_reset(&s->body, UL_KEEP_BUFFER);
    ul_buffer_reset(&s->head, UL_KEEP_BUFFER);
    ul_buffer_reset(&s->query, UL_KEEP_BUFFER);
}

/* Takes the easy handle out of the multi handle and drops the transfer's
 * anchored strings: after this no transfer is in progress. */
static void stop_transfer(lua_State *L, ul_session *s)
{
    if (s->active) {
        ul_multi_remove(s->m, s->easy);
        s->active = 0;
        s->x.done = 0;
    }
    if (s->pending != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, s->pending);
        s->pending = LUA_NOREF;
    }
}

/* close(), __gc and __close: idempotent, frees everything. */
static int session_close(lua_State *L)
{
    ul_session *s = luaL_checkudata(L, 1, UL_SESSION_MT);
    stop_transfer(L, s);
    free_request(s);
    ul_buffer_free(&s->body);
    ul_buffer_free(&s->head);
    ul_buffer_free(&s->query);
    if (s->easy) {
        curl_easy_cleanup(s->easy);
        s->easy = NULL;
    }
    if (s->m)
        ul_multi_unref(s->m); /* the last one stops the transfer thread */
    s->m = NULL;
    free(s->cafile);
    free(s->capath);
    free(s->proxy);
    s->cafile = s->capath = s->proxy = NULL;
    return 0;
}

static int session_tostring(lua_State *L)
{
    ul_session *s = luaL_checkudata(L, 1, UL_SESSION_MT);
    lua_pushfstring(L, "userlist.session (%s)", s->easy ? "open" : "closed");
    return 1;
}

int ul_session_new(lua_State *L)
{
    int t = lua_istable(L, 1) ? 1 : 0, thread;
    ul_session *s, *share = NULL;
    if (!t && !lua_isnoneornil(L, 1))
        luaL_argerror(L, 1, "options table expected");
    if (!lua_isnoneornil(L, 2)) {
        share = luaL_checkudata(L, 2, UL_SESSION_MT);
        luaL_argcheck(L, share->m != NULL, 2, "a closed session");
    }
    s = ul_newuserdata(L, sizeof *s);
    memset(s, 0, sizeof *s);
    s->pending = LUA_NOREF;
    ul_buffer_init(&s->body);
    ul_buffer_init(&s->head);
    ul_buffer_init(&s->query);
    luaL_getmetatable(L, UL_SESSION_MT);
    lua_setmetatable(L, -2);
    /* from here on __gc frees whatever was set, even if an option raises */
    s->connect_timeout = opt_number(L, t, "connect_timeout");
    s->timeout = opt_number(L, t, "timeout");
    s->low_speed_time = opt_number(L, t, "low_speed_time");
    s->low_speed_limit = (long)opt_number(L, t, "low_speed_limit");
    s->max_size = (curl_off_t)opt_number(L, t, "max_size");
    s->verify = opt_bool(L, t, "verify");
    s->follow = opt_bool(L, t, "follow_redirects");
    s->max_redirects = (long)opt_number(L, t, "max_redirects");
    s->allow_insecure_http = opt_bool(L, t, "allow_insecure_http");
    s->cafile = opt_strdup(L, t, "cafile");
    s->capath = opt_strdup(L, t, "capath");
    s->proxy = opt_strdup(L, t, "proxy");
    thread = opt_bool(L, t, "transfer_thread");
    s->easy = curl_easy_init();
    if (s->easy == NULL)
        return ul_raise(L, "curl_easy_init failed");
    if (share != NULL) {
        s->m = share->m;
        ul_multi_ref(s->m);
    } else if ((s->m = ul_multi_new(thread)) == NULL) {
        return ul_raise(L, "curl_multi_init failed");
    }
    return 1;
}

/* ---------------------------------------------------------------- driving */

/* Builds the request described by the table at index 2 (request.c) and hands
 * the easy handle to the multi handle. Returns 0 when the transfer is under
 * way, or pushes nil, err (the request's data was unusable) and returns 2. */
static int begin(lua_State *L, ul_session *s)
{
    int n;
    luaL_checktype(L, 2, LUA_TTABLE);
    if (s->active)
        return ul_raise(L, "userlist session is busy: one transfer at a time (cancel() first)");
    stop_transfer(L, s);
    free_request(s);
    s->too_large = s->oom = 0;
    s->errbuf[0] = '\0';
    n = ul_request_build(L, s, 2);
    if (n != 0)
        return n;
    s->pending = luaL_ref(L, LUA_REGISTRYINDEX);
    if (ul_multi_add(s->m, s->easy, &s->x) != 0) {
        stop_transfer(L, s);
        return ul_raise(L, "curl_multi_add_handle failed");
    }
    s->active = 1;
    return 0;
}

/* Pushes the outcome of the transfer that ended with rc (response.c), once
 * the session has let go of it. Returns the number of values pushed. */
static int finish(lua_State *L, ul_session *s, CURLcode rc)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->pending); /* anchors the request's strings */
    stop_transfer(L, s);
    return ul_response_build(L, s, rc, lua_gettop(L));
}

/* The multi handle failed: the transfer is abandoned, a failure of the
 * request like any other of the network. */
static int multi_failed(lua_State *L, ul_session *s)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->pending);
    stop_transfer(L, s);
    lua_getfield(L, -1, "method");
    lua_getfield(L, -2, "url");
    return ul_fail(L, "network", 0, "curl_multi_perform failed", lua_tostring(L, -2),
                   lua_tostring(L, -1), NULL);
}

/* session:request{ method=, url=, query=, headers=, api_key=, json=, body=,
 *                  decode=, timeout= }
 * -> response {status, headers, body, bytes, new_connections, rate_limit?} | nil, err
 * Blocks until the transfer ends (libcurl's timeouts bound it). */
static int session_request(lua_State *L)
{
    ul_session *s = check_session(L);
    int n = begin(L, s);
    if (n)
        return n;
    if (ul_multi_finish(s->m, &s->x) < 0)
        return multi_failed(L, s);
    return finish(L, s, s->x.rc);
}

/* session:start{...}: the same request, begun without waiting.
 * -> true | nil, err. Drive it with step(). */
static int session_start(lua_State *L)
{
    ul_session *s = check_session(L);
    int n = begin(L, s);
    if (n)
        return n;
    lua_pushboolean(L, 1);
    return 1;
}

/* session:step(): does what can be done now, never waits.
 * -> response | nil, err when the transfer has ended; else false and the
 *    seconds libcurl would like to wait at most before the next step (nil
 *    when it has no deadline of its own). */
static int session_step(lua_State *L)
{
    ul_session *s = check_session(L);
    int done;
    double hint;
    if (!s->active)
        return ul_raise(L, "no transfer in progress (start one first)");
    done = ul_multi_step(s->m, &s->x);
    if (done < 0)
        return multi_failed(L, s);
    if (done)
        return finish(L, s, s->x.rc);
    lua_pushboolean(L, 0);
    hint = ul_multi_timeout(s->m);
    if (hint >= 0)
        lua_pushnumber(L, (lua_Number)hint);
    else
        lua_pushnil(L);
    return 2;
}

/* session:wait([seconds]): blocks until one of the shared multi handle's
 * transfers can make progress (with a transfer thread: has ended since this
 * session's last step), or seconds pass (default 1). For callers driving
 * sessions with step(). */
static int session_wait(lua_State *L)
{
    ul_session *s = check_session(L);
    double secs = luaL_optnumber(L, 2, 1);
    luaL_argcheck(L, secs >= 0 && secs <= 86400, 2, "seconds must be between 0 and 86400");
    if (ul_multi_wait(s->m, &s->x, secs) != 0)
        return ul_raise(L, "curl_multi_poll failed");
    return 0;
}

/* session:cancel(): abandons a transfer in progress (idempotent); the
 * session stays usable. */
static int session_cancel(lua_State *L)
{
    ul_session *s = luaL_checkudata(L, 1, UL_SESSION_MT);
    stop_transfer(L, s);
    free_request(s);
    return 0;
}

/* session:sent(): whether the transfer in progress has sent its request
 * (headers) yet, so a caller that starts one ahead knows when to stop
 * driving it. */
static int session_sent(lua_State *L)
{
    ul_session *s = check_session(L);
    long n = 0;
    int sent;
    if (!s->active) {
        lua_pushboolean(L, 0);
        return 1;
    }
    sent = ul_multi_sent(s->m, &s->x); /* a transfer thread owns the handle */
    if (sent < 0) {
        curl_easy_getinfo(s->easy, CURLINFO_REQUEST_SIZE, &n);
        sent = n > 0 || s->x.done;
    }
    lua_pushboolean(L, sent);
    return 1;
}

/* session:busy(): whether a transfer is in progress. */
static int session_busy(lua_State *L)
{
    ul_session *s = luaL_checkudata(L, 1, UL_SESSION_MT);
    lua_pushboolean(L, s->active);
    return 1;
}

void ul_session_register(lua_State *L)
{
    /* stack: state table, user agent string */
    static const luaL_Reg methods[] = {
        {"request", session_request},
        {"start", session_start},
        {"step", session_step},
        {"wait", session_wait},
        {"cancel", session_cancel},
        {"busy", session_busy},
        {"sent", session_sent},
        {"close", session_close},
        {NULL, NULL}};
    static const luaL_Reg meta[] = {
        {"__gc", session_close},
        {"__tostring", session_tostring},
#if LUA_VERSION_NUM >= 504
        {"__close", session_close},
#endif
        {NULL, NULL}};
    luaL_newmetatable(L, UL_SESSION_MT);
    lua_pushvalue(L, -3);
    lua_pushvalue(L, -3);
    ul_setfuncs(L, meta, 2);
    lua_newtable(L);
    lua_pushvalue(L, -4);
    lua_pushvalue(L, -4);
    ul_setfuncs(L, methods, 2);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "userlist.session");
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
}
