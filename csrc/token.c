/* Resume tokens (userlist.resume): a payload sealed into one printable,
 * opaque string, "ul1." and the URL-safe base64 (no padding) of an 8-byte
 * check value followed by the payload. The check value is FNV-1a 64 of the
 * payload: it catches a token truncated, mistyped or edited by hand, not a
 * forger (a token holds a position, never a key, so there is nothing to
 * forge). The same hash, in hex, fingerprints what a token belongs to. */
#include "core.h"
#include "compat.h"

#include <lauxlib.h>
#include <stdint.h>
#include <string.h>

#define PREFIX "ul1."
#define PREFIX_LEN 4
#define CHECK_LEN 8

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    size_t i;
    for (i = 0; i < n; i++) {
        h ^= p[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

static void put_check(unsigned char *out, uint64_t h)
{
    int i;
    for (i = CHECK_LEN - 1; i >= 0; i--) {
        out[i] = (unsigned char)(h & 0xff);
        h >>= 8;
    }
}

/* core.digest(s) -> 16 hex digits of FNV-1a 64 */
int ul_digest(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    unsigned char b[CHECK_LEN];
    char hex[2 * CHECK_LEN];
    int i;
    put_check(b, fnv1a((const unsigned char *)s, n));
    for (i = 0; i < CHECK_LEN; i++) {
        hex[2 * i] = "0123456789abcdef"[b[i] >> 4];
        hex[2 * i + 1] = "0123456789abcdef"[b[i] & 15];
    }
    lua_pushlstring(L, hex, sizeof hex);
    return 1;
}

/* Appends n bytes as base64url without padding. */
static void add_b64(luaL_Buffer *B, const unsigned char *p, size_t n)
{
    size_t i;
    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8) | p[i + 2];
        luaL_addchar(B, B64[v >> 18]);
        luaL_addchar(B, B64[(v >> 12) & 63]);
        luaL_addchar(B, B64[(v >> 6) & 63]);
        luaL_addchar(B, B64[v & 63]);
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        luaL_addchar(B, B64[v >> 18]);
        luaL_addchar(B, B64[(v >> 12) & 63]);
    } else if (n - i == 2) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8);
        luaL_addchar(B, B64[v >> 18]);
        luaL_addchar(B, B64[(v >> 12) & 63]);
        luaL_addchar(B, B64[(v >> 6) & 63]);
    }
}

/* core.token_seal(payload) -> token */
int ul_token_seal(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    unsigned char head[CHECK_LEN + 2];
    luaL_Buffer B;
    size_t k;
    /* the check value and the payload are one stream: 8 bytes are two
     * 3-byte groups and 2 over, which the payload's first byte completes */
    luaL_argcheck(L, n > 0, 1, "empty payload");
    luaL_argcheck(L, n + CHECK_LEN <= UL_TOKEN_MAX / 4 * 3 - 3, 1, "payload too long for a token");
    put_check(head, fnv1a((const unsigned char *)s, n));
    k = 1; /* 8 + 1 = 9 bytes: a whole number of 3-byte groups */
    memcpy(head + CHECK_LEN, s, k);
    luaL_buffinit(L, &B);
    luaL_addlstring(&B, PREFIX, PREFIX_LEN);
    add_b64(&B, head, CHECK_LEN + k);
    add_b64(&B, (const unsigned char *)s + k, n - k);
    luaL_pushresult(&B);
    return 1;
}

static int b64_value(unsigned char c)
{
    const char *p = c ? strchr(B64, c) : NULL;
    return p ? (int)(p - B64) : -1;
}

/* core.token_open(token) -> payload, or nil and why (a phrase: "is not a
 * userlist resume token", "is damaged or truncated") */
int ul_token_open(lua_State *L)
{
    size_t n, i, len = 0, m;
    const char *s = luaL_checklstring(L, 1, &n);
    unsigned char *out;
    uint32_t acc = 0;
    int bits = 0;
    uint64_t want, got = 0;
    if (n < PREFIX_LEN || memcmp(s, PREFIX, PREFIX_LEN) != 0 || n > UL_TOKEN_MAX) {
        lua_pushnil(L);
        lua_pushliteral(L, "is not a userlist resume token (one starts with \"" PREFIX "\")");
        return 2;
    }
    s += PREFIX_LEN;
    n -= PREFIX_LEN;
    m = n / 4 * 3 + 3;
    out = (unsigned char *)lua_newuserdata(L, m); /* collected with the state */
    for (i = 0; i < n; i++) {
        int v = b64_value((unsigned char)s[i]);
        if (v < 0)
            break;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[len++] = (unsigned char)((acc >> bits) & 0xff);
        }
    }
    /* every character in the alphabet, no dangling bits, room for the check */
    if (i < n || bits >= 6 || (acc & ((1u << bits) - 1)) != 0 || len < CHECK_LEN + 1) {
        lua_pushnil(L);
        lua_pushliteral(L, "is damaged or truncated (not a whole token)");
        return 2;
    }
    for (i = 0; i < CHECK_LEN; i++)
        got = (got << 8) | out[i];
    want = fnv1a(out + CHECK_LEN, len - CHECK_LEN);
    if (got != want) {
        lua_pushnil(L);
        lua_pushliteral(L, "is damaged or truncated (its check value does not match)");
        return 2;
    }
    lua_pushlstring(L, (const char *)out + CHECK_LEN, len - CHECK_LEN);
    return 1;
}
