/* Shared declarations of the userlist.core C module. */
#ifndef USERLIST_CORE_H
#define USERLIST_CORE_H

#include <lua.h>

/* The version is the rockspec's: make and LuaRocks define USERLIST_VERSION as
 * a bare number (-DUSERLIST_VERSION=1.2.3); USERLIST_VERSION_STRING is the
 * string literal "1.2.3". */
#ifndef USERLIST_VERSION
#error "USERLIST_VERSION is not defined: build with make or luarocks (the rockspec's version)"
#endif
#define UL_STRINGIZE_(x) #x
#define UL_STRINGIZE(x) UL_STRINGIZE_(x)
#define USERLIST_VERSION_STRING UL_STRINGIZE(USERLIST_VERSION)

/* Every function of the module has one upvalue: the state table below. It
 * holds per-lua_State data, so there are no mutable C globals. */
#define UL_STATE lua_upvalueindex(1)
#define UL_ST_ENCODE "encode" /* private cjson instance's encode (json.c decodes) */
#define UL_ST_ERRMT "errmt"   /* metatable of error values */

#define UL_SESSION_MT "userlist.core.session"

/* error.c: pushes a new error value {kind=, message=, status=?, method=?, url=?}.
 * Any occurrence of secret (may be NULL) in message is redacted. */
void ul_push_error(lua_State *L, const char *kind, long status,
                   const char *message, const char *method, const char *url,
                   const char *secret);

/* ------------------------------------------------ the raise-or-return rule
 * Every failure of the core is raised or returned by whose fault it is, and
 * ul_reject (error.c) is where that is done:
 *
 * UL_CODE, raised: the calling code is wrong, or the process cannot go on,
 *   and no retry can help. A wrong type anywhere (an argument, option,
 *   request field, query or header entry); a wrong value where only code
 *   writes one (an option, method, timeout, a json value cjson cannot
 *   encode); fields that contradict each other (an Authorization header
 *   beside api_key); a session misused (closed, busy, nothing started);
 *   memory or libcurl failing under it. A Lua error at once: a string
 *   naming what is wrong, as luaL_error gives it. A call's own arguments
 *   are checked by luaL_check* and luaL_argcheck, which raise the same way.
 *
 * UL_DATA, returned: the content of the request's own data, which a
 *   program passes on from outside and cannot vouch for: the url (a
 *   server's next link), its query, the api_key (the environment), header
 *   names and values (configuration). nil and an error value of kind
 *   "invalid", like every failure once the request is out (network, TLS,
 *   timeout, HTTP status, size, body: ul_fail, each with its own kind), so
 *   that a caller can report it, skip it or retry.
 *
 * A request's fields are checked in one order (request.c; a headers
 * table's entries in the order pairs() gives), so a request wrong both
 * ways fails by the first check it meets. core.json_decode is the one call
 * that raises a decode error value, as cjson.decode does. */
typedef enum {
    UL_CODE, /* raised */
    UL_DATA  /* returned: nil, err of kind "invalid" */
} ul_fault;

/* The rule applied to a failure described by fmt (lua_pushfstring's
 * formats). UL_CODE raises the message as luaL_error does and never
 * returns; UL_DATA pushes nil and an "invalid" error value for method and
 * url (either may be NULL) and returns 2, the count for the caller to
 * return. */
int ul_reject(lua_State *L, ul_fault fault, const char *method, const char *url,
              const char *fmt, ...);
#define ul_raise(L, ...) ul_reject((L), UL_CODE, NULL, NULL, __VA_ARGS__)

/* The returned side, for any kind: pushes nil and the error value
 * (ul_push_error's fields) and returns 2. */
int ul_fail(lua_State *L, const char *kind, long status, const char *message,
            const char *method, const char *url, const char *secret);

int ul_error_new(lua_State *L);
int ul_error_tostring(lua_State *L);

/* token.c: core.digest, core.token_seal, core.token_open. A token longer
 * than UL_TOKEN_MAX is not one of ours (a Usertour link is the longest
 * position, well under it); core.token_max, which the query's `resume`
 * key is bounded by. */
#define UL_TOKEN_MAX 16384
int ul_digest(lua_State *L);
int ul_token_seal(lua_State *L);
int ul_token_open(lua_State *L);

/* session.c */
int ul_session_new(lua_State *L);
void ul_push_defaults(lua_State *L); /* core.defaults: every option's default */
void ul_session_register(lua_State *L); /* expects the state table on top */

/* shape.c: core.shape(rows, spec [, naive_offset [, shift [, lenient]]]) */
int ul_shape(lua_State *L);
/* shape.c: core.parse_time, core.to_number, core.to_int, core.to_id */
int ul_parse_time(lua_State *L);
int ul_to_number(lua_State *L);
int ul_to_int(lua_State *L);
int ul_to_id(lua_State *L);
/* shape.c: decodes a page, shaping its rows as they are decoded (rows_idx:
 * {spec, naive_offset, shift, lenient}); pushes value, outcome and returns
 * 1, or nil, err and returns 0. */
int ul_decode_rows(lua_State *L, const char *data, size_t dlen, int rows_idx, const char *method,
                   const char *url, const char *key);
/* shape.c: which floats become integers, for json.c to apply as it decodes.
 * ul_whole_to_int: an ints field's number on top, whole and within int64;
 * ul_deep_whole: any number under deep_ints, whole and within 2^53. */
void ul_whole_to_int(lua_State *L);
int ul_deep_whole(lua_Number v);

#endif

