/* The session: one libcurl easy handle, reused so that consecutive requests
 * to one host share a connection, and the one request primitive.
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
#include "buffer.h"
#include "body.h"
#include "headers.h"
#include "multi.h"

#include <curl/curl.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define HEADER_LIMIT (256 * 1024)  /* response headers are small; cap them */
#define KEEP_BUFFER (1024 * 1024)  /* keep up to this much buffer between requests */

typedef struct {
    CURL *easy;
    ul_multi *m; /* drives the easy handle (multi.c); shared by sessions opened
                    together (core.session(opts, other)), whose transfers run
                    side by side on one connection cache */
    CURLU *url;
    struct curl_slist *hdrs;
    ul_buffer body, head, query;
    char errbuf[CURL_ERROR_SIZE];
    /* options */
    double connect_timeout, timeout, low_speed_time;
    long low_speed_limit, max_redirects;
    curl_off_t max_size;
    int verify, follow, allow_insecure_http;
    char *cafile, *capath, *proxy;
    /* per transfer */
    int too_large, oom;
    int active;  /* the easy handle is in the multi handle */
    ul_xfer x;   /* ... and whether its transfer has ended, with what */
    int pending; /* registry ref of {method, url, key, body, decode} while a
                    transfer runs: keeps the strings libcurl points at alive */
} ul_session;

/* ---------------------------------------------------------------- options */

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
        luaL_error(L, "bad option '%s' (%s expected, got %s)", name,
                   lua_typename(L, type), lua_typename(L, got));
    return 1;
}

static double opt_number(lua_State *L, int t, const char *name, double def,
                         double min, double max)
{
    double v;
    if (!opt_field(L, t, name, LUA_TNUMBER))
        return def;
    v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (!(v >= min && v <= max)) /* also rejects NaN */
    {
        /* lua_pushfstring has no %g before 5.3 */
        char range[64];
        snprintf(range, sizeof range, "%g and %g", min, max);
        luaL_error(L, "bad option '%s' (must be between %s)", name, range);
    }
    return v;
}

static int opt_bool(lua_State *L, int t, const char *name, int def)
{
    int v;
    if (!opt_field(L, t, name, LUA_TBOOLEAN))
        return def;
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
        luaL_error(L, "bad option '%s' (contains a NUL byte)", name);
    copy = malloc(len + 1);
    if (copy == NULL)
        luaL_error(L, "out of memory");
    memcpy(copy, s, len + 1);
    lua_pop(L, 1);
    return copy;
}

/* ---------------------------------------------------------------- lifetime */

static ul_session *check_session(lua_State *L)
{
    ul_session *s = luaL_checkudata(L, 1, UL_SESSION_MT);
    if (s->easy == NULL)
        luaL_error(L, "attempt to use a closed userlist session");
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
    ul_buffer_reset(&s->body, KEEP_BUFFER);
    ul_buffer_reset(&s->head, KEEP_BUFFER);
    ul_buffer_reset(&s->query, KEEP_BUFFER);
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
    s->connect_timeout = opt_number(L, t, "connect_timeout", 5, 0.001, 86400);
    s->timeout = opt_number(L, t, "timeout", 60, 0.001, 86400 * 7);
    s->low_speed_time = opt_number(L, t, "low_speed_time", 30, 0, 86400);
    s->low_speed_limit = (long)opt_number(L, t, "low_speed_limit", 1, 0, 1e12);
    s->max_size = (curl_off_t)opt_number(L, t, "max_size", 64.0 * 1024 * 1024, 1, 1e15);
    s->verify = opt_bool(L, t, "verify", 1);
    s->follow = opt_bool(L, t, "follow_redirects", 0);
    s->max_redirects = (long)opt_number(L, t, "max_redirects", 5, 0, 50);
    s->allow_insecure_http = opt_bool(L, t, "allow_insecure_http", 0);
    s->cafile = opt_strdup(L, t, "cafile");
    s->capath = opt_strdup(L, t, "capath");
    s->proxy = opt_strdup(L, t, "proxy");
    thread = opt_bool(L, t, "transfer_thread", 0);
    s->easy = curl_easy_init();
    if (s->easy == NULL)
        return luaL_error(L, "curl_easy_init failed");
    if (share != NULL) {
        s->m = share->m;
        ul_multi_ref(s->m);
    } else if ((s->m = ul_multi_new(thread)) == NULL) {
        return luaL_error(L, "curl_multi_init failed");
    }
    return 1;
}

