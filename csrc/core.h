/* Shared declarations of the userlist.core C module. */
#ifndef USERLIST_CORE_H
#define USERLIST_CORE_H

#include <lua.h>

#ifndef USERLIST_VERSION
#define USERLIST_VERSION "0.1.0"
#endif

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
int ul_error_new(lua_State *L);
int ul_error_tostring(lua_State *L);

/* session.c */
int ul_session_new(lua_State *L);
void ul_session_register(lua_State *L); /* expects the state table on top */

/* shape.c: core.shape(rows, spec [, naive_offset [, shift [, lenient]]]) */
int ul_shape(lua_State *L);
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

