/* Strict JSON (RFC 8259) to Lua values in one pass over the text.
 *
 * Building and collecting Lua objects is nearly the whole cost of decoding
 * a page, so the work here goes into making fewer and cheaper ones:
 * strings are pushed straight from the input (their end found 8 bytes at
 * a time), numbers read exactly without strtod in the common case, object
 * tables created at the size of the last object at the same depth (rows
 * repeat their shape), small arrays at their exact size, and object keys
 * taken from a cache, since every row repeats the same keys. Given a page's
 * rows (json.h), the decoder also does what shaping can do as a value is
 * made, nulls out and figures final, so that the row hook has less to look
 * up afterwards. */
#include "json.h"
#include "compat.h"
#include "core.h"

#include <lauxlib.h>
#include <locale.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HINT_DEPTHS 32 /* depths whose last object size is remembered */
#define KEY_SLOTS 64   /* key cache entries (a power of two) */
#define KEY_MAX 40     /* longer keys are not cached */
#define STAGE 16       /* array elements gathered on the stack before the table */
#define OBJ_HINT_MAX 256   /* a size remembered is a guess: bounded, so that one */
#define ARR_HINT_MAX 8192  /* huge value cannot make every later one huge */

typedef struct {
    lua_State *L;
    const char *start, *p, *end;
    int depth;
    int null_idx;
    int keys_idx; /* the cache's anchor table: slot i holds key[i]'s string */
    const ul_json_rows *rows;
    int rows_on; /* the hook is still wanted */
    int had;     /* UL_JSON_* (and DIRTY) since the current row began */
    int in_row;  /* decoding inside a row: nulls out, deep_ints */
    int deep;    /* in_row and the rows' deep_ints */
    int slot;    /* the key cache slot of the key just pushed, or -1 */
    const char *tp; /* the TPARENT key whose object is at depth tp_depth (0: none) */
    size_t tplen;
    int tp_depth;
    const char *err;
    const char *err_at;
    int ohint[HINT_DEPTHS]; /* objects and arrays apart: an object after */
    int ahint[HINT_DEPTHS]; /* a long array is not made that long */
    struct {
        const char *s;
        size_t len;
        int role; /* its UL_JSON_ROLE_* | ROLE_KNOWN, or 0 not asked yet */
    } key[KEY_SLOTS];
} jd;

#define DIRTY 16        /* had: a role field not in its final form */
#define ROLE_KNOWN 256  /* key[].role: asked */

static int fail(jd *d, const char *at, const char *msg)
{
    d->err = msg;
    d->err_at = at;
    return 0;
}

static void skip_ws(jd *d)
{
    const char *p = d->p, *end = d->end;
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    d->p = p;
}

/* ---------------------------------------------------------------- strings */

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* The first byte at or after p that ends a plain run: '"', '\\' or a
 * control character (or end). Eight bytes at a time: a byte b is flagged
 * by (b - 1) & ~b & 0x80 for b == 0 after the xor, and by (b - 0x20) & ~b
 * & 0x80 for b < 0x20; a flag may be spurious past a real hit, never
 * missing, and the byte loop below decides. */
static const char *plain_end(const char *p, const char *end)
{
    while (end - p >= 8) {
        uint64_t v, q, b;
        memcpy(&v, p, 8);
        q = v ^ (ONES * '"');
        b = v ^ (ONES * '\\');
        if ((((q - ONES) & ~q) | ((b - ONES) & ~b) | ((v - ONES * 0x20) & ~v)) & HIGHS)
            break;
        p += 8;
    }
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\' || c < 0x20)
            return p;
        p++;
    }
    return p;
}

static int hex4(const char *p, const char *end, unsigned *out)
{
    unsigned v = 0;
    int i;
    if (end - p < 4)
        return 0;
    for (i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return 0;
    }
    *out = v;
    return 1;
}

static void add_utf8(luaL_Buffer *b, unsigned cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    luaL_addlstring(b, u, n);
}

