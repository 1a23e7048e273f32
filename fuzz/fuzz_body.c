/* libFuzzer target: what the core does with a response body: decoding
 * (csrc/json.c: depth limit, offsets, excerpts), redaction of the key from
 * the raw body, the row pass (core.shape) over whatever decodes, and the one
 * pass that shapes a page's rows ({"rows": [...]}) as it decodes them, with
 * a spec that uses every kind of field; the one pass must give exactly what
 * decoding and then the row pass give. The first input byte picks the key
 * length. */
#define _GNU_SOURCE /* memmem */
#include "../csrc/body.h"
#include "../csrc/core.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int luaopen_userlist_core(lua_State *L);

static lua_State *L;

/* fuzz_same(value, outcome, text, naive, shift, lenient): whether the one
 * pass agrees with core.json_decode and then core.shape, when its rows are
 * the page's (a key repeated on the path leaves them to the row pass). */
static const char SAME[] =
    "local core = package.loaded['userlist.core']\n"
    "local mtype = math.type or function() return nil end\n"
    "local function same(a, b)\n"
    "  if type(a) ~= type(b) or mtype(a) ~= mtype(b) then return false end\n"
    "  if type(a) ~= 'table' then return a == b end\n"
    "  for k, v in pairs(a) do if not same(v, b[k]) then return false end end\n"
    "  for k in pairs(b) do if a[k] == nil then return false end end\n"
    "  return true\n"
    "end\n"
    "function fuzz_same(value, outcome, text, naive, shift, lenient)\n"
    "  if type(value) ~= 'table' or outcome.rows == nil or value.rows ~= outcome.rows then\n"
    "    return true\n"
    "  end\n"
    "  local plain = core.json_decode(text)\n"
    "  local i, message, unread = core.shape(plain.rows, fuzz_spec, naive, shift, lenient)\n"
    "  if i ~= outcome.bad or message ~= outcome.message then return false end\n"
    "  return i ~= nil or (same(value.rows, plain.rows) and same(unread or {}, outcome.unread or {}))\n"
    "end\n";

/* Keys that cannot be formed by the replacement text or by the excerpt's
 * '.' for unprintable bytes, so finding one afterwards is a real leak. */
static int checkable(const char *key, size_t klen)
{
    size_t i;
    if (klen == 0)
        return 0;
    for (i = 0; i < klen; i++)
        if (!((key[i] >= 'a' && key[i] <= 'z') || (key[i] >= '0' && key[i] <= '9') ||
              key[i] == '-' || key[i] == '_'))
            return 0;
    return 1;
}

