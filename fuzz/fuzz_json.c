/* libFuzzer target: the core's strict JSON decoder (csrc/json.c) against
 * two oracles, on one Lua 5.4 state.
 *  - lua-cjson (a cjson.new() instance, depth 200, no NaN/Infinity/hex):
 *    when both accept, the values must be the same (numbers compared as
 *    doubles, strings byte-exact, tables by keys both ways, null the same
 *    lightuserdata); when only one accepts (cjson is lenient: "2.", "-.5",
 *    raw control characters...) that is counted, not a failure.
 *  - a small RFC 8259 checker below (depth 200; space, tab, CR and LF only):
 *    the core must accept exactly what it accepts. Where both refuse, the
 *    checker's offset of the offending byte must be the core's (the
 *    contract's: a literal's start, an escape's backslash, the end of an
 *    unterminated text...); FUZZ_JSON_LAX_OFFSETS=1 only counts mismatches.
 * Also: every refusal is a userlist decode error with 0 <= offset <= length
 * and the message "invalid JSON at byte <offset>: ...", and core.decode_body
 * agrees with core.json_decode. A second state, whose allocator fails past a
 * budget taken from the input, decodes again: a memory error must come out
 * as a clean Lua error (nothing else changes, no leak, the state still
 * decodes; luaL_checkstack's "stack overflow (...)" for want of memory is
 * counted apart). FUZZ_JSON_SHOW=1 prints the first inputs of each
 * one-sided kind to stderr. The counts are printed at exit. */
#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int luaopen_userlist_core(lua_State *L);

#define MAX_DEPTH 200
#define NO_ERROR ((size_t)-1)

static lua_State *L, *M; /* M: the state whose allocations fail */
static int show, lax_offsets;
static unsigned long n_runs, n_both, n_core_only, n_cjson_only, n_neither, n_offset_diff, n_oom,
    n_oom_stack;
static size_t oom_used, oom_limit = (size_t)-1;

/* realloc with a ceiling on the bytes in use (growth past it fails) */
static void *oom_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    void *p;
    (void)ud;
    if (ptr == NULL)
        osize = 0; /* then osize is a type tag */
    if (nsize == 0) {
        free(ptr);
        oom_used -= osize;
        return NULL;
    }
    if (nsize > osize && oom_used + (nsize - osize) > oom_limit)
        return NULL;
    p = realloc(ptr, nsize);
    if (p != NULL)
        oom_used = oom_used - osize + nsize;
    return p;
}

/* ---- the RFC 8259 checker ---- */

typedef struct {
    const unsigned char *s, *p, *e;
    size_t err;
    int depth;
} check_t;

static int fail_at(check_t *c, const unsigned char *at)
{
    if (c->err == NO_ERROR)
        c->err = (size_t)(at - c->s);
    return 0;
}