/* One escape at p (a backslash) into b; returns the byte after it, or NULL
 * (the fault is at p). */
static const char *escape(luaL_Buffer *b, const char *p, const char *end)
{
    unsigned cp, lo;
    if (end - p < 2)
        return NULL;
    switch (p[1]) {
    case '"': luaL_addchar(b, '"'); return p + 2;
    case '\\': luaL_addchar(b, '\\'); return p + 2;
    case '/': luaL_addchar(b, '/'); return p + 2;
    case 'b': luaL_addchar(b, '\b'); return p + 2;
    case 'f': luaL_addchar(b, '\f'); return p + 2;
    case 'n': luaL_addchar(b, '\n'); return p + 2;
    case 'r': luaL_addchar(b, '\r'); return p + 2;
    case 't': luaL_addchar(b, '\t'); return p + 2;
    case 'u': break;
    default: return NULL;
    }
    if (!hex4(p + 2, end, &cp))
        return NULL;
    if (cp >= 0xDC00 && cp <= 0xDFFF)
        return NULL; /* a low surrogate first */
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (end - p < 12 || p[6] != '\\' || p[7] != 'u' || !hex4(p + 8, end, &lo) ||
            lo < 0xDC00 || lo > 0xDFFF)
            return NULL; /* a high surrogate without its low half */
        add_utf8(b, 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00));
        return p + 12;
    }
    add_utf8(b, cp);
    return p + 6;
}

/* A string with escapes, from s (after the quote) with the first escape at
 * p; pushes it. luaL_Buffer: nothing else touches the stack meanwhile. */
/* Fails with the buffer b open: closes it first. On 5.4 a buffer past
 * LUAL_BUFFERSIZE is a to-be-closed box on the stack, and the caller's
 * lua_settop would otherwise close it out of order (use after free). */
static int buffer_fail(jd *d, luaL_Buffer *b, const char *at, const char *msg)
{
    luaL_pushresult(b);
    lua_pop(d->L, 1);
    return fail(d, at, msg);
}

static int escaped_string(jd *d, const char *s, const char *p)
{
    luaL_Buffer b;
    const char *end = d->end;
    luaL_buffinit(d->L, &b);
    luaL_addlstring(&b, s, (size_t)(p - s));
    for (;;) {
        const char *q;
        if (p >= end)
            return buffer_fail(d, &b, p, "unterminated string");
        if (*p == '"')
            break;
        if ((unsigned char)*p < 0x20)
            return buffer_fail(d, &b, p, "control character in a string (escape it)");
        q = escape(&b, p, end);
        if (q == NULL)
            return buffer_fail(d, &b, p, "invalid escape (or a lone surrogate) in a string");
        p = q;
        q = plain_end(p, end);
        luaL_addlstring(&b, p, (size_t)(q - p));
        p = q;
    }
    luaL_pushresult(&b);
    d->p = p + 1;
    return 1;
}

/* Pushes a key, from the cache when the same bytes came before. */
static void push_key(jd *d, const char *s, size_t len)
{
    unsigned h;
    d->slot = -1;
    if (len > KEY_MAX || len == 0) {
        lua_pushlstring(d->L, s, len);
        return;
    }
    h = ((unsigned)len * 31u + (unsigned char)s[0] * 7u + (unsigned char)s[len - 1] +
         (unsigned char)s[len / 2] * 13u) & (KEY_SLOTS - 1);
    d->slot = (int)h;
    if (d->key[h].len == len && memcmp(d->key[h].s, s, len) == 0) {
        lua_rawgeti(d->L, d->keys_idx, (int)h + 1);
        return;
    }
    lua_pushlstring(d->L, s, len);
    lua_pushvalue(d->L, -1);
    lua_rawseti(d->L, d->keys_idx, (int)h + 1);
    /* the anchor table keeps the string, and Lua strings do not move */
    d->key[h].s = lua_tostring(d->L, -1);
    d->key[h].len = len;
    d->key[h].role = 0;
}