/* ---------------------------------------------------------------- callbacks
 * Plain C only: no Lua API calls in here. */

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    ul_session *s = ud;
    size_t bytes = size * n;
    if ((curl_off_t)(s->body.len + bytes) > s->max_size) {
        s->too_large = 1;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    if (ul_buffer_append(&s->body, p, bytes) != 0) {
        s->oom = 1;
        return 0;
    }
    return bytes;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    ul_session *s = ud;
    size_t bytes = size * n;
    if (bytes >= 5 && memcmp(p, "HTTP/", 5) == 0)
        ul_buffer_reset(&s->head, KEEP_BUFFER); /* keep the last response only */
    if (s->head.len + bytes > HEADER_LIMIT) {
        s->too_large = 1;
        return 0;
    }
    if (ul_buffer_append(&s->head, p, bytes) != 0) {
        s->oom = 1;
        return 0;
    }
    return bytes;
}

/* ---------------------------------------------------------------- request */

/* Raises unless the value at idx is a string, number or boolean; returns it
 * as a string pushed on the stack. */
static const char *scalar_tostring(lua_State *L, int idx, const char *what,
                                   const char *key, size_t *len)
{
    char num[64];
    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
        lua_pushvalue(L, idx);
        break;
    case LUA_TBOOLEAN:
        lua_pushstring(L, lua_toboolean(L, idx) ? "true" : "false");
        break;
    case LUA_TNUMBER: {
        double d = lua_tonumber(L, idx);
#if LUA_VERSION_NUM >= 503
        if (lua_isinteger(L, idx)) {
            lua_pushfstring(L, "%I", (LUA_INTEGER)lua_tointeger(L, idx));
            break;
        }
#endif
        if (d == (double)(long long)d && d > -9.007199254740992e15 && d < 9.007199254740992e15)
            snprintf(num, sizeof num, "%lld", (long long)d);
        else
            snprintf(num, sizeof num, "%.17g", d);
        lua_pushstring(L, num);
        break;
    }
    default:
        luaL_error(L, "bad %s '%s' (string, number or boolean expected, got %s)",
                   what, key, luaL_typename(L, idx));
    }
    return lua_tolstring(L, -1, len);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int append_escaped(ul_session *s, const char *str, size_t len)
{
    char *e = curl_easy_escape(s->easy, str, (int)len);
    int rc;
    if (e == NULL)
        return -1;
    rc = ul_buffer_append(&s->query, e, strlen(e));
    curl_free(e);
    return rc;
}

static void add_pair(lua_State *L, ul_session *s, const char *key, int vidx)
{
    size_t klen = strlen(key), vlen;
    const char *v = scalar_tostring(L, vidx, "query value", key, &vlen);
    if ((s->query.len > 0 && ul_buffer_append(&s->query, "&", 1) != 0) ||
        append_escaped(s, key, klen) != 0 ||
        ul_buffer_append(&s->query, "=", 1) != 0 ||
        append_escaped(s, v, vlen) != 0)
        luaL_error(L, "out of memory");
    lua_pop(L, 1);
}

/* Builds "k=v&k=v2" into s->query: keys sorted for a stable URL, array values
 * as repeated keys, every key and value escaped by libcurl. */
static void build_query(lua_State *L, ul_session *s, int q)
{
    size_t nkeys = 0, i;
    const char **keys;
    lua_pushnil(L);
    while (lua_next(L, q)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "bad query key (string expected, got %s)", luaL_typename(L, -2));
        nkeys++;
        lua_pop(L, 1);
    }
    /* a userdata array, so an error below frees it through the GC */
    keys = ul_newuserdata(L, (nkeys ? nkeys : 1) * sizeof *keys);
    i = 0;
    lua_pushnil(L);
    while (lua_next(L, q)) {
        keys[i++] = lua_tostring(L, -2); /* anchored by the table */
        lua_pop(L, 1);
    }
    qsort(keys, nkeys, sizeof *keys, cmp_str);
    for (i = 0; i < nkeys; i++) {
        lua_getfield(L, q, keys[i]);
        if (lua_istable(L, -1)) {
            int v = lua_gettop(L);
            size_t j, n = ul_rawlen(L, v);
            for (j = 1; j <= n; j++) {
                lua_rawgeti(L, v, (int)j);
                add_pair(L, s, keys[i], lua_gettop(L));
                lua_pop(L, 1);
            }
        } else {
            add_pair(L, s, keys[i], lua_gettop(L));
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1); /* keys */
}