static void skip_ws(check_t *c)
{
    while (c->p < c->e && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int is_digit(const check_t *c, const unsigned char *q)
{
    return q < c->e && *q >= '0' && *q <= '9';
}

static int hex4(const check_t *c, const unsigned char *q, unsigned *cp)
{
    int i;
    *cp = 0;
    if (c->e - q < 4)
        return 0;
    for (i = 0; i < 4; i++) {
        unsigned char h = q[i];
        unsigned v;
        if (h >= '0' && h <= '9')
            v = (unsigned)(h - '0');
        else if ((h | 0x20) >= 'a' && (h | 0x20) <= 'f')
            v = (unsigned)((h | 0x20) - 'a' + 10);
        else
            return 0;
        *cp = *cp * 16 + v;
    }
    return 1;
}

/* A string from the opening quote at c->p; errors at the offending byte, a
 * bad escape at its backslash, an unterminated string at the end. */
static int check_string(check_t *c)
{
    const unsigned char *p = c->p + 1;
    for (;;) {
        unsigned cp, lo;
        const unsigned char *bs;
        if (p >= c->e)
            return fail_at(c, p);
        if (*p == '"') {
            c->p = p + 1;
            return 1;
        }
        if (*p < 0x20)
            return fail_at(c, p);
        if (*p != '\\') {
            p++;
            continue;
        }
        bs = p;
        if (p + 1 >= c->e)
            return fail_at(c, bs);
        switch (p[1]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            p += 2;
            continue;
        case 'u':
            if (!hex4(c, p + 2, &cp))
                return fail_at(c, bs);
            p += 6;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return fail_at(c, bs);
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (c->e - p >= 6 && p[0] == '\\' && p[1] == 'u' && hex4(c, p + 2, &lo) &&
                    lo >= 0xDC00 && lo <= 0xDFFF)
                    p += 6;
                else
                    return fail_at(c, bs);
            }
            continue;
        default:
            return fail_at(c, bs);
        }
    }
}

static int check_number(check_t *c)
{
    const unsigned char *p = c->p;
    if (*p == '-')
        p++;
    if (!is_digit(c, p))
        return fail_at(c, p);
    if (*p == '0') {
        p++;
        if (is_digit(c, p))
            return fail_at(c, p);
    } else {
        while (is_digit(c, p))
            p++;
    }
    if (p < c->e && *p == '.') {
        p++;
        if (!is_digit(c, p))
            return fail_at(c, p);
        while (is_digit(c, p))
            p++;
    }
    if (p < c->e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < c->e && (*p == '+' || *p == '-'))
            p++;
        if (!is_digit(c, p))
            return fail_at(c, p);
        while (is_digit(c, p))
            p++;
    }
    c->p = p;
    return 1;
}

static int check_literal(check_t *c, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(c->e - c->p) < n || memcmp(c->p, word, n) != 0)
        return fail_at(c, c->p); /* at the literal's start */
    c->p += n;
    return 1;
}

static int check_value(check_t *c);

/* An array or object from its opening bracket at c->p. */
static int check_container(check_t *c, int object)
{
    unsigned char close = object ? '}' : ']';
    if (++c->depth > MAX_DEPTH)
        return fail_at(c, c->p);
    c->p++;
    skip_ws(c);
    if (c->p < c->e && *c->p == close) {
        c->p++;
        c->depth--;
        return 1;
    }
    for (;;) {
        if (object) {
            skip_ws(c);
            if (c->p >= c->e || *c->p != '"')
                return fail_at(c, c->p);
            if (!check_string(c))
                return 0;
            skip_ws(c);
            if (c->p >= c->e || *c->p != ':')
                return fail_at(c, c->p);
            c->p++;
        }
        if (!check_value(c))
            return 0;
        skip_ws(c);
        if (c->p < c->e && *c->p == ',') {
            c->p++;
            continue;
        }
        if (c->p < c->e && *c->p == close) {
            c->p++;
            c->depth--;
            return 1;
        }
        return fail_at(c, c->p);
    }
}

static int check_value(check_t *c)
{
    skip_ws(c);
    if (c->p >= c->e)
        return fail_at(c, c->p);
    switch (*c->p) {
    case '{': return check_container(c, 1);
    case '[': return check_container(c, 0);
    case '"': return check_string(c);
    case 't': return check_literal(c, "true");
    case 'f': return check_literal(c, "false");
    case 'n': return check_literal(c, "null");
    default:
        if (*c->p == '-' || (*c->p >= '0' && *c->p <= '9'))
            return check_number(c);
        return fail_at(c, c->p);
    }
}

/* NO_ERROR if text is one JSON value, else the offset of the offending byte. */
static size_t check_json(const unsigned char *text, size_t len)
{
    check_t c;
    c.s = c.p = text;
    c.e = text + len;
    c.err = NO_ERROR;
    c.depth = 0;
    if (check_value(&c)) {
        skip_ws(&c);
        if (c.p != c.e)
            fail_at(&c, c.p);
    }
    return c.err;
}

