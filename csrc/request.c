/* Request building: a request table (method, url, query, headers, api_key,
 * json or body, decode, rows, timeout) read, checked and made into the
 * session's URL handle, header list and libcurl options. Each step below
 * reads one field or sets one group of options, in the order the fields
 * have always been checked; a failure is raised or returned by the rule in
 * core.h (ul_reject). Nothing here starts the transfer: session.c does.
 *
 * Lifetime: the URL handle, header list and query buffer hang off the
 * session, so a Lua error raised at any step leaks nothing; the strings
 * libcurl points at are anchored on the stack, then in the pending table. */
#include "request.h"
#include "response.h"
#include "core.h"
#include "compat.h"

#include <curl/curl.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* What a request is built from. The strings are anchored on the stack (or
 * are literals) until the pending table holds them. */
typedef struct {
    int t;                 /* the request table's stack index */
    const char *method;    /* a token */
    const char *final_url; /* the URL sent, once assembled (else NULL) */
    const char *key;       /* api_key, or NULL */
    size_t klen;
    const char *body; /* what is sent (json encoded, or body), or NULL */
    size_t blen;
    int body_idx; /* its stack slot */
    int decode, plain_http;
    double timeout;
} request;

/* ---------------------------------------------------------------- checks */

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
        ul_raise(L, "bad %s '%s' (string, number or boolean expected, got %s)", what, key,
                 luaL_typename(L, idx));
    }
    return lua_tolstring(L, -1, len);
}

/* ---------------------------------------------------------------- fields */

/* method: the field's string, else POST when there is a body, else GET. */
static void read_method(lua_State *L, request *r)
{
    lua_getfield(L, r->t, "method"); /* stays: it anchors r->method */
    /* lua_tostring first: a number is taken as its text */
    r->method = lua_isnil(L, -1) ? NULL : lua_tostring(L, -1);
    if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
        ul_raise(L, "bad field 'method' (string expected, got %s)", luaL_typename(L, -1));
    lua_getfield(L, r->t, "json");
    lua_getfield(L, r->t, "body");
    if (r->method == NULL)
        r->method = (!lua_isnil(L, -1) || !lua_isnil(L, -2)) ? "POST" : "GET";
    if (!valid_token(r->method, strlen(r->method)))
        ul_raise(L, "bad field 'method' (not an HTTP method)");
    lua_pop(L, 2);
}

/* url: a string (left on the stack, it anchors *url) without a space, CR,
 * LF or NUL, whatever a server's next link held. */
static int read_url(lua_State *L, const request *r, const char **url)
{
    size_t ulen;
    lua_getfield(L, r->t, "url");
    if (lua_type(L, -1) != LUA_TSTRING)
        return ul_raise(L, "bad field 'url' (string expected, got %s)", luaL_typename(L, -1));
    *url = lua_tolstring(L, -1, &ulen);
    if (has_ctl(*url, ulen) || memchr(*url, ' ', ulen) != NULL)
        return ul_reject(L, UL_DATA, r->method, NULL, "url contains a space, CR, LF or NUL");
    return 0;
}

/* decode, rows and timeout: how the response is to be taken. */
static void read_handling(lua_State *L, const ul_session *s, request *r)
{
    r->decode = 1;
    lua_getfield(L, r->t, "decode");
    if (!lua_isnil(L, -1)) {
        if (!lua_isboolean(L, -1))
            ul_raise(L, "bad field 'decode' (boolean expected, got %s)", luaL_typename(L, -1));
        r->decode = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    lua_getfield(L, r->t, "rows");
    if (!lua_isnil(L, -1) && !lua_istable(L, -1))
        ul_raise(L, "bad field 'rows' (table expected, got %s)", luaL_typename(L, -1));
    lua_pop(L, 1);
    lua_getfield(L, r->t, "timeout");
    r->timeout = s->timeout;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER || !(lua_tonumber(L, -1) > 0))
            ul_raise(L, "bad field 'timeout' (positive number expected)");
        r->timeout = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
}

/* The URL policy: parsed by libcurl into s->url; http or https only, and
 * no credentials in it (they go in api_key). */
