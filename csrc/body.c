/* Response bodies on their error paths: redaction of the key, printable
 * excerpts, and decoding (json.c). Kept apart from
 * libcurl so that a fuzzer can drive it directly. */
#include "body.h"
#include "json.h"
#include "core.h"
#include "compat.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

/* A printable excerpt of body around offset, for error messages. */
void ul_push_excerpt(lua_State *L, const char *body, size_t len, size_t off)
{
    luaL_Buffer b;
    size_t from = off > 24 ? off - 24 : 0, to = off + 24, i;
    if (to > len)
        to = len;
    luaL_buffinit(L, &b);
    for (i = from; i < to; i++) {
        unsigned char c = (unsigned char)body[i];
        luaL_addchar(&b, (c >= 32 && c < 127) ? (char)c : '.');
    }
    luaL_pushresult(&b);
}

/* Pushes the body as a Lua string with every occurrence of the key replaced,
 * for error paths only: excerpts and raw copies are cut from this, so not
 * even a prefix of the key can survive a truncation. */
static const char *find_bytes(const char *h, size_t hlen, const char *n, size_t nlen)
{
    size_t i;
    if (nlen == 0 || hlen < nlen)
        return NULL;
    for (i = 0; i + nlen <= hlen; i++)
        if (h[i] == n[0] && memcmp(h + i, n, nlen) == 0)
            return h + i;
    return NULL;
}

/* The one redaction of userlist: every occurrence of the key becomes
 * [REDACTED], in error bodies and messages here, and in what the Lua layer
 * hands the caller (core.redact). */
static const char *push_redacted(lua_State *L, const char *data, size_t dlen, const char *key,
                                 size_t klen, size_t *len)
{
    const char *p = data ? data : "", *end = p + dlen, *hit;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    /* byte-wise, so a key after an embedded NUL is found as well */
    while ((hit = find_bytes(p, (size_t)(end - p), key, klen)) != NULL) {
        luaL_addlstring(&b, p, (size_t)(hit - p));
        luaL_addstring(&b, "[REDACTED]");
        p = hit + klen;
    }
    luaL_addlstring(&b, p, (size_t)(end - p));
    luaL_pushresult(&b);
    return lua_tolstring(L, -1, len);
}

const char *ul_push_redacted(lua_State *L, const char *data, size_t dlen, const char *key,
                             size_t *len)
{
    return push_redacted(L, data, dlen, key, key ? strlen(key) : 0, len);
}

/* core.redact(s, key): s itself when the key is not in it. */
int ul_redact(lua_State *L)
{
    size_t slen, klen;
    const char *s = luaL_checklstring(L, 1, &slen);
    const char *key = luaL_checklstring(L, 2, &klen);
    if (find_bytes(s, slen, key, klen) == NULL) {
        lua_settop(L, 1);
        return 1;
    }
    push_redacted(L, s, slen, key, klen, NULL);
    return 1;
}

/* Decodes data (JSON null: core.null); leaves the value and returns 1, or
 * sets *off and *msg and leaves nothing. */
int ul_json_value(lua_State *L, const char *data, size_t dlen, const ul_json_rows *rows,
                  size_t *off, const char **msg)
{
    int ok;
    lua_getfield(L, UL_STATE, "null");
    ok = ul_json_decode(L, data, dlen, -1, rows, off, msg);
    if (ok)
        lua_remove(L, -2);
    else
        lua_pop(L, 1);
    return ok;
}

/* Pushes nil and the decode error for the fault msg at byte off of data:
 * the offset and an excerpt around it, the key redacted from both. */
int ul_push_decode_error(lua_State *L, const char *data, size_t dlen, size_t off,
                         const char *msg, const char *method, const char *url, const char *key)
{
    size_t rlen, roff = off;
    const char *red = ul_push_redacted(L, data, dlen, key, &rlen);
    if (off > dlen)
        off = roff = dlen;
    if (rlen != dlen && key != NULL) {
        /* shift the offset by what the replacements before it changed */
        size_t klen = strlen(key);
        const char *p = data, *end = data + off, *hit;
        while ((hit = find_bytes(p, (size_t)(data + dlen - p), key, klen)) != NULL &&
               hit + klen <= end) {
            roff = roff - klen + 10;
            p = hit + klen;
        }
    }
    if (roff > rlen)
        roff = rlen;
    ul_push_excerpt(L, red, rlen, roff);
    lua_remove(L, -2);
    lua_pushfstring(L, "invalid JSON at byte %d: %s near '%s'", (int)off, msg,
                    lua_tostring(L, -1));
    ul_fail(L, "decode", 0, lua_tostring(L, -1), method, url, key);
    ul_pushint(L, (lua_Integer)off);
    lua_setfield(L, -2, "offset");
    lua_pushvalue(L, -4);
    lua_setfield(L, -2, "excerpt");
    lua_remove(L, -4); /* the excerpt */
    lua_remove(L, -3); /* the message: nil, err are left */
    return 2;
}

int ul_decode_body(lua_State *L, const char *data, size_t dlen, const ul_json_rows *rows,
                   const char *method, const char *url, const char *key)
{
    const char *msg;
    size_t off = 0;
    if (dlen == 0)
        return ul_fail(L, "decode", 0, "empty response body where JSON was expected", method,
                       url, key);
    if (ul_json_value(L, data, dlen, rows, &off, &msg))
        return 1;
    return ul_push_decode_error(L, data, dlen, off, msg, method, url, key);
}