/* A string at d->p (its opening quote); pushes it. */
static int string(jd *d, int is_key)
{
    const char *s = d->p + 1, *p = plain_end(s, d->end);
    if (p < d->end && *p == '"') {
        if (is_key)
            push_key(d, s, (size_t)(p - s));
        else
            lua_pushlstring(d->L, s, (size_t)(p - s));
        d->p = p + 1;
        return 1;
    }
    if (p >= d->end)
        return fail(d, p, "unterminated string");
    if (*p != '\\')
        return fail(d, p, "control character in a string (escape it)");
    if (is_key)
        d->slot = -1;
    return escaped_string(d, s, p);
}

/* ---------------------------------------------------------------- numbers */

/* A number that is not an integer in the text. In a row with deep_ints, a
 * whole one within 2^53 is made an integer, as shaping would. */
static void push_float(jd *d, double v)
{
#if LUA_VERSION_NUM >= 503
    if (d->deep && ul_deep_whole(v)) {
        lua_pushinteger(d->L, (lua_Integer)v);
        return;
    }
#endif
    lua_pushnumber(d->L, v);
    if (!d->deep)
        d->had |= UL_JSON_HAD_FLOAT; /* deep: nothing left for the hook to make whole */
}

static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                               1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                               1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* The slow path: strtod on a NUL-terminated copy, with the locale's decimal
 * point (strtod reads the locale's, and an application may have set one). */
static double slow_number(jd *d, const char *s, size_t n)
{
    char small[64], *buf = small, dot = *localeconv()->decimal_point;
    double v;
    size_t i;
    if (n >= sizeof small && (buf = (char *)malloc(n + 1)) == NULL)
        ul_raise(d->L, "not enough memory");
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (dot != '.')
        for (i = 0; i < n; i++)
            if (buf[i] == '.')
                buf[i] = dot;
    v = strtod(buf, NULL);
    if (buf != small)
        free(buf); /* no Lua call in between: nothing can jump past this */
    return v;
}

/* A number's text as read: its first 19 significant digits in m, scaled
 * by ten to the power exp - frac (exp: the exponent, and integer digits
 * past the 19th; frac: the fraction digits kept in m). */
typedef struct {
    uint64_t m;
    int digits, frac, is_int;
    long exp;
} num_text;

/* The integer part at *pp: "0", or digits that do not start with 0. */
static int int_part(jd *d, const char **pp, num_text *n)
{
    const char *p = *pp, *end = d->end;
    if (p >= end || *p < '0' || *p > '9')
        return fail(d, p, "expected a digit");
    if (*p == '0') {
        p++;
        if (p < end && *p >= '0' && *p <= '9')
            return fail(d, p, "leading zero in a number");
    } else {
        while (p < end && *p >= '0' && *p <= '9') {
            if (n->digits < 19)
                n->m = n->m * 10 + (uint64_t)(*p - '0');
            else
                n->exp++; /* past 19 digits: only the magnitude (slow path) */
            n->digits++;
            p++;
        }
    }
    *pp = p;
    return 1;
}

/* A fraction at *pp, if any: its digits join m while it has room (leading
 * zeros take none). */
static int frac_part(jd *d, const char **pp, num_text *n)
{
    const char *p = *pp, *end = d->end;
    if (p >= end || *p != '.')
        return 1;
    n->is_int = 0;
    p++;
    if (p >= end || *p < '0' || *p > '9')
        return fail(d, p, "expected a digit after the decimal point");
    while (p < end && *p >= '0' && *p <= '9') {
        if (n->digits < 19) {
            n->m = n->m * 10 + (uint64_t)(*p - '0');
            if (n->m != 0)
                n->digits++;
            n->frac++;
        }
        p++;
    }
    *pp = p;
    return 1;
}

/* An exponent at *pp, if any, added to exp (its digits past 100000 are
 * only read: the value is 0 or infinite by then anyway). */
static int exp_part(jd *d, const char **pp, num_text *n)
{
    const char *p = *pp, *end = d->end;
    long e = 0;
    int eneg = 0;
    if (p >= end || (*p != 'e' && *p != 'E'))
        return 1;
    n->is_int = 0;
    p++;
    if (p < end && (*p == '+' || *p == '-')) {
        eneg = *p == '-';
        p++;
    }
    if (p >= end || *p < '0' || *p > '9')
        return fail(d, p, "expected a digit in the exponent");
    while (p < end && *p >= '0' && *p <= '9') {
        if (e < 100000)
            e = e * 10 + (*p - '0');
        p++;
    }
    n->exp += eneg ? -e : e;
    *pp = p;
    return 1;
}

/* Pushes an integer written without fraction or exponent when Lua holds it
 * exactly (an int64 on 5.3+, within 2^53 before); 0 if it does not. */
static int push_exact_int(jd *d, const num_text *n, int neg)
{
#if LUA_VERSION_NUM >= 503
    if (n->m <= (uint64_t)INT64_MAX) {
        lua_pushinteger(d->L, neg ? -(lua_Integer)n->m : (lua_Integer)n->m);
        return 1;
    }
    if (neg && n->m == (uint64_t)INT64_MAX + 1) {
        lua_pushinteger(d->L, (lua_Integer)INT64_MIN);
        return 1;
    }
#else
    if (n->m <= ((uint64_t)1 << 53)) {
        lua_pushnumber(d->L, neg ? -(lua_Number)n->m : (lua_Number)n->m);
        return 1;
    }
#endif
    return 0;
}

/* Clinger's fast path: an exact mantissa and an exact power of ten give the
 * correctly rounded quotient or product. Pushes it, or returns 0 when the
 * number is outside that. */
static int push_fast_float(jd *d, const num_text *n, int neg)
{
    long e = n->exp - n->frac;
    double v;
    if (!(n->digits < 19 && n->m <= ((uint64_t)1 << 53)) || e < -22 || e > 22)
        return 0;
    v = (double)n->m;
    v = e < 0 ? v / POW10[-e] : v * POW10[e];
    push_float(d, neg ? -v : v);
    return 1;
}

static int number(jd *d)
{
    const char *s = d->p, *p = s;
    num_text n = {0, 0, 0, 1, 0};
    int neg = *p == '-';
    if (neg)
        p++;
    if (!int_part(d, &p, &n) || !frac_part(d, &p, &n) || !exp_part(d, &p, &n))
        return 0;
    d->p = p;
    if (n.is_int && n.digits <= 19 && n.exp == 0) {
        if (push_exact_int(d, &n, neg))
            return 1;
    } else if (push_fast_float(d, &n, neg)) {
        return 1;
    }
    push_float(d, slow_number(d, s, (size_t)(p - s)));
    return 1;
}

/* ---------------------------------------------------------------- values */

static int value(jd *d, int path);

static int literal(jd *d, const char *word, size_t n)
{
    if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0)
        return fail(d, d->p, "expected a value");
    d->p += n;
    return 1;
}