/* ---- helpers ---- */

static void print_input(const char *what, const uint8_t *data, size_t size)
{
    size_t i, n = size < 300 ? size : 300;
    fprintf(stderr, "fuzz_json: %s (%zu bytes): '", what, size);
    for (i = 0; i < n; i++) {
        if (data[i] >= 0x20 && data[i] < 0x7f && data[i] != '\\')
            fputc(data[i], stderr);
        else
            fprintf(stderr, "\\x%02x", data[i]);
    }
    fprintf(stderr, "%s'\n", n < size ? "..." : "");
}

static void die(const char *why, const uint8_t *data, size_t size)
{
    print_input(why, data, size);
    abort();
}

/* Deep equality of the values at a and b (absolute indexes). */
static int same_value(int a, int b, int depth)
{
    int t = lua_type(L, a);
    if (t != lua_type(L, b))
        return 0;
    switch (t) {
    case LUA_TNUMBER: {
        double x = (double)lua_tonumber(L, a), y = (double)lua_tonumber(L, b);
        return x == y || (x != x && y != y);
    }
    case LUA_TSTRING: {
        size_t la, lb;
        const char *sa = lua_tolstring(L, a, &la), *sb = lua_tolstring(L, b, &lb);
        return la == lb && memcmp(sa, sb, la) == 0;
    }
    case LUA_TBOOLEAN:
        return lua_toboolean(L, a) == lua_toboolean(L, b);
    case LUA_TLIGHTUSERDATA:
        return lua_touserdata(L, a) == lua_touserdata(L, b);
    case LUA_TTABLE: {
        long na = 0, nb = 0;
        if (depth > MAX_DEPTH + 2)
            return 0;
        luaL_checkstack(L, 6, "fuzz_json compare");
        lua_pushnil(L);
        while (lua_next(L, a) != 0) { /* every key of a is in b, same value */
            int ok;
            na++;
            lua_pushvalue(L, -2);
            lua_rawget(L, b);
            ok = same_value(lua_gettop(L) - 1, lua_gettop(L), depth + 1);
            lua_pop(L, 2);
            if (!ok) {
                lua_pop(L, 1);
                return 0;
            }
        }
        lua_pushnil(L);
        while (lua_next(L, b) != 0) { /* and b has no other key */
            nb++;
            lua_pop(L, 1);
        }
        return na == nb;
    }
    default:
        return 0; /* nothing else may come out of a decoder */
    }
}

/* The error at idx is a userlist decode error with a sane offset and
 * message; returns its offset. */
static size_t check_error(int idx, size_t size, const uint8_t *data, const char *who)
{
    lua_Integer off;
    const char *msg;
    char prefix[64];
    if (lua_type(L, idx) == LUA_TSTRING && strstr(lua_tostring(L, idx), "not enough memory"))
        return NO_ERROR;
    if (!lua_istable(L, idx)) {
        fprintf(stderr, "fuzz_json: %s raised a %s: %s\n", who, luaL_typename(L, idx),
                lua_tostring(L, idx) ? lua_tostring(L, idx) : "?");
        die("the error is no userlist error", data, size);
    }
    lua_getfield(L, idx, "kind");
    if (lua_type(L, -1) != LUA_TSTRING || strcmp(lua_tostring(L, -1), "decode") != 0)
        die("the error's kind is not decode", data, size);
    lua_pop(L, 1);
    lua_getfield(L, idx, "message");
    msg = lua_tostring(L, -1);
    lua_pop(L, 1);
    if (msg == NULL)
        die("the error has no message", data, size);
    if (size == 0 && strcmp(who, "decode_body") == 0) {
        if (strcmp(msg, "empty response body where JSON was expected") != 0)
            die("decode_body: wrong message for an empty body", data, size);
        return 0;
    }
    lua_getfield(L, idx, "offset");
    if (!lua_isinteger(L, -1)) {
        fprintf(stderr, "fuzz_json: %s: %s\n", who, msg);
        die("the error's offset is not an integer", data, size);
    }
    off = lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (off < 0 || (size_t)off > size) {
        fprintf(stderr, "fuzz_json: %s: offset %lld: %s\n", who, (long long)off, msg);
        die("the error's offset is outside the text", data, size);
    }
    snprintf(prefix, sizeof prefix, "invalid JSON at byte %lld: ", (long long)off);
    if (strncmp(msg, prefix, strlen(prefix)) != 0 || strstr(msg, " near '") == NULL) {
        fprintf(stderr, "fuzz_json: %s: %s\n", who, msg);
        die("the error's message is not 'invalid JSON at byte N: ... near ...'", data, size);
    }
    return (size_t)off;
}

