/* Row shaping: a page of decoded rows turned into the common user shape in
 * one C pass (JSON nulls out, ids to strings, numeric strings to numbers,
 * ISO 8601 times to Lua time numbers, common aliases), then checked. Doing
 * this per row in Lua cost more than decoding the page; here it is a few
 * table operations per field. What a provider wants is a plain spec table
 * built by userlist.normalize (normalize.shape documents its fields). */
#include "core.h"
#include "body.h"
#include "compat.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define TIMES_MAX 4 /* time entries, */
#define TSRC_MAX 4  /* and sources of each, that the decoder can read */

/* Stack slots of one shape call: the spec's arrays (0 when absent). */
typedef struct {
    int null, ids, id_lists, ints, nums, copy, sums, times, picks, nested, numbers;
    int deep_ints;
    int lenient; /* unreadable fields warn instead of failing the row */
    int checked; /* numbers are the ints and nums: a row none failed in passes */
    int id_written; /* a copy, sum, time or pick writes the field "id" */
    int nest_always; /* nested paths are walked even in rows the decoder saw no start of */
    int bad;     /* slot: nil, or the set of this row's fields that did not convert */
    int warn;    /* slot: nil, or {field = message} of this call's first warnings */
    lua_Number naive_off, shift;
    int int_offsets; /* both offsets are whole: whole times stay integers */
    /* Times read by the decoder as it goes (times_fast): each entry's
     * sources, a top-level field a, or field b of the object at a (the
     * strings are the spec's), and what this row gave for each. */
    int times_fast, ntimes;
    struct {
        int n;
        struct {
            const char *a, *b;
            size_t alen, blen;
        } src[TSRC_MAX];
    } tent[TIMES_MAX];
    struct {
        int st; /* 0 absent, 1 read (secs, frac, zoned), 2 there but no time */
        int zoned;
        long long secs;
        lua_Number frac;
    } tval[TIMES_MAX][TSRC_MAX];
} shape_t;

/* ---------------------------------------------------------------- values */

/* Pushes tonumber(v) for a number or a string (nil otherwise). */
static void push_num(lua_State *L, int idx)
{
    int t = lua_type(L, idx);
    if (t == LUA_TNUMBER) {
        lua_pushvalue(L, idx);
    } else if (t == LUA_TSTRING) {
#if LUA_VERSION_NUM >= 503
        size_t len, r;
        const char *s = lua_tolstring(L, idx, &len);
        r = lua_stringtonumber(L, s); /* pushes the number when it converts */
        if (r != len + 1) { /* as tonumber: the whole string, no embedded NUL */
            if (r != 0)
                lua_pop(L, 1);
            lua_pushnil(L);
        }
#else
        if (lua_isnumber(L, idx))
            lua_pushnumber(L, lua_tonumber(L, idx));
        else
            lua_pushnil(L);
#endif
    } else {
        lua_pushnil(L);
    }
}

/* Replaces the number on top with an integer when it is whole and fits. */
void ul_whole_to_int(lua_State *L)
{
#if LUA_VERSION_NUM >= 503
    if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1)) {
        lua_Number n = lua_tonumber(L, -1);
        if (n == floor(n) && n >= -9223372036854775808.0 && n < 9223372036854775808.0) {
            lua_pop(L, 1);
            lua_pushinteger(L, (lua_Integer)n);
        }
    }
#else
    (void)L;
#endif
}

int ul_deep_whole(lua_Number v)
{
    return v == floor(v) && v > -9007199254740992.0 && v < 9007199254740992.0;
}

/* Pushes the id form of the value at idx: strings as they are, numbers
 * printed whole (ids past 2^53 have lost precision already), else nil. */
static void push_id(lua_State *L, int idx)
{
    int t = lua_type(L, idx);
    if (t == LUA_TSTRING) {
        lua_pushvalue(L, idx);
    } else if (t == LUA_TNUMBER) {
        char buf[32];
#if LUA_VERSION_NUM >= 503
        if (lua_isinteger(L, idx)) {
            snprintf(buf, sizeof buf, "%lld", (long long)lua_tointeger(L, idx));
            lua_pushstring(L, buf);
            return;
        }
#endif
        {
            lua_Number n = lua_tonumber(L, idx);
            if (n == floor(n) && n > -9223372036854775808.0 && n < 9223372036854775808.0) {
                snprintf(buf, sizeof buf, "%lld", (long long)n);
                lua_pushstring(L, buf);
            } else {
                lua_pushvalue(L, idx); /* tostring(n), as the Lua code did */
                lua_pushstring(L, lua_tostring(L, -1));
                lua_remove(L, -2);
            }
        }
    } else {
        lua_pushnil(L);
    }
}

/* core.to_number(v), core.to_int(v), core.to_id(v): the conversions every
 * row goes through, for the Lua code that converts one value (a count, an
 * error code, an id argument): one owner of each rule. */
int ul_to_number(lua_State *L)
{
    luaL_checkany(L, 1);
    push_num(L, 1);
    return 1;
}

int ul_to_int(lua_State *L)
{
    luaL_checkany(L, 1);
    push_num(L, 1);
    ul_whole_to_int(L);
    return 1;
}

int ul_to_id(lua_State *L)
{
    luaL_checkany(L, 1);
    push_id(L, 1);
    return 1;
}

/* ----------------------------------------------------------------- times */