static int enter(jd *d)
{
    if (d->depth >= UL_JSON_MAX_DEPTH)
        return fail(d, d->p, "nested too deeply (more than 200 levels)");
    d->depth++;
    /* 200 levels stay far below Lua's stack limit: failing here is memory */
    if (!lua_checkstack(d->L, STAGE + 8))
        ul_raise(d->L, "not enough memory (Lua stack while decoding JSON)");
    d->p++;
    skip_ws(d);
    return 1;
}

static void leave(jd *d, int *hint, int n, int max)
{
    d->depth--;
    if (d->depth < HINT_DEPTHS)
        hint[d->depth] = n < max ? n : max;
}

/* The role of a row's key (k, len: its text; slot: its cache slot, or -1). */
static int role_of(jd *d, const char *k, size_t len, int slot)
{
    if (slot >= 0) {
        int *r = &d->key[slot].role;
        if (*r == 0)
            *r = ROLE_KNOWN | d->rows->role(d->L, d->rows->ctx, k, len);
        return *r & ~ROLE_KNOWN;
    }
    return d->rows->role(d->L, d->rows->ctx, k, len); /* long or escaped */
}

/* A row's field value on top, for a key of role r: made final where that
 * is cheap (a whole float for an integer), else the row is marked DIRTY
 * for the hook to shape the long way. */