static int has_ctl(const char *p, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++)
        if (p[i] == '\r' || p[i] == '\n' || p[i] == '\0')
            return 1;
    return 0;
}

static int valid_token(const char *p, size_t len)
{
    size_t i;
    if (len == 0)
        return 0;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!(c > 32 && c < 127) || strchr("\"(),/:;<=>?@[\\]{}", c) != NULL)
            return 0;
    }
    return 1;
}

static int is_loopback(const char *host)
{
    return strcmp(host, "localhost") == 0 || strncmp(host, "127.", 4) == 0 ||
           strcmp(host, "[::1]") == 0 || strcmp(host, "::1") == 0;
}

static int add_header(ul_session *s, const char *line)
{
    struct curl_slist *n = curl_slist_append(s->hdrs, line);
    if (n == NULL)
        return -1;
    s->hdrs = n;
    return 0;
}

/* Request-building failure that is the caller's data, not a bug: nil, err. */
static int invalid(lua_State *L, const char *method, const char *msg)
{
    lua_pushnil(L);
    ul_push_error(L, "invalid", 0, msg, method, NULL, NULL);
    return 2;
}

static const char *curl_kind(CURLcode rc)
{
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        return "timeout";
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_USE_SSL_FAILED:
        return "tls";
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return "invalid";
    case CURLE_FILESIZE_EXCEEDED:
        return "too_large";
    default:
        return "network";
    }
}

typedef struct {
    lua_State *L;
    int t;
} header_ctx;

static void push_header(void *ud, const char *name, size_t nlen,
                        const char *value, size_t vlen)
{
    header_ctx *c = ud;
    char lname[256];
    if (nlen >= sizeof lname)
        return; /* no real header name is this long */
    ul_lower(lname, name, nlen);
    lua_getfield(c->L, c->t, lname);
    if (lua_isstring(c->L, -1)) {
        /* repeated header: join as RFC 9110 allows */
        lua_pushliteral(c->L, ", ");
        lua_pushlstring(c->L, value, vlen);
        lua_concat(c->L, 3);
    } else {
        lua_pop(c->L, 1);
        lua_pushlstring(c->L, value, vlen);
    }
    lua_setfield(c->L, c->t, lname);
}

