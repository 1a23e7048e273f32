/* Body handling shared by session.c and the fuzzers (see body.c). */
#ifndef USERLIST_BODY_H
#define USERLIST_BODY_H

#include "json.h"

#include <lua.h>
#include <stddef.h>

/* Pushes a printable excerpt (at most 48 bytes) of body around offset off. */
void ul_push_excerpt(lua_State *L, const char *body, size_t len, size_t off);

/* Pushes data with every occurrence of key (may be NULL) replaced by
 * "[REDACTED]", and returns the pushed string and its length. */
/* core.redact(s, key) */
int ul_redact(lua_State *L);
const char *ul_push_redacted(lua_State *L, const char *data, size_t dlen, const char *key,
                             size_t *len);

/* Decodes data (json.c; a function whose upvalue 1 is the module state
 * must be running). Leaves the value and returns 1, or leaves nil plus a
 * decode error (offset, excerpt; key redacted) and returns 2. rows, if not
 * NULL, shapes a page's rows as they are decoded. */
int ul_decode_body(lua_State *L, const char *data, size_t dlen, const ul_json_rows *rows,
                   const char *method, const char *url, const char *key);

/* The same without the error value: 1 and the value, or 0 with *off and
 * *msg set and nothing pushed. */
int ul_json_value(lua_State *L, const char *data, size_t dlen, const ul_json_rows *rows,
                  size_t *off, const char **msg);

/* Pushes nil and the decode error for msg at byte off of data; returns 2. */
int ul_push_decode_error(lua_State *L, const char *data, size_t dlen, size_t off,
                         const char *msg, const char *method, const char *url, const char *key);

#endif