/* Runs as a closure over the module's state table, as session.c's code does. */
static int entry(lua_State *l)
{
    size_t len, klen, rlen;
    const char *in = luaL_checklstring(l, 1, &len);
    const char *key = luaL_checklstring(l, 2, &klen);
    int check = checkable(key, klen);
    const char *red;
    if (memchr(key, '\0', klen) != NULL)
        klen = 0; /* the core refuses such keys before any request */
    red = ul_push_redacted(l, in, len, klen ? key : NULL, &rlen);
    if (check && memmem(red, rlen, key, klen) != NULL)
        abort(); /* the key survived redaction */
    ul_push_excerpt(l, red, rlen, rlen / 2);
    if (ul_decode_body(l, in, len, NULL, "GET", "http://127.0.0.1/x", klen ? key : NULL) == 1) {
        /* rows: the value if it is an array, else a page of that one value */
        if (lua_istable(l, -1)) {
            lua_rawgeti(l, -1, 1);
            if (lua_isnil(l, -1)) {
                lua_pop(l, 1);
                lua_createtable(l, 1, 0);
                lua_pushvalue(l, -2);
                lua_rawseti(l, -2, 1);
            } else {
                lua_pop(l, 1);
                lua_pushvalue(l, -1);
            }
            lua_getglobal(l, "fuzz_shape");
            lua_insert(l, -2);
            lua_getglobal(l, "fuzz_spec");
            lua_pushinteger(l, (lua_Integer)(len % 7) * 3600 - 7200);
            lua_pushinteger(l, (lua_Integer)(len % 3) * 60);
            lua_call(l, 4, 0);
        }
    } else {
        const char *excerpt;
        lua_getfield(l, -1, "excerpt"); /* absent for an empty body */
        excerpt = lua_tostring(l, -1);
        if (check && excerpt != NULL && strstr(excerpt, key) != NULL)
            abort(); /* the key is in an error excerpt */
    }
    /* the one pass: {spec, naive_offset, shift, lenient} */
    lua_createtable(l, 4, 0);
    lua_getglobal(l, "fuzz_spec");
    lua_rawseti(l, -2, 1);
    lua_pushinteger(l, (lua_Integer)(len % 5) * 3600 - 7200);
    lua_rawseti(l, -2, 2);
    lua_pushinteger(l, (lua_Integer)(len % 3) * 60);
    lua_rawseti(l, -2, 3);
    lua_pushboolean(l, (int)(len % 2));
    lua_rawseti(l, -2, 4);
    if (len == 0)
        return 0;
    if (ul_decode_rows(l, in, len, lua_gettop(l), "GET", "http://127.0.0.1/x",
                       klen ? key : NULL) == 0) {
        const char *excerpt;
        lua_getfield(l, -1, "excerpt"); /* absent for an empty body */
        excerpt = lua_tostring(l, -1);
        if (check && excerpt != NULL && strstr(excerpt, key) != NULL)
            abort(); /* the key is in an error excerpt */
    } else {
        lua_getglobal(l, "fuzz_same");
        lua_pushvalue(l, -3); /* the value */
        lua_pushvalue(l, -3); /* the outcome */
        lua_pushlstring(l, in, len);
        lua_pushinteger(l, (lua_Integer)(len % 5) * 3600 - 7200);
        lua_pushinteger(l, (lua_Integer)(len % 3) * 60);
        lua_pushboolean(l, (int)(len % 2));
        lua_call(l, 6, 1);
        if (!lua_toboolean(l, -1))
            abort(); /* the one pass and the two passes disagree */
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t klen;
    if (L == NULL) {
        L = luaL_newstate();
        luaL_openlibs(L);
        luaL_requiref(L, "userlist.core", luaopen_userlist_core, 0);
        lua_getfield(L, -1, "json_decode");
        lua_getupvalue(L, -1, 1); /* the module state table */
        lua_pushcclosure(L, entry, 1);
        lua_setglobal(L, "fuzz_entry");
        lua_getfield(L, 1, "shape");
        lua_setglobal(L, "fuzz_shape");
        if (luaL_dostring(L, "return { list = 'rows', deep_ints = true, ids = { 'id', 'u' },"
                             " id_lists = { 'l' }, ints = { 'n', 'm' }, nums = { 'c' },"
                             " copy = { { 'x', 'u', 'id' }, { 'y', 'n' } }, sums = { { 's', 'n', 'm' } },"
                             " times = { { 'ts', 't' }, { 'te', 'e' } }, picks = { { 'p', 'a', 'e' } },"
                             " nested = { { 'a', '*', 'id' }, { 'a', 'b', 'id' }, { '*', '*' } },"
                             " numbers = { 'n', 'm', 'c' } }") != 0)
            abort();
        lua_setglobal(L, "fuzz_spec");
        if (luaL_dostring(L, SAME) != 0)
            abort();
        lua_settop(L, 0);
    }
    if (size == 0)
        return 0;
    klen = data[0] % 8; /* short keys make matches likely */
    if (klen > size - 1)
        klen = size - 1;
    lua_getglobal(L, "fuzz_entry");
    lua_pushlstring(L, (const char *)data + 1 + klen, size - 1 - klen);
    lua_pushlstring(L, (const char *)data + 1, klen);
    if (lua_pcall(L, 2, 0, 0) != 0)
        lua_pop(L, 1); /* a Lua error (out of memory) is not a crash */
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
