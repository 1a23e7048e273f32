/* Response building: what a transfer receives (body and headers, into the
 * session's buffers, within max_size), and a transfer that has ended made
 * into what the request returns: the response table, or nil and the error
 * value, with the facts the Lua layer retries and paces by (status, headers,
 * curl_code, retry_after, rate_limit) and the body decoded (body.c, json.c), a page's
 * rows shaped as they are (shape.c). A failure here is the request's and
 * is returned; only a rows spec the code got wrong, or memory running
 * out, is raised (the rule in core.h). */
#include "response.h"
#include "body.h"
#include "core.h"
#include "compat.h"
#include "headers.h"

#include <curl/curl.h>
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define HEADER_LIMIT (256 * 1024) /* response headers are small; cap them */

/* ---------------------------------------------------------------- receiving
 * libcurl's callbacks. Plain C only: no Lua API calls in here. */

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
        ul_buffer_reset(&s->head, UL_KEEP_BUFFER); /* keep the last response only */
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

void ul_response_sink(ul_session *s)
{
    curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(s->easy, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(s->easy, CURLOPT_HEADERDATA, s);
}

/* ---------------------------------------------------------------- facts */

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

/* Sets err.retry_after from the headers at h (retry-after-ms, else
 * Retry-After's seconds or HTTP-date). Whether to try again at all is the
 * Lua layer's retry policy (userlist.transport). */
static void retry_after(lua_State *L, int err, int h)
{
    double secs;
    size_t len;
    const char *v;
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

static const char *const RATE_NAMES[3][4] = {
    {"ratelimit-limit", "x-ratelimit-limit", "x-ratelimit-limit-requests", "limit"},
    {"ratelimit-remaining", "x-ratelimit-remaining", "x-ratelimit-remaining-requests", "remaining"},
    {"ratelimit-reset", "x-ratelimit-reset", "x-ratelimit-reset-requests", "reset"},
};

/* Reads rate-limit fact i (RATE_NAMES' row: limit, remaining, reset) from
 * the headers at h: the first of its three headers that parses, else its
 * field of the structured RateLimit header. Returns 1 with *val set, or 0. */
static int rate_fact(lua_State *L, int h, int i, time_t now, double *val)
{
    int j, have = 0;
    size_t len;
    const char *v;
    for (j = 0; j < 3 && !have; j++) {
        lua_getfield(L, h, RATE_NAMES[i][j]);
        v = lua_tolstring(L, -1, &len);
        if (v != NULL) {
            len = first_item(v, len);
            have = (i == 2 ? ul_parse_ratelimit_reset(v, len, now, val)
                           : ul_parse_decimal(v, len, val)) == 0;
        }
        lua_pop(L, 1);
    }
    if (!have) {
        lua_getfield(L, h, "ratelimit");
        v = lua_tolstring(L, -1, &len);
        if (v != NULL)
            have = ul_parse_structured_field(v, len, RATE_NAMES[i][3], val) == 0;
        lua_pop(L, 1);
    }
    return have;
}

/* Sets t.rate_limit = {limit=, remaining=, reset=} from whichever rate-limit
 * headers the server sent (RateLimit-*, X-RateLimit-*[-Requests], or the
 * structured RateLimit header), so the Lua layer can pause before a 429. */
static void rate_facts(lua_State *L, int t, int h)
{
    double val[3];
    int have[3], i, any = 0;
    time_t now = time(NULL);
    for (i = 0; i < 3; i++) {
        have[i] = rate_fact(L, h, i, now, &val[i]);
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
            lua_setfield(L, -2, RATE_NAMES[i][3]);
        }
    }
    lua_setfield(L, t, "rate_limit");
}

/* ---------------------------------------------------------------- outcome */

/* The request a response answers, from its pending table (which anchors
 * the strings). */
typedef struct {
    int pending;
    const char *method, *url, *key;
    int decode;
} answered;

/* A transfer that did not complete: too large, out of memory while
 * receiving, or libcurl's error (with curl_code: the Lua layer retries it when it is
 * the network's or a timeout). Pushes nil, err; returns 2. */
static int transfer_failed(lua_State *L, const ul_session *s, const answered *a, CURLcode rc,
                           long status)
{
    const char *kind;
    if (s->too_large || rc == CURLE_FILESIZE_EXCEEDED) {
        char msg[96];
        snprintf(msg, sizeof msg, "response exceeds max_size (%.0f bytes)", (double)s->max_size);
        return ul_fail(L, "too_large", status, msg, a->method, a->url, a->key);
    }
    if (s->oom)
        return ul_fail(L, "network", status, "out of memory while receiving the response",
                       a->method, a->url, a->key);
    kind = curl_kind(rc);
    lua_pushfstring(L, "%s (curl %d: %s)", s->errbuf[0] ? s->errbuf : curl_easy_strerror(rc),
                    (int)rc, curl_easy_strerror(rc));
    ul_fail(L, kind, 0, lua_tostring(L, -1), a->method, a->url, a->key);
    lua_remove(L, -3); /* the message: nil, err are left */
    ul_pushint(L, rc);
    lua_setfield(L, -2, "curl_code");
    return 2;
}

/* Pushes the response table {status, bytes, new_connections, headers,
 * rate_limit?} and returns its index. */
static int push_response(lua_State *L, const ul_session *s, long status)
{
    long newconns = 0;
    int res;
    header_ctx c;
    curl_easy_getinfo(s->easy, CURLINFO_NUM_CONNECTS, &newconns);
    lua_newtable(L);
    res = lua_gettop(L);
    ul_pushint(L, status);
    lua_setfield(L, res, "status");
    ul_pushint(L, (lua_Integer)s->body.len);
    lua_setfield(L, res, "bytes");
    ul_pushint(L, newconns);
    lua_setfield(L, res, "new_connections");
    lua_newtable(L);
    c.L = L;
    c.t = lua_gettop(L);
    ul_headers_each(s->head.data ? s->head.data : "", s->head.len, push_header, &c);
    rate_facts(L, res, c.t);
    lua_setfield(L, res, "headers");
    return res;
}

/* An HTTP error status: nil, err with the response's headers, the retry and
 * rate-limit facts, and its body (key redacted) decoded when it is JSON,
 * else a raw excerpt, so that the provider layer can read the provider's
 * code and message. Returns 2. */
static int http_error(lua_State *L, const ul_session *s, const answered *a, long status, int res)
{
    int err;
    size_t rlen, off;
    const char *msg;
    /* stays on the stack (rbody points into it) until the return */
    const char *rbody = ul_push_redacted(L, s->body.data, s->body.len, a->key, &rlen);
    /* the message is a printable excerpt of the body (the provider layer
     * replaces it with the provider's own message) */
    if (rlen > 0)
        ul_push_excerpt(L, rbody, rlen, 0);
    else
        lua_pushfstring(L, "HTTP %d with an empty body", (int)status);
    ul_fail(L, "http", status, lua_tostring(L, -1), a->method, a->url, a->key);
    err = lua_gettop(L);
    lua_getfield(L, res, "headers");
    lua_setfield(L, err, "headers");
    lua_getfield(L, err, "headers");
    retry_after(L, err, lua_gettop(L));
    rate_facts(L, err, lua_gettop(L));
    lua_pop(L, 1);
    if (rlen == 0)
        return 2;
    if (ul_json_value(L, rbody, rlen, NULL, &off, &msg)) {
        lua_setfield(L, err, "body");
    } else {
        lua_pushlstring(L, rbody, rlen > 512 ? 512 : rlen);
        lua_setfield(L, err, "raw");
    }
    return 2;
}

/* A success's body into res.body: as received (decode = false), none for
 * 204 and HEAD, else decoded; a page's rows (the pending table's rows) are
 * shaped as they are decoded, the outcome in res.shaped. Returns 0, or 2
 * with nil, err pushed. */
static int success_body(lua_State *L, const ul_session *s, const answered *a, long status, int res)
{
    if (!a->decode) {
        lua_pushlstring(L, s->body.data ? s->body.data : "", s->body.len);
        lua_setfield(L, res, "body");
        return 0;
    }
    if (status == 204 || strcmp(a->method, "HEAD") == 0)
        return 0;
    lua_getfield(L, a->pending, "rows");
    if (lua_istable(L, -1) && s->body.len > 0) {
        if (!ul_decode_rows(L, s->body.data, s->body.len, -1, a->method, a->url, a->key))
            return 2;
        lua_setfield(L, res, "shaped");
        lua_setfield(L, res, "body");
        lua_pop(L, 1);
        return 0;
    }
    lua_pop(L, 1);
    if (ul_decode_body(L, s->body.data, s->body.len, NULL, a->method, a->url, a->key) == 2)
        return 2;
    lua_setfield(L, res, "body");
    return 0;
}

int ul_response_build(lua_State *L, ul_session *s, CURLcode rc, int pending)
{
    answered a;
    long status = 0;
    int res;
    a.pending = pending;
    lua_getfield(L, pending, "method"); /* these stay: the strings' anchors */
    a.method = lua_tostring(L, -1);
    lua_getfield(L, pending, "url");
    a.url = lua_tostring(L, -1);
    lua_getfield(L, pending, "key");
    a.key = lua_tostring(L, -1);
    lua_getfield(L, pending, "decode");
    a.decode = lua_toboolean(L, -1);
    lua_pop(L, 1);
    curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    if (s->too_large || s->oom || rc != CURLE_OK)
        return transfer_failed(L, s, &a, rc, status);
    res = push_response(L, s, status);
    if (status >= 300)
        return http_error(L, s, &a, status, res);
    if (success_body(L, s, &a, status, res) != 0)
        return 2;
    lua_pushvalue(L, res);
    ul_buffer_reset(&s->body, UL_KEEP_BUFFER);
    return 1;
}
