/* Body handling shared by session.c and the fuzzers (see body.c). */
#ifndef USERLIST_BODY_H
#define USERLIST_BODY_H

#include <lua.h>
#include <stddef.h>

/* Pushes a printable excerpt (at most 48 bytes) of body around offset off. */
void ul_push_excerpt(lua_State *L, const char *body, size_t len, size_t off);

/* Pushes data with every occurrence of key (may be NULL) replaced by
 * "[REDACTED]", and returns the pushed string and its length. */
const char *ul_push_redacted(lua_State *L, const char *data, size_t dlen, const char *key,
                             size_t *len);

/* Decodes data with the private cjson instance (a function whose upvalue 1
 * is the module state must be running). Leaves the value and returns 1, or
 * leaves nil plus a decode error (offset, excerpt; key redacted) and returns 2. */
int ul_decode_body(lua_State *L, const char *data, size_t dlen, const char *method,
                   const char *url, const char *key);

#endif