static void apply_role(jd *d, int r)
{
    lua_State *L = d->L;
    int t = lua_type(L, -1);
    if (r & UL_JSON_ROLE_THE_ID)
        d->had |= t == LUA_TSTRING ? UL_JSON_HAD_ID : DIRTY;
    if ((r & UL_JSON_ROLE_ID) && t != LUA_TSTRING)
        d->had |= DIRTY;
    if ((r & (UL_JSON_ROLE_INT | UL_JSON_ROLE_NUM)) && t != LUA_TNUMBER)
        d->had |= DIRTY;
    if ((r & UL_JSON_ROLE_NEST) && t == LUA_TTABLE)
        d->had |= UL_JSON_HAD_NEST;
    if (r & UL_JSON_ROLE_INT)
        ul_whole_to_int(L);
}

/* After a member of an object or array: skips to the next one (1), or past
 * the closing bracket (0); else fails with msg (-1). */
static int next_member(jd *d, char close, const char *msg)
{
    skip_ws(d);
    if (d->p < d->end && *d->p == ',') {
        d->p++;
        skip_ws(d);
        return 1;
    }
    if (d->p < d->end && *d->p == close) {
        d->p++;
        return 0;
    }
    fail(d, d->p, msg);
    return -1;
}

/* An object's field being decoded. */
typedef struct {
    const char *k; /* the key's text (its string, when escaped or long) */
    size_t klen;
    int role; /* UL_JSON_ROLE_* of a row's key (with a role hook), else 0 */
    int next; /* where its value is on the rows path, or -1: off it */
} field_t;

/* A key (pushed) and its ':' at d->p, the n-th of an object at path; what
 * it is for in a row, and whether it leads on along the rows path. */
static int object_key(jd *d, int path, int n, field_t *f)
{
    f->role = 0;
    f->next = -1;
    if (d->p >= d->end || *d->p != '"')
        return fail(d, d->p, n > 0 ? "expected a string key (a trailing comma?)"
                                   : "expected a string key");
    f->k = d->p + 1;
    if (!string(d, 1))
        return 0;
    f->klen = (size_t)(d->p - 1 - f->k);
    if (d->slot < 0 && d->rows != NULL)
        f->k = lua_tolstring(d->L, -1, &f->klen); /* escaped (or long): the key itself */
    if (path == -2 && d->rows->role != NULL)
        f->role = role_of(d, f->k, f->klen, d->slot);
    if (path >= 0 && path < d->rows->n) {
        const char *want = d->rows->path[path];
        if (strlen(want) == f->klen && memcmp(want, f->k, f->klen) == 0)
            f->next = path + 1;
    }
    skip_ws(d);
    if (d->p >= d->end || *d->p != ':')
        return fail(d, d->p, "expected ':' after a key");
    d->p++;
    skip_ws(d);
    return 1;
}

/* Field f's value (pushed; value()'s result), with what a row's key asks
 * around it: an id list decoded as sent, a time's sources told to the time
 * hook (a TPARENT's fields as they come, at the depth of its object). */