static int parse_url(lua_State *L, ul_session *s, request *r, const char *url)
{
    char *tmp = NULL;
    const char *bad = NULL;
    s->url = curl_url();
    if (s->url == NULL)
        return ul_raise(L, "out of memory");
    if (curl_url_set(s->url, CURLUPART_URL, url, 0) != CURLUE_OK)
        return ul_reject(L, UL_DATA, r->method, NULL, "url is not a valid absolute http(s) URL");
    if (curl_url_get(s->url, CURLUPART_SCHEME, &tmp, 0) != CURLUE_OK ||
        (strcmp(tmp, "http") != 0 && strcmp(tmp, "https") != 0))
        bad = "url scheme must be http or https";
    else if (strcmp(tmp, "http") == 0)
        r->plain_http = 1;
    curl_free(tmp);
    tmp = NULL;
    if (bad)
        return ul_reject(L, UL_DATA, r->method, NULL, "%s", bad);
    if (curl_url_get(s->url, CURLUPART_USER, &tmp, 0) == CURLUE_OK) {
        curl_free(tmp);
        return ul_reject(L, UL_DATA, r->method, NULL, "url must not carry credentials; use api_key");
    }
    return 0;
}

/* ---------------------------------------------------------------- query */

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
        ul_raise(L, "out of memory");
    lua_pop(L, 1);
}

/* The query table's keys, sorted for a stable URL, in a userdata array
 * pushed on the stack (so that an error frees it through the GC); the
 * strings are anchored by the table. */
static const char **sorted_keys(lua_State *L, int q, size_t *nkeys)
{
    size_t n = 0, i = 0;
    const char **keys;
    lua_pushnil(L);
    while (lua_next(L, q)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            ul_raise(L, "bad query key (string expected, got %s)", luaL_typename(L, -2));
        n++;
        lua_pop(L, 1);
    }
    keys = ul_newuserdata(L, (n ? n : 1) * sizeof *keys);
    lua_pushnil(L);
    while (lua_next(L, q)) {
        keys[i++] = lua_tostring(L, -2);
        lua_pop(L, 1);
    }
    qsort(keys, n, sizeof *keys, cmp_str);
    *nkeys = n;
    return keys;
}

/* Builds "k=v&k=v2" into s->query: keys sorted, array values as repeated
 * keys, every key and value escaped by libcurl. */