static void report(void)
{
    fprintf(stderr,
            "fuzz_json: %lu inputs: both accept %lu, only core accepts %lu, only cjson accepts %lu,"
            " both refuse %lu, core vs checker offset differences %lu, memory errors %lu"
            " (and %lu said as \"stack overflow\")\n",
            n_runs, n_both, n_core_only, n_cjson_only, n_neither, n_offset_diff, n_oom, n_oom_stack);
}

static void open_core(lua_State *l)
{
    luaL_openlibs(l);
    /* Debian's lua-cjson first, whatever LUA_CPATH says */
    if (luaL_dostring(l, "package.cpath = '/usr/lib/x86_64-linux-gnu/lua/5.4/?.so;' .. package.cpath")
        != 0)
        abort();
    luaL_requiref(l, "userlist.core", luaopen_userlist_core, 0);
    lua_getfield(l, -1, "json_decode");
    lua_setglobal(l, "core_decode");
}

static void setup(void)
{
    show = getenv("FUZZ_JSON_SHOW") != NULL;
    lax_offsets = getenv("FUZZ_JSON_LAX_OFFSETS") != NULL;
    M = lua_newstate(oom_alloc, NULL);
    open_core(M);
    lua_settop(M, 0);
    L = luaL_newstate();
    open_core(L);
    lua_getfield(L, -1, "decode_body");
    lua_setglobal(L, "core_body");
    if (luaL_dostring(L, "local c = require('cjson').new(); c.decode_max_depth(200);"
                         " c.decode_invalid_numbers(false); return c.decode") != 0) {
        fprintf(stderr, "fuzz_json: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_setglobal(L, "cjson_decode");
    lua_settop(L, 0);
    atexit(report);
}

/* Decodes again in M with a memory budget from the input: the same result,
 * or a memory error (LUA_ERRMEM, or a "not enough memory" raised by the
 * core), after which M decodes as before. */
static void oom_pass(const uint8_t *data, size_t size, int core_ok)
{
    uint32_t h = 2166136261u;
    size_t i;
    int rc;
    for (i = 0; i < size; i++)
        h = (h ^ data[i]) * 16777619u;
    lua_getglobal(M, "core_decode");
    lua_pushlstring(M, (const char *)data, size);
    oom_limit = oom_used + h % (16 * size + 4096);
    rc = lua_pcall(M, 1, 1, 0);
    oom_limit = (size_t)-1;
    if (rc == LUA_ERRMEM ||
        (rc != 0 && lua_type(M, -1) == LUA_TSTRING && strstr(lua_tostring(M, -1), "not enough memory"))) {
        n_oom++;
    } else if (rc != 0 && lua_type(M, -1) == LUA_TSTRING &&
               strncmp(lua_tostring(M, -1), "stack overflow", 14) == 0) {
        /* luaL_checkstack failing for want of memory says "stack overflow
         * (...)": a memory error under another name */
        n_oom_stack++;
    } else if ((rc == 0) != core_ok) {
        fprintf(stderr, "fuzz_json: under a memory budget: %s\n",
                rc == 0 ? "accepted" : lua_tostring(M, -1) ? lua_tostring(M, -1) : luaL_typename(M, -1));
        die("a memory budget changed what the core accepts", data, size);
    } else if (rc != 0 && !lua_istable(M, -1)) {
        fprintf(stderr, "fuzz_json: under a memory budget: %s\n",
                lua_tostring(M, -1) ? lua_tostring(M, -1) : luaL_typename(M, -1));
        die("a memory budget gave an error that is neither a decode nor a memory error", data, size);
    }
    lua_settop(M, 0);
    lua_getglobal(M, "core_decode");
    lua_pushliteral(M, "[1,{\"abcdefgh1\":\"x\\n\",\"n\":1.5e300}]");
    if (lua_pcall(M, 1, 1, 0) != 0)
        die("the state no longer decodes after a memory error", data, size);
    lua_settop(M, 0);
    lua_gc(M, LUA_GCSTEP, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int core_ok, cjson_ok, body_n;
    size_t want, got = NO_ERROR;
    if (L == NULL)
        setup();
    n_runs++;
    want = check_json(data, size);

    lua_getglobal(L, "core_decode"); /* 1: core's value or error */
    lua_pushlstring(L, (const char *)data, size);
    core_ok = lua_pcall(L, 1, 1, 0) == 0;
    if (!core_ok) {
        got = check_error(1, size, data, "json_decode");
        if (got == NO_ERROR) { /* out of memory */
            lua_settop(L, 0);
            return 0;
        }
    }

    lua_getglobal(L, "cjson_decode"); /* 2: cjson's */
    lua_pushlstring(L, (const char *)data, size);
    cjson_ok = lua_pcall(L, 1, 1, 0) == 0;

    lua_getglobal(L, "core_body"); /* 3, 4: decode_body's */
    lua_pushlstring(L, (const char *)data, size);
    lua_pushliteral(L, "GET");
    lua_pushliteral(L, "http://127.0.0.1/fuzz");
    if (lua_pcall(L, 3, 2, 0) != 0)
        die("decode_body raised", data, size);
    body_n = lua_isnil(L, 3) ? 0 : 1;

    if (core_ok != (want == NO_ERROR)) {
        if (core_ok)
            die("the core accepts what RFC 8259 refuses", data, size);
        lua_getfield(L, 1, "message");
        fprintf(stderr, "fuzz_json: core: %s\n", lua_tostring(L, -1));
        die("the core refuses valid JSON", data, size);
    }
    if (core_ok) {
        if (!body_n || !same_value(1, 3, 0))
            die("decode_body and json_decode disagree on a value", data, size);
    } else {
        size_t boff;
        if (body_n)
            die("decode_body accepts what json_decode refuses", data, size);
        boff = check_error(4, size, data, "decode_body");
        if (size > 0 && boff != got)
            die("decode_body and json_decode give different offsets", data, size);
        if (got != want) {
            n_offset_diff++;
            if (show || !lax_offsets) {
                lua_getfield(L, 1, "message");
                fprintf(stderr, "fuzz_json: checker says %zu, core: %s\n", want, lua_tostring(L, -1));
                lua_pop(L, 1);
                print_input("offset differs", data, size);
            }
            if (!lax_offsets)
                abort();
        }
    }

    if (core_ok && cjson_ok) {
        n_both++;
        if (!same_value(1, 2, 0))
            die("core and cjson decode different values", data, size);
    } else if (core_ok) {
        if (show && n_core_only < 20)
            print_input("only the core accepts", data, size);
        n_core_only++;
    } else if (cjson_ok) {
        if (show && n_cjson_only < 20)
            print_input("only cjson accepts", data, size);
        n_cjson_only++;
    } else {
        n_neither++;
    }
    lua_settop(L, 0);
    lua_gc(L, LUA_GCSTEP, 0);
    oom_pass(data, size, core_ok);
    return 0;
}