static int field_value(jd *d, const field_t *f)
{
    lua_State *L = d->L;
    int got;
    if (f->role & UL_JSON_ROLE_TPARENT) {
        d->rows->time(L, d->rows->ctx, f->k, f->klen, NULL, 0, 0);
        d->tp = f->k; /* the text, or the key on the stack: both outlive the value */
        d->tplen = f->klen;
        d->tp_depth = d->depth + 1;
    }
    if (f->role & UL_JSON_ROLE_ID_LIST) {
        /* an id list is rebuilt from what was sent, nulls and all */
        d->in_row = d->deep = 0;
        got = value(d, f->next);
        d->in_row = 1;
        d->deep = d->rows->deep_ints;
    } else {
        got = value(d, f->next);
    }
    if (!got)
        return 0;
    if (f->role & UL_JSON_ROLE_TPARENT)
        d->tp_depth = 0;
    if (d->tp_depth == d->depth && d->tp_depth > 0)
        d->rows->time(L, d->rows->ctx, d->tp, d->tplen, f->k, f->klen, got == 2);
    else if (f->role & UL_JSON_ROLE_TIME)
        d->rows->time(L, d->rows->ctx, NULL, 0, f->k, f->klen, got == 2);
    return got;
}

/* Sets the key and value on top into the table at t (absolute), and pops
 * them. A null inside a row makes the field absent (over a duplicate too);
 * elsewhere it is the null value. */
static void store_field(jd *d, int t, int role, int got)
{
    lua_State *L = d->L;
    if (got == 2 && d->in_row) {
        if (role & UL_JSON_ROLE_THE_ID)
            d->had |= DIRTY; /* an "id" given before is gone */
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_rawget(L, t);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 2);
        } else {
            lua_pop(L, 1);
            lua_pushnil(L);
            lua_rawset(L, t);
        }
    } else {
        if (role != 0)
            apply_role(d, role);
        lua_rawset(L, t);
    }
}

/* path: how many keys of the rows path lead here (-1: off it; -2: a row). */
static int object(jd *d, int path)
{
    lua_State *L = d->L;
    int n = 0, t, more, hint = d->depth < HINT_DEPTHS ? d->ohint[d->depth] : 0;
    if (!enter(d))
        return 0;
    if (path == -2 && d->rows != NULL)
        hint += d->rows->extra; /* a row: room for what the hook adds */
    lua_createtable(L, 0, hint);
    t = lua_gettop(L);
    if (d->p < d->end && *d->p == '}') {
        d->p++;
        leave(d, d->ohint, 0, OBJ_HINT_MAX);
        return 1;
    }
    do {
        field_t f;
        int got;
        if (!object_key(d, path, n, &f) || !(got = field_value(d, &f)))
            return 0;
        store_field(d, t, f.role, got);
        n++;
        more = next_member(d, '}', "expected ',' or '}' in an object");
        if (more < 0)
            return 0;
    } while (more);
    leave(d, d->ohint, n, OBJ_HINT_MAX);
    return 1;
}

/* Moves the n values above table t into t[first..first+n-1]. */
static void flush(lua_State *L, int t, int first, int n)
{
    int i;
    for (i = n - 1; i >= 0; i--)
        lua_rawseti(L, t, first + i);
}

/* A row (an element of the rows array, on top) has been decoded: its
 * flags for the hook, which sees it while it is still in cache, as long as
 * the hook wants rows. */
static void row_decoded(jd *d, int n)
{
    int had = d->had;
    d->in_row = d->deep = 0;
    if (d->rows->role != NULL)
        had |= UL_JSON_ROLES | (had & DIRTY ? 0 : UL_JSON_CLEAN);
    if (d->rows_on && d->rows->row(d->L, d->rows->ctx, lua_gettop(d->L), n, had & ~DIRTY) != 0)
        d->rows_on = 0;
}