static void build_query(lua_State *L, ul_session *s, int q)
{
    size_t nkeys, i;
    const char **keys = sorted_keys(L, q, &nkeys);
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

/* query: its pairs appended to the URL's own query; then the final URL,
 * pushed (it anchors r->final_url). */
static int add_query(lua_State *L, ul_session *s, request *r)
{
    char *tmp = NULL;
    lua_getfield(L, r->t, "query");
    if (!lua_isnil(L, -1)) {
        if (!lua_istable(L, -1))
            return ul_raise(L, "bad field 'query' (table expected, got %s)", luaL_typename(L, -1));
        build_query(L, s, lua_gettop(L));
        /* appended, so what the URL already had (a server's next link)
         * stays byte for byte; the pairs were escaped by libcurl */
        if (s->query.len > 0 &&
            curl_url_set(s->url, CURLUPART_QUERY, s->query.data, CURLU_APPENDQUERY) != CURLUE_OK)
            return ul_reject(L, UL_DATA, r->method, NULL, "query could not be added to the url");
    }
    lua_pop(L, 1);
    if (curl_url_get(s->url, CURLUPART_URL, &tmp, 0) != CURLUE_OK)
        return ul_reject(L, UL_DATA, r->method, NULL, "url could not be assembled");
    /* anchor the final URL in Lua and free libcurl's copy at once */
    lua_pushstring(L, tmp);
    curl_free(tmp);
    r->final_url = lua_tostring(L, -1);
    return 0;
}

/* ---------------------------------------------------------------- headers */

static int add_header(ul_session *s, const char *line)
{
    struct curl_slist *n = curl_slist_append(s->hdrs, line);
    if (n == NULL)
        return -1;
    s->hdrs = n;
    return 0;
}

/* api_key: sent as a bearer token. The value stays on the stack (it
 * anchors r->key). */
static int key_header(lua_State *L, ul_session *s, request *r)
{
    lua_getfield(L, r->t, "api_key");
    if (lua_isnil(L, -1))
        return 0;
    if (lua_type(L, -1) != LUA_TSTRING)
        return ul_raise(L, "bad field 'api_key' (string expected, got %s)", luaL_typename(L, -1));
    r->key = lua_tolstring(L, -1, &r->klen);
    if (r->klen == 0)
        return ul_reject(L, UL_DATA, r->method, NULL, "api_key is empty");
    if (has_ctl(r->key, r->klen))
        return ul_reject(L, UL_DATA, r->method, NULL, "api_key contains CR, LF or NUL");
    lua_pushliteral(L, "Authorization: Bearer ");
    lua_pushvalue(L, -2);
    lua_concat(L, 2);
    if (add_header(s, lua_tostring(L, -1)) != 0)
        return ul_raise(L, "out of memory");
    lua_pop(L, 1);
    return 0;
}

/* One entry of the headers table, name at -2 and value at -1: a token for
 * a name, a value free of CR/LF/NUL, and no Authorization beside api_key. */
static int one_header(lua_State *L, ul_session *s, const request *r)
{
    size_t nlen, vlen;
    const char *name, *value;
    if (lua_type(L, -2) != LUA_TSTRING)
        return ul_raise(L, "bad header name (string expected, got %s)", luaL_typename(L, -2));
    name = lua_tolstring(L, -2, &nlen);
    value = scalar_tostring(L, -1, "header", name, &vlen);
    if (!valid_token(name, nlen))
        return ul_reject(L, UL_DATA, r->method, NULL, "header name is not a valid HTTP token");
    if (has_ctl(value, vlen))
        return ul_reject(L, UL_DATA, r->method, NULL, "header value contains CR, LF or NUL");
    if (r->key != NULL && nlen == 13 && strncasecmp(name, "authorization", 13) == 0)
        return ul_raise(L, "bad header 'Authorization' (conflicts with api_key)");
    lua_pushfstring(L, "%s: %s", name, value);
    if (add_header(s, lua_tostring(L, -1)) != 0)
        return ul_raise(L, "out of memory");
    lua_pop(L, 2); /* line, value string */
    return 0;
}

/* Accept, an empty Expect, and the headers table's entries. */
static int add_headers(lua_State *L, ul_session *s, const request *r)
{
    int h;
    if (add_header(s, "Accept: application/json") != 0 || add_header(s, "Expect:") != 0)
        return ul_raise(L, "out of memory");
    lua_getfield(L, r->t, "headers");
    h = lua_gettop(L);
    if (!lua_isnil(L, h)) {
        if (!lua_istable(L, h))
            return ul_raise(L, "bad field 'headers' (table expected, got %s)", luaL_typename(L, h));
        lua_pushnil(L);
        while (lua_next(L, h)) {
            if (one_header(L, s, r) != 0)
                return 2;
            lua_pop(L, 1); /* value */
        }
    }
    lua_pop(L, 1);
    return 0;
}

/* ---------------------------------------------------------------- body */

/* json (a Lua value encoded by the private cjson) or body (a raw string),
 * left on the stack: it anchors r->body. */
static void read_body(lua_State *L, ul_session *s, request *r)
{
    lua_getfield(L, r->t, "json");
    if (!lua_isnil(L, -1)) {
        lua_getfield(L, UL_STATE, UL_ST_ENCODE);
        lua_insert(L, -2);
        if (lua_pcall(L, 1, 1, 0) != 0)
            ul_raise(L, "bad field 'json' (%s)", lua_tostring(L, -1));
        if (add_header(s, "Content-Type: application/json") != 0)
            ul_raise(L, "out of memory");
    } else {
        lua_pop(L, 1);
        lua_getfield(L, r->t, "body");
        if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
            ul_raise(L, "bad field 'body' (string expected, got %s)", luaL_typename(L, -1));
    }
    r->body = lua_tolstring(L, -1, &r->blen);
    r->body_idx = lua_gettop(L);
}

/* The insecure-http policy: an API key goes over plain http to a loopback
 * host only, unless the session allows it. Checked after every field, so
 * that a mistake in any of them is raised first. */
static int insecure_http(lua_State *L, const ul_session *s, const request *r)
{
    char *host = NULL;
    int loop;
    if (r->key == NULL || !r->plain_http || s->allow_insecure_http)
        return 0;
    if (curl_url_get(s->url, CURLUPART_HOST, &host, 0) != CURLUE_OK)
        return ul_reject(L, UL_DATA, r->method, NULL, "url has no host");
    loop = is_loopback(host);
    curl_free(host);
    if (loop)
        return 0;
    return ul_reject(L, UL_DATA, r->method, r->final_url,
                     "refusing to send an API key over plain http to a non-loopback host "
                     "(use https, or allow_insecure_http = true)");
}

/* ---------------------------------------------------------------- libcurl */

/* Everything but the method: reset first so nothing leaks from the last
 * request (the connection cache survives the reset). */
static void transfer_options(lua_State *L, ul_session *s, const request *r)
{
    CURL *e = s->easy;
    curl_easy_reset(e);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, s->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CURLU, s->url);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, s->hdrs);
    curl_easy_setopt(e, CURLOPT_USERAGENT, lua_tostring(L, UL_USER_AGENT));
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(s->connect_timeout * 1000));
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(r->timeout * 1000));
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, s->low_speed_limit);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)s->low_speed_time);
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, s->max_size);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, s->verify ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, s->verify ? 2L : 0L);
    if (s->cafile)
        curl_easy_setopt(e, CURLOPT_CAINFO, s->cafile);
    if (s->capath)
        curl_easy_setopt(e, CURLOPT_CAPATH, s->capath);
    if (s->proxy)
        curl_easy_setopt(e, CURLOPT_PROXY, s->proxy);
    /* redirects off by default; libcurl never forwards a custom Authorization
     * header to another host (CURLOPT_UNRESTRICTED_AUTH stays 0) */
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, s->follow ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, s->max_redirects);
    ul_response_sink(s); /* the body and headers received */
    curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, ul_xfer_prereq);
    curl_easy_setopt(e, CURLOPT_PREREQDATA, &s->x);
}