/* Sets err.retryable and err.retry_after from the status and headers at h. */
static void retry_facts(lua_State *L, int err, long status, int h)
{
    int retryable = status == 408 || status == 409 || status == 429 || status >= 500;
    double secs;
    size_t len;
    const char *v;
    /* a request the server judged wrong or unauthorised fails the same way
     * every time: never retried, whatever x-should-retry says */
    int never = status == 400 || status == 401 || status == 403 || status == 404 || status == 422;
    lua_getfield(L, h, "x-should-retry");
    v = lua_tostring(L, -1);
    if (v != NULL && strcmp(v, "true") == 0)
        retryable = !never;
    else if (v != NULL && strcmp(v, "false") == 0)
        retryable = 0;
    lua_pop(L, 1);
    lua_pushboolean(L, retryable);
    lua_setfield(L, err, "retryable");
    lua_getfield(L, h, "retry-after-ms");
    v = lua_tolstring(L, -1, &len);
    if (v != NULL && ul_parse_decimal(v, len, &secs) == 0) {
        lua_pushnumber(L, secs / 1000.0);
        lua_setfield(L, err, "retry_after");
    } else {
        lua_getfield(L, h, "retry-after");
        v = lua_tolstring(L, -1, &len);
        if (v != NULL && ul_parse_retry_after(v, len, time(NULL), &secs) == 0) {
            lua_pushnumber(L, secs);
            lua_setfield(L, err, "retry_after");
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

/* The first item of a header value ("100, 100;w=60" -> "100"). */
static size_t first_item(const char *v, size_t len)
{
    size_t n = 0;
    while (n < len && v[n] != ',' && v[n] != ';')
        n++;
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    return n;
}

/* Sets t.rate_limit = {limit=, remaining=, reset=} from whichever rate-limit
 * headers the server sent (RateLimit-*, X-RateLimit-*[-Requests], or the
 * structured RateLimit header), so the Lua layer can pause before a 429. */
static void rate_facts(lua_State *L, int t, int h)
{
    static const char *const names[3][4] = {
        {"ratelimit-limit", "x-ratelimit-limit", "x-ratelimit-limit-requests", "limit"},
        {"ratelimit-remaining", "x-ratelimit-remaining", "x-ratelimit-remaining-requests", "remaining"},
        {"ratelimit-reset", "x-ratelimit-reset", "x-ratelimit-reset-requests", "reset"},
    };
    double val[3];
    int have[3] = {0, 0, 0}, i, j, any = 0;
    time_t now = time(NULL);
    for (i = 0; i < 3; i++) {
        size_t len;
        const char *v;
        for (j = 0; j < 3 && !have[i]; j++) {
            lua_getfield(L, h, names[i][j]);
            v = lua_tolstring(L, -1, &len);
            if (v != NULL) {
                len = first_item(v, len);
                have[i] = (i == 2 ? ul_parse_ratelimit_reset(v, len, now, &val[i])
                                  : ul_parse_decimal(v, len, &val[i])) == 0;
            }
            lua_pop(L, 1);
        }
        if (!have[i]) {
            lua_getfield(L, h, "ratelimit");
            v = lua_tolstring(L, -1, &len);
            if (v != NULL)
                have[i] = ul_parse_structured_field(v, len, names[i][3], &val[i]) == 0;
            lua_pop(L, 1);
        }
        any |= have[i];
    }
    if (!any)
        return;
    lua_createtable(L, 0, 3);
    for (i = 0; i < 3; i++) {
        if (have[i]) {
            if (val[i] == (double)(lua_Integer)val[i])
                ul_pushint(L, (lua_Integer)val[i]);
            else
                lua_pushnumber(L, val[i]);
            lua_setfield(L, -2, names[i][3]);
        }
    }
    lua_setfield(L, t, "rate_limit");
}

/* Builds the request described by the table at index 2 and hands the easy
 * handle to the multi handle. Returns 0 when the transfer is under way, or
 * pushes nil, err (the caller's data was wrong) and returns 2. */
static int prepare(lua_State *L, ul_session *s)
{
    const char *method, *url, *key = NULL, *body = NULL, *scheme_host_err = NULL;
    size_t ulen, klen = 0, blen = 0;
    int decode, plain_http = 0, body_idx;
    double timeout;
    char *tmp = NULL, *final_url = NULL;
    CURLUcode uc;

    luaL_checktype(L, 2, LUA_TTABLE);
    if (s->active)
        return luaL_error(L, "userlist session is busy: one transfer at a time (cancel() first)");
    stop_transfer(L, s);
    free_request(s);
    s->too_large = s->oom = 0;
    s->errbuf[0] = '\0';

    lua_getfield(L, 2, "method");
    method = lua_isnil(L, -1) ? NULL : lua_tostring(L, -1);
    if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
        return luaL_error(L, "bad field 'method' (string expected, got %s)", luaL_typename(L, -1));
    lua_getfield(L, 2, "json");
    lua_getfield(L, 2, "body");
    if (method == NULL)
        method = (!lua_isnil(L, -1) || !lua_isnil(L, -2)) ? "POST" : "GET";
    if (!valid_token(method, strlen(method)))
        return luaL_error(L, "bad field 'method' (not an HTTP method)");
    lua_pop(L, 2);

    lua_getfield(L, 2, "url");
    if (lua_type(L, -1) != LUA_TSTRING)
        return luaL_error(L, "bad field 'url' (string expected, got %s)", luaL_typename(L, -1));
    url = lua_tolstring(L, -1, &ulen);
    if (has_ctl(url, ulen) || memchr(url, ' ', ulen) != NULL)
        return invalid(L, method, "url contains a space, CR, LF or NUL");

    decode = 1;
    lua_getfield(L, 2, "decode");
    if (!lua_isnil(L, -1)) {
        if (!lua_isboolean(L, -1))
            return luaL_error(L, "bad field 'decode' (boolean expected, got %s)", luaL_typename(L, -1));
        decode = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    lua_getfield(L, 2, "rows");
    if (!lua_isnil(L, -1) && !lua_istable(L, -1))
        return luaL_error(L, "bad field 'rows' (table expected, got %s)", luaL_typename(L, -1));
    lua_pop(L, 1);
    lua_getfield(L, 2, "timeout");
    timeout = s->timeout;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER || !(lua_tonumber(L, -1) > 0))
            return luaL_error(L, "bad field 'timeout' (positive number expected)");
        timeout = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);

    /* URL: parsed by libcurl; only http(s), no credentials in it */
    s->url = curl_url();
    if (s->url == NULL)
        return luaL_error(L, "out of memory");
    uc = curl_url_set(s->url, CURLUPART_URL, url, 0);
    if (uc != CURLUE_OK)
        return invalid(L, method, "url is not a valid absolute http(s) URL");
    if (curl_url_get(s->url, CURLUPART_SCHEME, &tmp, 0) != CURLUE_OK ||
        (strcmp(tmp, "http") != 0 && strcmp(tmp, "https") != 0))
        scheme_host_err = "url scheme must be http or https";
    else if (strcmp(tmp, "http") == 0)
        plain_http = 1;
    curl_free(tmp);
    tmp = NULL;
    if (scheme_host_err)
        return invalid(L, method, scheme_host_err);
    if (curl_url_get(s->url, CURLUPART_USER, &tmp, 0) == CURLUE_OK) {
        curl_free(tmp);
        return invalid(L, method, "url must not carry credentials; use api_key");
    }

    lua_getfield(L, 2, "query");
    if (!lua_isnil(L, -1)) {
        if (!lua_istable(L, -1))
            return luaL_error(L, "bad field 'query' (table expected, got %s)", luaL_typename(L, -1));
        build_query(L, s, lua_gettop(L));
        if (s->query.len > 0) {
            /* appended, so what the URL already had (a server's next link)
             * stays byte for byte; the pairs were escaped by libcurl */
            uc = curl_url_set(s->url, CURLUPART_QUERY, s->query.data, CURLU_APPENDQUERY);
            if (uc != CURLUE_OK)
                return invalid(L, method, "query could not be added to the url");
        }
    }
    lua_pop(L, 1);
    if (curl_url_get(s->url, CURLUPART_URL, &tmp, 0) != CURLUE_OK)
        return invalid(L, method, "url could not be assembled");
    /* anchor the final URL in Lua and free libcurl's copy at once */
    lua_pushstring(L, tmp);
    curl_free(tmp);
    tmp = NULL;
    final_url = (char *)lua_tostring(L, -1);

    /* credentials */
    lua_getfield(L, 2, "api_key");
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING)
            return luaL_error(L, "bad field 'api_key' (string expected, got %s)", luaL_typename(L, -1));
        key = lua_tolstring(L, -1, &klen);
        if (klen == 0)
            return invalid(L, method, "api_key is empty");
        if (has_ctl(key, klen))
            return invalid(L, method, "api_key contains CR, LF or NUL");
        lua_pushliteral(L, "Authorization: Bearer ");
        lua_pushvalue(L, -2);
        lua_concat(L, 2);
        if (add_header(s, lua_tostring(L, -1)) != 0)
            return luaL_error(L, "out of memory");
        lua_pop(L, 1);
    }

    /* headers: names must be tokens, values free of CR/LF/NUL */
    if (add_header(s, "Accept: application/json") != 0 || add_header(s, "Expect:") != 0)
        return luaL_error(L, "out of memory");
    lua_getfield(L, 2, "headers");
    if (!lua_isnil(L, -1)) {
        int h = lua_gettop(L);
        if (!lua_istable(L, h))
            return luaL_error(L, "bad field 'headers' (table expected, got %s)", luaL_typename(L, h));
        lua_pushnil(L);
        while (lua_next(L, h)) {
            size_t nlen, vlen;
            const char *name, *value;
            if (lua_type(L, -2) != LUA_TSTRING)
                return luaL_error(L, "bad header name (string expected, got %s)", luaL_typename(L, -2));
            name = lua_tolstring(L, -2, &nlen);
            value = scalar_tostring(L, -1, "header", name, &vlen);
            if (!valid_token(name, nlen))
                return invalid(L, method, "header name is not a valid HTTP token");
            if (has_ctl(value, vlen))
                return invalid(L, method, "header value contains CR, LF or NUL");
            if (key != NULL && nlen == 13 && strncasecmp(name, "authorization", 13) == 0)
                return luaL_error(L, "bad header 'Authorization' (conflicts with api_key)");
            lua_pushfstring(L, "%s: %s", name, value);
            if (add_header(s, lua_tostring(L, -1)) != 0)
                return luaL_error(L, "out of memory");
            lua_pop(L, 3); /* line, value string, value */
        }
    }
    lua_pop(L, 1);

    /* body: a Lua value encoded by the private cjson, or a raw string */
    lua_getfield(L, 2, "json");
    if (!lua_isnil(L, -1)) {
        lua_getfield(L, UL_STATE, UL_ST_ENCODE);
        lua_insert(L, -2);
        if (lua_pcall(L, 1, 1, 0) != 0)
            return luaL_error(L, "bad field 'json' (%s)", lua_tostring(L, -1));
        if (add_header(s, "Content-Type: application/json") != 0)
            return luaL_error(L, "out of memory");
    } else {
        lua_pop(L, 1);
        lua_getfield(L, 2, "body");
        if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
            return luaL_error(L, "bad field 'body' (string expected, got %s)", luaL_typename(L, -1));
    }
    body = lua_tolstring(L, -1, &blen); /* anchored in the pending table below */
    body_idx = lua_gettop(L);

    /* checked after every argument, so a programmer mistake always raises */
    if (key != NULL && plain_http && !s->allow_insecure_http) {
        int loop;
        if (curl_url_get(s->url, CURLUPART_HOST, &tmp, 0) != CURLUE_OK)
            return invalid(L, method, "url has no host");
        loop = is_loopback(tmp);
        curl_free(tmp);
        tmp = NULL;
        if (!loop) {
            lua_pushnil(L);
            ul_push_error(L, "invalid", 0,
                          "refusing to send an API key over plain http to a non-loopback host "
                          "(use https, or allow_insecure_http = true)",
                          method, final_url, NULL);
            return 2;
        }
    }

    /* libcurl options: reset first so nothing leaks from the last request;
     * the connection cache survives the reset. */
    curl_easy_reset(s->easy);
    curl_easy_setopt(s->easy, CURLOPT_ERRORBUFFER, s->errbuf);
    curl_easy_setopt(s->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(s->easy, CURLOPT_CURLU, s->url);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(s->easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(s->easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(s->easy, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    curl_easy_setopt(s->easy, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, s->hdrs);
    curl_easy_setopt(s->easy, CURLOPT_USERAGENT, lua_tostring(L, lua_upvalueindex(2)));
    curl_easy_setopt(s->easy, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(s->easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(s->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)(s->connect_timeout * 1000));
    curl_easy_setopt(s->easy, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000));
    curl_easy_setopt(s->easy, CURLOPT_LOW_SPEED_LIMIT, s->low_speed_limit);
    curl_easy_setopt(s->easy, CURLOPT_LOW_SPEED_TIME, (long)s->low_speed_time);
    curl_easy_setopt(s->easy, CURLOPT_MAXFILESIZE_LARGE, s->max_size);
    curl_easy_setopt(s->easy, CURLOPT_SSL_VERIFYPEER, s->verify ? 1L : 0L);
    curl_easy_setopt(s->easy, CURLOPT_SSL_VERIFYHOST, s->verify ? 2L : 0L);
    if (s->cafile)
        curl_easy_setopt(s->easy, CURLOPT_CAINFO, s->cafile);
    if (s->capath)
        curl_easy_setopt(s->easy, CURLOPT_CAPATH, s->capath);
    if (s->proxy)
        curl_easy_setopt(s->easy, CURLOPT_PROXY, s->proxy);
    /* redirects off by default; libcurl never forwards a custom Authorization
     * header to another host (CURLOPT_UNRESTRICTED_AUTH stays 0) */
    curl_easy_setopt(s->easy, CURLOPT_FOLLOWLOCATION, s->follow ? 1L : 0L);
    curl_easy_setopt(s->easy, CURLOPT_MAXREDIRS, s->max_redirects);
    curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(s->easy, CURLOPT_PREREQFUNCTION, ul_xfer_prereq);
    curl_easy_setopt(s->easy, CURLOPT_PREREQDATA, &s->x);
    curl_easy_setopt(s->easy, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(s->easy, CURLOPT_HEADERDATA, s);
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(s->easy, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(s->easy, CURLOPT_NOBODY, 1L);
    } else {
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(s->easy, CURLOPT_CUSTOMREQUEST, method);
        if (body != NULL || strcmp(method, "POST") == 0) {
            curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
            curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, body ? body : "");
        }
    }

    /* what finish() needs, anchored for the transfer's lifetime */
    lua_createtable(L, 0, 5);
    lua_pushstring(L, method);
    lua_setfield(L, -2, "method");
    lua_pushstring(L, final_url);
    lua_setfield(L, -2, "url");
    if (key != NULL) {
        lua_pushlstring(L, key, klen);
        lua_setfield(L, -2, "key");
    }
    if (body != NULL) {
        lua_pushvalue(L, body_idx);
        lua_setfield(L, -2, "body");
    }
    lua_pushboolean(L, decode);
    lua_setfield(L, -2, "decode");
    lua_getfield(L, 2, "rows"); /* a page: its rows shaped as they are decoded */
    lua_setfield(L, -2, "rows");
    s->pending = luaL_ref(L, LUA_REGISTRYINDEX);
    if (ul_multi_add(s->m, s->easy, &s->x) != 0) {
        stop_transfer(L, s);
        return luaL_error(L, "curl_multi_add_handle failed");
    }
    s->active = 1;
    return 0;
}

/* Pushes the outcome of the transfer that ended with rc: the response, or
 * nil, err. Returns the number of values pushed. */
static int finish(lua_State *L, ul_session *s, CURLcode rc)
{
    const char *method, *final_url, *key;
    int decode, res, pending;
    long status = 0, newconns = 0;

    lua_rawgeti(L, LUA_REGISTRYINDEX, s->pending); /* anchors the strings below */
    pending = lua_gettop(L);
    stop_transfer(L, s);
    lua_getfield(L, -1, "method");
    method = lua_tostring(L, -1);
    lua_getfield(L, -2, "url");
    final_url = lua_tostring(L, -1);
    lua_getfield(L, -3, "key");
    key = lua_tostring(L, -1);
    lua_getfield(L, -4, "decode");
    decode = lua_toboolean(L, -1);
    lua_pop(L, 1);

    curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(s->easy, CURLINFO_NUM_CONNECTS, &newconns);

    if (s->too_large || rc == CURLE_FILESIZE_EXCEEDED) {
        char msg[96];
        snprintf(msg, sizeof msg, "response exceeds max_size (%.0f bytes)", (double)s->max_size);
        lua_pushnil(L);
        ul_push_error(L, "too_large", status, msg, method, final_url, key);
        return 2;
    }
    if (s->oom) {
        lua_pushnil(L);
        ul_push_error(L, "network", status, "out of memory while receiving the response", method, final_url, key);
        return 2;
    }
    if (rc != CURLE_OK) {
        const char *kind = curl_kind(rc);
        lua_pushnil(L);
        lua_pushfstring(L, "%s (curl %d: %s)",
                        s->errbuf[0] ? s->errbuf : curl_easy_strerror(rc), (int)rc,
                        curl_easy_strerror(rc));
        ul_push_error(L, kind, 0, lua_tostring(L, -1), method, final_url, key);
        lua_remove(L, -2);
        lua_pushboolean(L, strcmp(kind, "network") == 0 || strcmp(kind, "timeout") == 0);
        lua_setfield(L, -2, "retryable");
        ul_pushint(L, rc);
        lua_setfield(L, -2, "curl_code");
        return 2;
    }

    /* response: {status, headers, body, bytes, new_connections} */
    lua_newtable(L);
    res = lua_gettop(L);
    ul_pushint(L, status);
    lua_setfield(L, res, "status");
    ul_pushint(L, (lua_Integer)s->body.len);
    lua_setfield(L, res, "bytes");
    ul_pushint(L, newconns);
    lua_setfield(L, res, "new_connections");
    lua_newtable(L);
    {
        header_ctx c;
        c.L = L;
        c.t = lua_gettop(L);
        ul_headers_each(s->head.data ? s->head.data : "", s->head.len, push_header, &c);
        rate_facts(L, res, c.t);
    }
    lua_setfield(L, res, "headers");

    if (status >= 300) {
        /* an HTTP error: the decoded body (if JSON) rides along so that the
         * provider layer can read its code and message */
        int err;
        size_t rlen;
        /* stays on the stack (rbody points into it) until the return */
        const char *rbody = ul_push_redacted(L, s->body.data, s->body.len, key, &rlen);
        /* the message is a printable excerpt of the body (the provider
         * layer replaces it with the provider's own message) */
        if (rlen > 0)
            ul_push_excerpt(L, rbody, rlen, 0);
        else
            lua_pushfstring(L, "HTTP %d with an empty body", (int)status);
        lua_pushnil(L);
        ul_push_error(L, "http", status, lua_tostring(L, -2), method, final_url, key);
        err = lua_gettop(L);
        lua_getfield(L, res, "headers");
        lua_setfield(L, err, "headers");
        lua_getfield(L, err, "headers");
        retry_facts(L, err, status, lua_gettop(L));
        rate_facts(L, err, lua_gettop(L));
        lua_pop(L, 1);
        if (rlen > 0) {
            size_t off;
            const char *msg;
            if (ul_json_value(L, rbody, rlen, NULL, &off, &msg)) {
                lua_setfield(L, err, "body");
            } else {
                lua_pushlstring(L, rbody, rlen > 512 ? 512 : rlen);
                lua_setfield(L, err, "raw");
            }
        }
        return 2;
    }

    if (!decode) {
        lua_pushlstring(L, s->body.data ? s->body.data : "", s->body.len);
        lua_setfield(L, res, "body");
    } else if (status != 204 && strcmp(method, "HEAD") != 0) {
        lua_getfield(L, pending, "rows");
        if (lua_istable(L, -1) && s->body.len > 0) {
            if (!ul_decode_rows(L, s->body.data, s->body.len, -1, method, final_url, key))
                return 2;
            lua_setfield(L, res, "shaped");
            lua_setfield(L, res, "body");
            lua_pop(L, 1);
        } else {
            lua_pop(L, 1);
            if (ul_decode_body(L, s->body.data, s->body.len, NULL, method, final_url, key) == 2)
                return 2;
            lua_setfield(L, res, "body");
        }
    }
    lua_pushvalue(L, res);
    ul_buffer_reset(&s->body, KEEP_BUFFER);
    return 1;
}

static int multi_failed(lua_State *L, ul_session *s)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->pending);
    stop_transfer(L, s);
    lua_getfield(L, -1, "method");
    lua_getfield(L, -2, "url");
    lua_pushnil(L);
    ul_push_error(L, "network", 0, "curl_multi_perform failed", lua_tostring(L, -3),
                  lua_tostring(L, -2), NULL);
    return 2;
}

/* session:request{ method=, url=, query=, headers=, api_key=, json=, body=,
 *                  decode=, timeout= }
 * -> response {status, headers, body, bytes, new_connections, rate_limit?} | nil, err
 * Blocks until the transfer ends (libcurl's timeouts bound it). */
static int session_request(lua_State *L)
{
    ul_session *s = check_session(L);
    int n = prepare(L, s);
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
    int n = prepare(L, s);
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
        return luaL_error(L, "no transfer in progress (start one first)");
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
        return luaL_error(L, "curl_multi_poll failed");
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