static int array(jd *d, int path)
{
    lua_State *L = d->L;
    int n = 0, staged = 0, t = 0, rows, more;
    int hint = d->depth < HINT_DEPTHS ? d->ahint[d->depth] : 0;
    int base = lua_gettop(L);
    if (!enter(d))
        return 0;
    rows = d->rows != NULL && path == d->rows->n;
    if (rows) {
        /* a rows array begins: what an earlier one at the path (a repeated
         * key) found is forgotten */
        d->rows_on = 1;
        d->rows->row(L, d->rows->ctx, 0, 0, 0);
    }
    if (d->p < d->end && *d->p == ']') {
        d->p++;
        lua_createtable(L, 0, 0);
        leave(d, d->ahint, 0, ARR_HINT_MAX);
        if (rows)
            d->rows->row(L, d->rows->ctx, lua_gettop(L), -1, 0);
        return 1;
    }
    do {
        int got;
        if (d->p < d->end && *d->p == ']')
            return fail(d, d->p, "trailing comma in an array");
        if (rows) {
            d->had = 0; /* what this row holds, at any depth */
            d->in_row = 1;
            d->deep = d->rows->deep_ints;
        }
        if (!(got = value(d, rows ? -2 : -1)))
            return 0;
        if (got == 2 && d->in_row)
            d->had |= UL_JSON_HAD_NULL; /* an element: left for the hook */
        n++;
        if (rows)
            row_decoded(d, n);
        if (t) {
            lua_rawseti(L, t, n);
        } else if (++staged == STAGE) {
            /* larger than the stage: a table of the last size seen here */
            lua_createtable(L, hint > n ? hint : 2 * n, 0);
            lua_insert(L, base + 1);
            t = base + 1;
            flush(L, t, 1, staged);
        }
        more = next_member(d, ']', "expected ',' or ']' in an array");
        if (more < 0)
            return 0;
    } while (more);
    if (!t) {
        /* a small array: its exact size */
        lua_createtable(L, n, 0);
        lua_insert(L, base + 1);
        flush(L, base + 1, 1, n);
    }
    leave(d, d->ahint, n, ARR_HINT_MAX);
    if (rows) /* these are the rows the hook saw */
        d->rows->row(L, d->rows->ctx, lua_gettop(L), -1, 0);
    return 1;
}

static int value(jd *d, int path)
{
    if (d->p >= d->end)
        return fail(d, d->p, "expected a value");
    switch (*d->p) {
    case '{': return object(d, path);
    case '[': return array(d, path);
    case '"': return string(d, 0);
    case 't':
        if (!literal(d, "true", 4))
            return 0;
        lua_pushboolean(d->L, 1);
        return 1;
    case 'f':
        if (!literal(d, "false", 5))
            return 0;
        lua_pushboolean(d->L, 0);
        return 1;
    case 'n':
        if (!literal(d, "null", 4))
            return 0;
        lua_pushvalue(d->L, d->null_idx);
        return 2; /* null: the caller decides */
    default:
        if (*d->p == '-' || (*d->p >= '0' && *d->p <= '9'))
            return number(d);
        return fail(d, d->p, "expected a value");
    }
}

int ul_json_decode(lua_State *L, const char *s, size_t len, int null_idx,
                   const ul_json_rows *rows, size_t *off, const char **msg)
{
    jd d;
    int top = lua_gettop(L);
    memset(&d, 0, sizeof d);
    d.L = L;
    d.start = d.p = s;
    d.end = s + len;
    d.null_idx = null_idx < 0 && null_idx > LUA_REGISTRYINDEX ? top + null_idx + 1 : null_idx;
    d.rows = rows != NULL && rows->row != NULL ? rows : NULL;
    if (!lua_checkstack(L, STAGE + 8))
        ul_raise(L, "not enough memory (Lua stack while decoding JSON)");
    lua_createtable(L, KEY_SLOTS, 0);
    d.keys_idx = top + 1;
    skip_ws(&d);
    if (d.p >= d.end) {
        fail(&d, d.p, len == 0 ? "empty text" : "expected a value (the text is only white space)");
    } else if (value(&d, d.rows != NULL ? 0 : -1)) {
        skip_ws(&d);
        if (d.p == d.end) {
            lua_replace(L, top + 1); /* the value over the key cache */
            return 1;
        }
        fail(&d, d.p, "unexpected data after the value");
    }
    lua_settop(L, top);
    *off = (size_t)(d.err_at - s);
    *msg = d.err;
    return 0;
}