/* The method, and for any but GET and HEAD the body (POST always has one,
 * if only an empty one). */
static void method_options(CURL *e, const request *r)
{
    if (strcmp(r->method, "GET") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(r->method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else {
        if (strcmp(r->method, "POST") != 0)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
        if (r->body != NULL || strcmp(r->method, "POST") == 0) {
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->blen);
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body ? r->body : "");
        }
    }
}

/* What response.c needs once the transfer ends, in the table that the
 * session keeps while it runs (it anchors the strings libcurl points at). */
static void push_pending(lua_State *L, const request *r)
{
    lua_createtable(L, 0, 5);
    lua_pushstring(L, r->method);
    lua_setfield(L, -2, "method");
    lua_pushstring(L, r->final_url);
    lua_setfield(L, -2, "url");
    if (r->key != NULL) {
        lua_pushlstring(L, r->key, r->klen);
        lua_setfield(L, -2, "key");
    }
    if (r->body != NULL) {
        lua_pushvalue(L, r->body_idx);
        lua_setfield(L, -2, "body");
    }
    lua_pushboolean(L, r->decode);
    lua_setfield(L, -2, "decode");
    lua_getfield(L, r->t, "rows"); /* a page: its rows shaped as they are decoded */
    lua_setfield(L, -2, "rows");
}

int ul_request_build(lua_State *L, ul_session *s, int t)
{
    request r;
    const char *url = NULL;
    memset(&r, 0, sizeof r);
    r.t = t;
    read_method(L, &r);
    if (read_url(L, &r, &url) != 0)
        return 2;
    read_handling(L, s, &r);
    /* each returns 0, or 2 with nil, err pushed: the first failure ends it */
    if (parse_url(L, s, &r, url) != 0 || add_query(L, s, &r) != 0 ||
        key_header(L, s, &r) != 0 || add_headers(L, s, &r) != 0)
        return 2;
    read_body(L, s, &r);
    if (insecure_http(L, s, &r) != 0)
        return 2;
    transfer_options(L, s, &r);
    method_options(s->easy, &r);
    push_pending(L, &r);
    return 0;
}