static const int DIM[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

static long long fdiv(long long a, long long b) /* floor division */
{
    long long q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
static long long days_from_civil(long long y, int m, int d)
{
    long long era, yoe, doy, doe;
    int mp;
    if (m <= 2)
        y--;
    era = fdiv(y, 400);
    yoe = y - era * 400;
    mp = (m + 9) % 12;
    doy = (153 * mp + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int dig(const char *s, size_t i, size_t n)
{
    return i < n && s[i] >= '0' && s[i] <= '9';
}
#define D2(s, i) (((s)[i] - '0') * 10 + (s)[(i) + 1] - '0')

/* Why parse_iso refused a string (ISO_OK: it did not), as core.parse_time
 * says it. */
enum { ISO_OK, ISO_NOT_DATE, ISO_DATE_RANGE, ISO_BAD_TIME, ISO_BAD_ZONE, ISO_TIME_RANGE };
static const char *const ISO_WHY[] = {NULL, "not an ISO 8601 date", "date out of range",
                                      "bad time of day", "bad time zone",
                                      "time of day out of range"};

/* The one reader of times in userlist (Lua's userlist.time calls it through
 * core.parse_time): YYYY-MM-DD[(T| )HH:MM[:SS][(.|,)fff...][Z|z|(+|-)HH[:]MM]].
 * Returns ISO_OK and sets *secs, *frac (>= 0, 0 when none) and *zoned, or
 * says why it is not one. */
static int parse_iso(lua_State *L, const char *s, size_t n, long long *secs, lua_Number *frac,
                     int *zoned)
{
    int y, mo, d, h = 0, mi = 0, sec = 0;
    long long zone = 0;
    size_t i;
    *frac = 0;
    *zoned = 0;
    for (i = 0; i < 10; i++)
        if (i == 4 || i == 7 ? (i >= n || s[i] != '-') : !dig(s, i, n))
            return ISO_NOT_DATE;
    y = D2(s, 0) * 100 + D2(s, 2);
    mo = D2(s, 5);
    d = D2(s, 8);
    if (mo < 1 || mo > 12 || d < 1 || d > DIM[mo - 1])
        return ISO_DATE_RANGE;
    i = 10;
    if (i < n) {
        if ((s[i] != 'T' && s[i] != ' ') || !dig(s, 11, n) || !dig(s, 12, n) || !(13 < n) ||
            s[13] != ':' || !dig(s, 14, n) || !dig(s, 15, n))
            return ISO_BAD_TIME;
        h = D2(s, 11);
        mi = D2(s, 14);
        i = 16;
        if (i < n && s[i] == ':' && dig(s, 17, n) && dig(s, 18, n)) {
            sec = D2(s, 17);
            i = 19;
        }
        if (i < n && (s[i] == '.' || s[i] == ',') && dig(s, i + 1, n)) {
            size_t j = i + 1, k;
            double num = 0, den = 1;
            while (dig(s, j, n))
                j++;
            k = j - (i + 1);
            if (k <= 15) { /* exact integers: the division rounds as strtod would */
                size_t q;
                for (q = i + 1; q < j; q++) {
                    num = num * 10 + (s[q] - '0');
                    den *= 10;
                }
                *frac = num / den;
            } else { /* Lua's own conversion, as tonumber("0." .. f) */
                lua_pushliteral(L, "0.");
                lua_pushlstring(L, s + i + 1, k);
                lua_concat(L, 2);
                *frac = lua_tonumber(L, -1);
                lua_pop(L, 1);
            }
            i = j;
        }
        if (i + 1 == n && (s[i] == 'Z' || s[i] == 'z')) {
            *zoned = 1;
        } else if (i < n) {
            size_t j = i + 1;
            int zh, zm, neg = s[i] == '-';
            if ((s[i] != '+' && s[i] != '-') || !dig(s, j, n) || !dig(s, j + 1, n))
                return ISO_BAD_ZONE;
            zh = D2(s, j);
            j += 2;
            if (j < n && s[j] == ':')
                j++;
            if (!dig(s, j, n) || !dig(s, j + 1, n) || j + 2 != n)
                return ISO_BAD_ZONE;
            zm = D2(s, j);
            zone = (long long)(zh * 60 + zm) * 60 * (neg ? -1 : 1);
            *zoned = 1;
        }
        if (h > 23 || mi > 59 || sec > 60)
            return ISO_TIME_RANGE;
    }
    *secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - zone;
    return ISO_OK;
}

/* core.parse_time(s): seconds since the epoch (an integer unless there is a
 * fraction) and whether s had a zone (none: read as UTC); or nil and why. */
int ul_parse_time(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    long long secs;
    lua_Number frac;
    int zoned, why = parse_iso(L, s, n, &secs, &frac, &zoned);
    if (why != ISO_OK) {
        lua_pushnil(L);
        lua_pushstring(L, ISO_WHY[why]);
        return 2;
    }
    if (frac == 0)
        ul_pushint(L, secs);
    else
        lua_pushnumber(L, (lua_Number)secs + frac);
    lua_pushboolean(L, zoned);
    return 2;
}

static void push_parsed(lua_State *L, const shape_t *sh, long long secs, lua_Number frac,
                        int zoned);

/* Pushes the time number of the value at idx, or nil. */
static void push_time(lua_State *L, const shape_t *sh, int idx)
{
    long long secs;
    lua_Number frac;
    int zoned;
    size_t n;
    const char *s;
    if (lua_type(L, idx) != LUA_TSTRING) {
        lua_pushnil(L);
        return;
    }
    s = lua_tolstring(L, idx, &n);
    if (parse_iso(L, s, n, &secs, &frac, &zoned) != ISO_OK) {
        lua_pushnil(L);
        return;
    }
    push_parsed(L, sh, secs, frac, zoned);
}

/* Pushes the time number of what parse_iso read. */
static void push_parsed(lua_State *L, const shape_t *sh, long long secs, lua_Number frac,
                        int zoned)
{
    if (frac == 0 && sh->int_offsets) {
        long long t = secs + (long long)sh->shift - (zoned ? 0 : (long long)sh->naive_off);
        ul_pushint(L, t);
    } else {
        lua_Number t = (lua_Number)secs + frac;
        if (!zoned)
            t = t - sh->naive_off;
        lua_pushnumber(L, t + sh->shift);
    }
}

/* ------------------------------------------------------------------ rows */

/* JSON nulls out of table t (absolute index), recursively; with deep_ints,
 * whole floats within 2^53 become integers too (5.3+). At the top level,
 * fields named in the skip array are left (they are rebuilt anyway). */
static void strip(lua_State *L, int t, const shape_t *sh, int skip)
{
    luaL_checkstack(L, 4, "row nested too deep");
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
        int vt = lua_type(L, -1);
        if (lua_rawequal(L, -1, sh->null)) {
            lua_pushvalue(L, -2);
            lua_pushnil(L);
            lua_rawset(L, t);
        } else if (vt == LUA_TTABLE) {
            int skipped = 0;
            if (skip) {
                int i, n = (int)ul_rawlen(L, skip);
                for (i = 1; i <= n && !skipped; i++) {
                    lua_rawgeti(L, skip, i);
                    skipped = lua_rawequal(L, -1, -3);
                    lua_pop(L, 1);
                }
            }
            if (!skipped)
                strip(L, lua_gettop(L), sh, 0);
        }
#if LUA_VERSION_NUM >= 503
        else if (sh->deep_ints && vt == LUA_TNUMBER && !lua_isinteger(L, -1)) {
            lua_Number v = lua_tonumber(L, -1);
            if (ul_deep_whole(v)) {
                lua_pushvalue(L, -2);
                lua_pushinteger(L, (lua_Integer)v);
                lua_rawset(L, t);
            }
        }
#endif
        lua_pop(L, 1);
    }
}

/* Whether the value on top is already what conv makes of it (most are:
 * then the field is not written again). */
typedef int (*done_fn)(lua_State *L);
static int is_string(lua_State *L) { return lua_type(L, -1) == LUA_TSTRING; }
static int is_number(lua_State *L) { return lua_type(L, -1) == LUA_TNUMBER; }
static int is_int(lua_State *L)
{
#if LUA_VERSION_NUM >= 503
    return lua_isinteger(L, -1);
#else
    return lua_type(L, -1) == LUA_TNUMBER; /* no integers: numbers stay */
#endif
}

/* For each name of the array at `list`: u[name] = conv(u[name]). With sh,
 * a value that does not convert stays as sent (for the checks to report)
 * and the field is marked bad, so no common field is copied from it;
 * without, it becomes nil. */
static void mark_bad(lua_State *L, const shape_t *sh, int name)
{
    if (lua_isnil(L, sh->bad)) {
        lua_newtable(L);
        lua_replace(L, sh->bad);
    }
    lua_pushvalue(L, name);
    lua_pushboolean(L, 1);
    lua_rawset(L, sh->bad);
}

static void convert(lua_State *L, int u, int list, void (*conv)(lua_State *, int), done_fn done,
                    const shape_t *sh)
{
    int i, n = list ? (int)ul_rawlen(L, list) : 0;
    for (i = 1; i <= n; i++) {
        lua_rawgeti(L, list, i);
        lua_pushvalue(L, -1);
        lua_rawget(L, u);
        if (lua_isnil(L, -1) || done(L)) {
            lua_pop(L, 2);
            continue;
        }
        conv(L, lua_gettop(L));
        if (sh != NULL && lua_isnil(L, -1)) {
            mark_bad(L, sh, lua_gettop(L) - 2);
            lua_pop(L, 3);
            continue;
        }
        lua_remove(L, -2);
        lua_rawset(L, u);
    }
}

static void conv_int(lua_State *L, int idx)
{
    push_num(L, idx);
    ul_whole_to_int(L);
}

/* An id list with every element a string (numbers printed whole, others
 * dropped); one that is all strings already is left alone. */
static void id_lists(lua_State *L, int u, int list)
{
    int i, n = list ? (int)ul_rawlen(L, list) : 0;
    for (i = 1; i <= n; i++) {
        int a, j, len, all = 1;
        lua_rawgeti(L, list, i);
        lua_pushvalue(L, -1);
        lua_rawget(L, u);
        if (lua_type(L, -1) != LUA_TTABLE) {
            lua_pop(L, 2);
            continue;
        }
        a = lua_gettop(L);
        len = (int)ul_rawlen(L, a);
        for (j = 1; j <= len && all; j++) {
            lua_rawgeti(L, a, j);
            all = lua_type(L, -1) == LUA_TSTRING;
            lua_pop(L, 1);
        }
        if (!all) {
            int out = 0;
            lua_createtable(L, len, 0);
            for (j = 1; j <= len; j++) {
                lua_rawgeti(L, a, j);
                push_id(L, lua_gettop(L));
                if (lua_isnil(L, -1))
                    lua_pop(L, 1);
                else
                    lua_rawseti(L, -3, ++out);
                lua_pop(L, 1);
            }
            lua_pushvalue(L, a - 1);
            lua_insert(L, -2);
            lua_rawset(L, u);
        }
        lua_pop(L, 2);
    }
}

/* copy: arrays {dest, src1, src2, ...}: dest = the first non-nil source
 * that converted (a figure the row sent unreadable is no common field). */
static void copies(lua_State *L, int u, const shape_t *sh)
{
    int i, list = sh->copy, n = list ? (int)ul_rawlen(L, list) : 0;
    int bad = !lua_isnil(L, sh->bad);
    for (i = 1; i <= n; i++) {
        int j, m;
        lua_rawgeti(L, list, i);
        m = (int)ul_rawlen(L, -1);
        lua_rawgeti(L, -1, 1); /* dest */
        lua_pushnil(L);
        for (j = 2; j <= m && lua_isnil(L, -1); j++) {
            lua_pop(L, 1);
            lua_rawgeti(L, -2, j);
            if (bad) {
                lua_pushvalue(L, -1);
                lua_rawget(L, sh->bad);
                if (lua_toboolean(L, -1)) {
                    lua_pop(L, 2);
                    lua_pushnil(L);
                    continue;
                }
                lua_pop(L, 1);
            }
            lua_rawget(L, u);
        }
        if (lua_isnil(L, -1) && bad) {
            /* left as sent: nothing readable to copy */
            lua_pop(L, 3);
            continue;
        }
        lua_rawset(L, u);
        lua_pop(L, 1);
    }
}

/* sums: arrays {dest, a, b}: dest = a + b when both are numbers. */
static void sums(lua_State *L, int u, int list)
{
    int i, n = list ? (int)ul_rawlen(L, list) : 0;
    for (i = 1; i <= n; i++) {
        lua_rawgeti(L, list, i);
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        lua_rawget(L, u);
        lua_rawgeti(L, -3, 3);
        lua_rawget(L, u);
        if (lua_type(L, -1) == LUA_TNUMBER && lua_type(L, -2) == LUA_TNUMBER) {
#if LUA_VERSION_NUM >= 502
            lua_arith(L, LUA_OPADD); /* integer + integer stays an integer */
#else
            lua_Number b = lua_tonumber(L, -1), a = lua_tonumber(L, -2);
            lua_pop(L, 2);
            lua_pushnumber(L, a + b);
#endif
            lua_rawset(L, u);
        } else {
            lua_pop(L, 3);
        }
        lua_pop(L, 1);
    }
}

/* Pushes the first source of the times entry on top that the row has (a
 * field name, or a path {"attributes", "first_seen_at"} one table deep),
 * and returns its index in the entry (0, with nil pushed, when none). */
static int time_source(lua_State *L, int u)
{
    int j, m = (int)ul_rawlen(L, -1), entry = lua_gettop(L);
    for (j = 2; j <= m; j++) {
        lua_rawgeti(L, entry, j);
        if (lua_istable(L, -1)) {
            int path = lua_gettop(L);
            lua_rawgeti(L, path, 1);
            lua_rawget(L, u);
            if (lua_istable(L, -1)) {
                lua_rawgeti(L, path, 2);
                lua_rawget(L, -2);
                lua_remove(L, -2);
            } else {
                lua_pop(L, 1);
                lua_pushnil(L);
            }
            lua_remove(L, path);
        } else {
            lua_rawget(L, u);
        }
        if (!lua_isnil(L, -1))
            return j;
        lua_pop(L, 1);
    }
    lua_pushnil(L);
    return 0;
}

/* times: arrays {dest, src...}: dest = the time number of the first source
 * present, or nil. */
static void times(lua_State *L, int u, const shape_t *sh)
{
    int i, n = sh->times ? (int)ul_rawlen(L, sh->times) : 0;
    for (i = 1; i <= n; i++) {
        int j;
        lua_rawgeti(L, sh->times, i);
        j = time_source(L, u);
        lua_rawgeti(L, -2, 1);
        push_time(L, sh, lua_gettop(L) - 1);
        if (j > 0 && lua_isnil(L, -1))
            mark_bad(L, sh, lua_gettop(L) - 1); /* by its dest: the checks look */
        lua_rawset(L, u);
        lua_pop(L, 2);
    }
}

/* times, from what the decoder told of this row's sources (times_fast):
 * the same as times(), without looking anything up. Forgets the row. */
static void times_read(lua_State *L, int u, shape_t *sh)
{
    int e, j;
    for (e = 0; e < sh->ntimes; e++) {
        int got = -1;
        for (j = 0; j < sh->tent[e].n && got < 0; j++)
            if (sh->tval[e][j].st != 0)
                got = j;
        lua_rawgeti(L, sh->times, e + 1);
        lua_rawgeti(L, -1, 1);
        if (got >= 0 && sh->tval[e][got].st == 1) {
            push_parsed(L, sh, sh->tval[e][got].secs, sh->tval[e][got].frac,
                        sh->tval[e][got].zoned);
        } else {
            lua_pushnil(L);
            if (got >= 0)
                mark_bad(L, sh, lua_gettop(L) - 1); /* by its dest: the checks look */
        }
        lua_rawset(L, u);
        lua_pop(L, 1);
    }
    memset(sh->tval, 0, sizeof sh->tval);
}

/* picks: arrays {dest, field, subfield}: dest = u[field][subfield] when
 * that is a string; otherwise dest is left as it is. */
static void picks(lua_State *L, int u, int list)
{
    int i, n = list ? (int)ul_rawlen(L, list) : 0;
    for (i = 1; i <= n; i++) {
        lua_rawgeti(L, list, i);
        lua_rawgeti(L, -1, 2);
        lua_rawget(L, u);
        if (lua_type(L, -1) == LUA_TTABLE) {
            lua_rawgeti(L, -2, 3);
            lua_rawget(L, -2);
            if (lua_type(L, -1) == LUA_TSTRING) {
                lua_rawgeti(L, -3, 1);
                lua_insert(L, -2);
                lua_rawset(L, u);
            } else {
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 2);
    }
}

/* nested: paths {seg, ..., field}, "*" meaning each element of an array:
 * the field at the end of the path becomes an id (or nil). Only tables are
 * walked into. */
static void nested_path(lua_State *L, int t, int path, int at, int len)
{
    luaL_checkstack(L, 4, "row nested too deep");
    lua_rawgeti(L, path, at);
    if (at == len) {
        lua_pushvalue(L, -1);
        lua_rawget(L, t);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 2);
            return;
        }
        push_id(L, lua_gettop(L));
        lua_remove(L, -2);
        lua_rawset(L, t);
        return;
    }
    if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "*") == 0) {
        int j, n = (int)ul_rawlen(L, t);
        lua_pop(L, 1);
        for (j = 1; j <= n; j++) {
            lua_rawgeti(L, t, j);
            if (lua_type(L, -1) == LUA_TTABLE)
                nested_path(L, lua_gettop(L), path, at + 1, len);
            lua_pop(L, 1);
        }
        return;
    }
    lua_rawget(L, t);
    if (lua_type(L, -1) == LUA_TTABLE)
        nested_path(L, lua_gettop(L), path, at + 1, len);
    lua_pop(L, 1);
}

static void nested(lua_State *L, int u, int list)
{
    int i, n = list ? (int)ul_rawlen(L, list) : 0;
    for (i = 1; i <= n; i++) {
        lua_rawgeti(L, list, i);
        nested_path(L, u, lua_gettop(L), 1, (int)ul_rawlen(L, -1));
        lua_pop(L, 1);
    }
}

/* Leniently, an unreadable field is a warning: the message on top is kept
 * (as "[row] message") if it is the first for its field in this call, and
 * popped. Strictly, it stays on top for the caller to return. */
static int unreadable(lua_State *L, const shape_t *sh, int name, int row)
{
    if (!sh->lenient)
        return 1;
    if (lua_isnil(L, sh->warn)) {
        lua_newtable(L);
        lua_replace(L, sh->warn);
    }
    lua_pushvalue(L, name);
    lua_rawget(L, sh->warn);
    if (lua_isnil(L, -1)) {
        lua_pushvalue(L, name);
        lua_pushfstring(L, "[%d] %s", row, lua_tostring(L, -3));
        lua_rawset(L, sh->warn);
    }
    lua_pop(L, 2);
    return 0;
}

/* The checks on a mapped row: pushes a message and returns 1 if it fails. */
static int check_row(lua_State *L, int u, const shape_t *sh, int row, int has_id)
{
    int i, n;
    if (!has_id) {
        lua_pushliteral(L, "id");
        lua_rawget(L, u);
        if (lua_type(L, -1) != LUA_TSTRING) {
            lua_pop(L, 1);
            lua_pushliteral(L, "has no id");
            return 1;
        }
        lua_pop(L, 1);
    }
    if (sh->checked && lua_isnil(L, sh->bad))
        return 0; /* every figure converted and every time present was read */
    n = sh->numbers ? (int)ul_rawlen(L, sh->numbers) : 0;
    for (i = 1; i <= n; i++) {
        int t;
        lua_rawgeti(L, sh->numbers, i);
        lua_pushvalue(L, -1);
        lua_rawget(L, u);
        t = lua_type(L, -1);
        if (t != LUA_TNIL && t != LUA_TNUMBER) {
            lua_pushfstring(L, "field '%s' is not a number (a %s)", lua_tostring(L, -2),
                            lua_typename(L, t));
            if (unreadable(L, sh, lua_gettop(L) - 2, row))
                return 1;
        }
        lua_pop(L, 2);
    }
    n = sh->times ? (int)ul_rawlen(L, sh->times) : 0;
    for (i = 1; i <= n; i++) {
        int t, j;
        lua_rawgeti(L, sh->times, i);
        j = time_source(L, u);
        t = lua_type(L, -1);
        if (j > 0) {
            lua_rawgeti(L, -2, 1);
            lua_rawget(L, u);
            if (lua_isnil(L, -1)) {
                /* the source's name: a field, or a path's "a.b" */
                lua_rawgeti(L, -3, j);
                if (lua_istable(L, -1)) {
                    lua_getfield(L, -1, "name");
                    lua_remove(L, -2);
                }
                lua_replace(L, -2);
                lua_pushfstring(L, "field '%s' is not an ISO 8601 time (a %s)",
                                lua_tostring(L, -1), lua_typename(L, t));
                if (unreadable(L, sh, lua_gettop(L) - 1, row))
                    return 1;
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 2);
    }
    return 0;
}

static int field(lua_State *L, int spec, const char *name)
{
    lua_getfield(L, spec, name);
    if (lua_isnil(L, -1))
        return 0;
    luaL_argcheck(L, lua_istable(L, -1), 2, name);
    return lua_gettop(L);
}

/* Whether the string at idx is key. */
static int is_key(lua_State *L, int idx, const char *key, size_t len)
{
    size_t l;
    const char *s = lua_tolstring(L, idx, &l);
    return s != NULL && l == len && memcmp(s, key, len) == 0;
}

/* Whether an entry {dest, ...} of the array at list has dest `name`. */
static int writes(lua_State *L, int list, const char *name, size_t len)
{
    int i, n = list ? (int)ul_rawlen(L, list) : 0, found = 0;
    for (i = 1; i <= n && !found; i++) {
        lua_rawgeti(L, list, i);
        if (lua_istable(L, -1)) {
            lua_rawgeti(L, -1, 1);
            found = is_key(L, -1, name, len);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    return found;
}

/* Whether a copy, sum, time or pick writes the field `name`. */
static int written(lua_State *L, const shape_t *sh, const char *name, size_t len)
{
    return writes(L, sh->copy, name, len) || writes(L, sh->sums, name, len) ||
           writes(L, sh->times, name, len) || writes(L, sh->picks, name, len);
}

/* Whether a nested path starts with "*" or at a field the shape writes:
 * then the decoder cannot tell that a row has none of them. */
static int nest_always(lua_State *L, const shape_t *sh)
{
    int i, n = sh->nested ? (int)ul_rawlen(L, sh->nested) : 0, always = 0;
    for (i = 1; i <= n && !always; i++) {
        size_t len;
        const char *root;
        lua_rawgeti(L, sh->nested, i);
        lua_rawgeti(L, -1, 1);
        root = lua_tolstring(L, -1, &len);
        always = root == NULL || strcmp(root, "*") == 0 || written(L, sh, root, len);
        lua_pop(L, 2);
    }
    return always;
}

/* Reads the spec at spec_idx into sh, pushing its slots (the caller keeps
 * them on the stack while rows are shaped). */
static void shape_init(lua_State *L, shape_t *sh, int spec_idx, lua_Number naive_off,
                       lua_Number shift, int lenient)
{
    sh->naive_off = naive_off;
    sh->shift = shift;
    sh->int_offsets = naive_off == floor(naive_off) && shift == floor(shift) &&
                      fabs(naive_off) < 1e15 && fabs(shift) < 1e15;
    sh->lenient = lenient;
    sh->times_fast = sh->ntimes = 0;
    memset(sh->tval, 0, sizeof sh->tval);
    luaL_checkstack(L, 32, "core.shape"); /* the spec's slots and a row's work */
    lua_pushnil(L);
    sh->warn = lua_gettop(L);
    lua_pushnil(L);
    sh->bad = lua_gettop(L);
    lua_getfield(L, UL_STATE, "null");
    sh->null = lua_gettop(L);
    sh->ids = field(L, spec_idx, "ids");
    sh->id_lists = field(L, spec_idx, "id_lists");
    sh->ints = field(L, spec_idx, "ints");
    sh->nums = field(L, spec_idx, "nums");
    sh->copy = field(L, spec_idx, "copy");
    sh->sums = field(L, spec_idx, "sums");
    sh->times = field(L, spec_idx, "times");
    sh->picks = field(L, spec_idx, "picks");
    sh->nested = field(L, spec_idx, "nested");
    sh->numbers = field(L, spec_idx, "numbers");
    sh->id_written = written(L, sh, "id", 2);
    sh->nest_always = nest_always(L, sh);
    lua_getfield(L, spec_idx, "deep_ints");
    sh->deep_ints = lua_toboolean(L, -1);
    lua_getfield(L, spec_idx, "numbers_converted");
    sh->checked = lua_toboolean(L, -1);
    lua_pop(L, 2);
}

/* Shapes the row at absolute index u (the i-th). `had`: UL_JSON_HAD_* as
 * the decoder saw the row (-1: unknown), so that a row without nulls or
 * floats is not walked for them. Returns 0, the stack as it was; or 1 with
 * what is wrong pushed. */
static int shape_row(lua_State *L, shape_t *sh, int u, int i, int had)
{
    int top = lua_gettop(L);
    int decoded = had >= 0 && (had & UL_JSON_ROLES); /* the decoder saw its keys */
    int clean = decoded && (had & UL_JSON_CLEAN);      /* ids and figures final */
    if (lua_type(L, u) != LUA_TTABLE) {
        lua_pushliteral(L, "is not an object");
        return 1;
    }
    if (!lua_isnil(L, sh->bad)) {
        lua_pushnil(L);
        lua_replace(L, sh->bad);
    }
    if ((had & UL_JSON_HAD_NULL) || (sh->deep_ints && (had & UL_JSON_HAD_FLOAT)))
        strip(L, u, sh, sh->id_lists);
    if (!clean)
        convert(L, u, sh->ids, push_id, is_string, NULL);
    id_lists(L, u, sh->id_lists);
    if (!clean) {
        convert(L, u, sh->ints, conv_int, is_int, sh);
        convert(L, u, sh->nums, push_num, is_number, sh);
    }
    copies(L, u, sh);
    sums(L, u, sh->sums);
    if (sh->times_fast && decoded)
        times_read(L, u, sh);
    else
        times(L, u, sh);
    picks(L, u, sh->picks);
    if (!decoded || (had & UL_JSON_HAD_NEST) || sh->nest_always)
        nested(L, u, sh->nested);
    if (check_row(L, u, sh, i, clean && (had & UL_JSON_HAD_ID) && !sh->id_written))
        return 1;
    lua_settop(L, top);
    return 0;
}

/* core.shape(rows, spec [, naive_offset [, shift [, lenient]]]) -> nothing,
 * or the index of the first row that cannot be read and what is wrong with
 * it. Rows are changed in place. naive_offset: seconds east of UTC that
 * zone-less times are in; shift: seconds added to every time. With lenient,
 * a number or time field that cannot be read only gives no common field:
 * the third result is then {field = "[row] message"}, the first of each. */
int ul_shape(lua_State *L)
{
    shape_t sh;
    int i, n;
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 5);
    shape_init(L, &sh, 2, luaL_optnumber(L, 3, 0), luaL_optnumber(L, 4, 0), lua_toboolean(L, 5));
    n = (int)ul_rawlen(L, 1);
    for (i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        if (shape_row(L, &sh, lua_gettop(L), i, -1)) {
            ul_pushint(L, i);
            lua_insert(L, -2);
            return 2;
        }
        lua_pop(L, 1);
    }
    if (lua_isnil(L, sh.warn))
        return 0;
    lua_pushnil(L);
    lua_pushnil(L);
    lua_pushvalue(L, sh.warn);
    return 3;
}

/* ------------------------------------------------- decoding a page's rows */

typedef struct {
    shape_t sh;
    int outcome; /* stack slot: {bad = i, message =} for the first row that fails */
} rows_ctx;

/* The decoder's question: what a row's key is for (ids, ints, nums). */
static int in_list(lua_State *L, int list, const char *key, size_t len)
{
    int i, n = list ? (int)ul_rawlen(L, list) : 0, found = 0;
    for (i = 1; i <= n && !found; i++) {
        lua_rawgeti(L, list, i);
        found = is_key(L, -1, key, len);
        lua_pop(L, 1);
    }
    return found;
}

static int nest_root(lua_State *L, int nested, const char *key, size_t len);

static int same(const char *a, size_t alen, const char *b, size_t blen)
{
    return a != NULL && b != NULL && alen == blen && memcmp(a, b, alen) == 0;
}

/* Whether field `key` has a part in the shape other than being a time's
 * source: then the decoder cannot read the times alone. */
static int other_part(lua_State *L, const shape_t *sh, const char *key, size_t len)
{
    /* written: a time's dest too, which the next entry would see */
    return in_list(L, sh->ids, key, len) || in_list(L, sh->ints, key, len) ||
           in_list(L, sh->nums, key, len) || in_list(L, sh->id_lists, key, len) ||
           nest_root(L, sh->nested, key, len) || written(L, sh, key, len);
}

/* Reads the spec's times into sh->tent, for the decoder to read them as
 * it goes (sh->times_fast), when they are simple enough: at most
 * TIMES_MAX entries of TSRC_MAX sources, each source a field or a field of
 * a field, and no source with another part in the shape. */
static void times_compile(lua_State *L, shape_t *sh)
{
    int e, j, n = sh->times ? (int)ul_rawlen(L, sh->times) : 0, ok = n > 0 && n <= TIMES_MAX;
    for (e = 0; e < n && ok; e++) {
        int m;
        lua_rawgeti(L, sh->times, e + 1);
        m = lua_istable(L, -1) ? (int)ul_rawlen(L, -1) - 1 : -1;
        ok = m >= 0 && m <= TSRC_MAX;
        sh->tent[e].n = ok ? m : 0;
        for (j = 0; j < m && ok; j++) {
            lua_rawgeti(L, -1, j + 2);
            sh->tent[e].src[j].b = NULL;
            sh->tent[e].src[j].blen = 0;
            if (lua_type(L, -1) == LUA_TSTRING) {
                sh->tent[e].src[j].a = lua_tolstring(L, -1, &sh->tent[e].src[j].alen);
            } else if (lua_istable(L, -1)) {
                lua_rawgeti(L, -1, 1);
                lua_rawgeti(L, -2, 2);
                /* strings of the spec, which stays on the stack: they outlive this */
                sh->tent[e].src[j].a = lua_type(L, -2) == LUA_TSTRING
                                           ? lua_tolstring(L, -2, &sh->tent[e].src[j].alen) : NULL;
                sh->tent[e].src[j].b = lua_type(L, -1) == LUA_TSTRING
                                           ? lua_tolstring(L, -1, &sh->tent[e].src[j].blen) : NULL;
                ok = sh->tent[e].src[j].a != NULL && sh->tent[e].src[j].b != NULL;
                lua_pop(L, 2);
            } else {
                ok = 0;
            }
            ok = ok && !other_part(L, sh, sh->tent[e].src[j].a, sh->tent[e].src[j].alen);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    sh->ntimes = ok ? n : 0;
    sh->times_fast = ok;
}

/* The decoder telling what a row gave for a time's source. */
static void time_hook(lua_State *L, void *ctx, const char *parent, size_t plen, const char *key,
                      size_t klen, int null)
{
    shape_t *sh = &((rows_ctx *)ctx)->sh;
    int e, j, read = 0, st = 0, zoned = 0;
    long long secs = 0;
    lua_Number frac = 0;
    for (e = 0; e < sh->ntimes; e++) {
        for (j = 0; j < sh->tent[e].n; j++) {
            const char *a = sh->tent[e].src[j].a, *b = sh->tent[e].src[j].b;
            size_t alen = sh->tent[e].src[j].alen, blen = sh->tent[e].src[j].blen;
            if (key == NULL) { /* parent's value begins: its fields are not there yet */
                if (b != NULL && same(a, alen, parent, plen))
                    sh->tval[e][j].st = 0;
                continue;
            }
            if (parent != NULL ? !(b != NULL && same(a, alen, parent, plen) &&
                                   same(b, blen, key, klen))
                               : !(b == NULL && same(a, alen, key, klen)))
                continue;
            if (!null && !read) {
                read = 1;
                st = 2;
                if (lua_type(L, -1) == LUA_TSTRING) {
                    size_t n;
                    const char *s = lua_tolstring(L, -1, &n);
                    if (parse_iso(L, s, n, &secs, &frac, &zoned) == ISO_OK)
                        st = 1;
                }
            }
            sh->tval[e][j].st = null ? 0 : st;
            sh->tval[e][j].secs = secs;
            sh->tval[e][j].frac = frac;
            sh->tval[e][j].zoned = zoned;
        }
    }
}

/* Whether one of the nested paths starts at key. */
static int nest_root(lua_State *L, int nested, const char *key, size_t len)
{
    int i, n = nested ? (int)ul_rawlen(L, nested) : 0, found = 0;
    for (i = 1; i <= n && !found; i++) {
        lua_rawgeti(L, nested, i);
        lua_rawgeti(L, -1, 1);
        found = is_key(L, -1, key, len);
        lua_pop(L, 2);
    }
    return found;
}

static int role_hook(lua_State *L, void *ctx, const char *key, size_t len)
{
    const shape_t *sh = &((rows_ctx *)ctx)->sh;
    int r = 0;
    if (len == 2 && memcmp(key, "id", 2) == 0)
        r |= UL_JSON_ROLE_THE_ID;
    if (in_list(L, sh->ids, key, len))
        r |= UL_JSON_ROLE_ID;
    if (in_list(L, sh->ints, key, len))
        r |= UL_JSON_ROLE_INT;
    if (in_list(L, sh->nums, key, len))
        r |= UL_JSON_ROLE_NUM;
    if (in_list(L, sh->id_lists, key, len))
        r |= UL_JSON_ROLE_ID_LIST;
    if (nest_root(L, sh->nested, key, len))
        r |= UL_JSON_ROLE_NEST;
    if (sh->times_fast) {
        int e, j;
        for (e = 0; e < sh->ntimes; e++)
            for (j = 0; j < sh->tent[e].n; j++)
                if (same(sh->tent[e].src[j].a, sh->tent[e].src[j].alen, key, len))
                    r |= sh->tent[e].src[j].b != NULL ? UL_JSON_ROLE_TPARENT : UL_JSON_ROLE_TIME;
    }
    return r;
}

/* The decoder's hook: each row shaped as soon as it is decoded. The first
 * row that cannot be read ends the shaping (the rest is only decoded). */
static int shape_hook(lua_State *L, void *ctx, int idx, int i, int had)
{
    rows_ctx *c = (rows_ctx *)ctx;
    int top = lua_gettop(L);
    if (i == 0) { /* a rows array begins: only the last one counts */
        memset(c->sh.tval, 0, sizeof c->sh.tval);
        lua_pushnil(L);
        lua_setfield(L, c->outcome, "bad");
        lua_pushnil(L);
        lua_setfield(L, c->outcome, "message");
        lua_pushnil(L);
        lua_replace(L, c->sh.warn);
        return 0;
    }
    if (i < 0) { /* the array these rows are in: the Lua side knows them by it */
        lua_pushvalue(L, idx);
        lua_setfield(L, c->outcome, "rows");
        return 0;
    }
    if (!shape_row(L, &c->sh, idx, i, had))
        return 0;
    lua_setfield(L, c->outcome, "message");
    ul_pushint(L, i);
    lua_setfield(L, c->outcome, "bad");
    lua_settop(L, top);
    return 1;
}

/* Decodes a page whose rows array is at the dotted path `list` of spec
 * (rows = {spec, naive_offset, shift, lenient} at rows_idx), shaping each
 * row as it is decoded. Pushes two values: the value and the outcome
 * {rows =, bad =, message =, unread =} and returns 1; or nil and the
 * decode error and returns 0. */
int ul_decode_rows(lua_State *L, const char *data, size_t dlen, int rows_idx, const char *method,
                   const char *url, const char *key)
{
    rows_ctx c;
    ul_json_rows jr;
    char path[128], *seg;
    const char *list;
    size_t len;
    int spec, base = lua_gettop(L);
    rows_idx = rows_idx < 0 ? base + rows_idx + 1 : rows_idx;
    lua_rawgeti(L, rows_idx, 1);
    spec = lua_gettop(L);
    luaL_argcheck(L, lua_istable(L, spec), 1, "rows needs a shape spec");
    lua_rawgeti(L, rows_idx, 2);
    lua_rawgeti(L, rows_idx, 3);
    lua_rawgeti(L, rows_idx, 4);
    shape_init(L, &c.sh, spec, lua_tonumber(L, spec + 1), lua_tonumber(L, spec + 2),
               lua_toboolean(L, spec + 3));
    lua_newtable(L);
    c.outcome = lua_gettop(L);
    lua_getfield(L, spec, "list");
    list = lua_tolstring(L, -1, &len);
    luaL_argcheck(L, list != NULL && len > 0 && len < sizeof path, 1, "the spec's list");
    memcpy(path, list, len + 1);
    lua_pop(L, 1);
    /* "data.users" -> {"data", "users"} */
    jr.n = 0;
    for (seg = path; seg != NULL && jr.n < 4;) {
        char *dot = strchr(seg, '.');
        if (dot != NULL)
            *dot = '\0';
        jr.path[jr.n++] = seg;
        seg = dot != NULL ? dot + 1 : NULL;
    }
    luaL_argcheck(L, seg == NULL, 1, "the spec's list has more than 4 keys");
    times_compile(L, &c.sh);
    jr.row = shape_hook;
    jr.role = role_hook;
    jr.time = time_hook;
    jr.deep_ints = c.sh.deep_ints;
    jr.ctx = &c;
    /* room in each row for the fields the shape adds */
    jr.extra = 0;
    if (c.sh.copy)
        jr.extra += (int)ul_rawlen(L, c.sh.copy);
    if (c.sh.sums)
        jr.extra += (int)ul_rawlen(L, c.sh.sums);
    if (c.sh.times)
        jr.extra += (int)ul_rawlen(L, c.sh.times);
    if (c.sh.picks)
        jr.extra += (int)ul_rawlen(L, c.sh.picks);
    if (ul_decode_body(L, data, dlen, &jr, method, url, key) == 2) {
        lua_replace(L, base + 2);
        lua_replace(L, base + 1);
        lua_settop(L, base + 2);
        return 0;
    }
    if (!lua_isnil(L, c.sh.warn)) {
        lua_pushvalue(L, c.sh.warn);
        lua_setfield(L, c.outcome, "unread");
    }
    lua_pushvalue(L, c.outcome);
    lua_replace(L, base + 2);
    lua_replace(L, base + 1);
    lua_settop(L, base + 2);
    return 1;
}
