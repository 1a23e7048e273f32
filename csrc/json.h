/* A strict (RFC 8259) JSON decoder that builds Lua values straight from the
 * text: every response body is decoded here (lua-cjson only encodes). */
#ifndef USERLIST_JSON_H
#define USERLIST_JSON_H

#include <lua.h>
#include <stddef.h>

/* Optional: the rows array of a page, at a path of object keys from the top
 * (e.g. {"data", "users"}). `row` is called on each element of that array
 * as soon as it is decoded (the table at absolute index idx, 1-based i,
 * `had` the UL_JSON_HAD_* flags of what it held),
 * while it is still in cache; it returns 0 to go on, nonzero to stop
 * calling it (the decoding goes on). `extra` fields are room left in each
 * row table for what the hook adds. */
/* What a row held, for the hook: a null or a non-integer number anywhere. */
#define UL_JSON_HAD_NULL 1
#define UL_JSON_HAD_FLOAT 2

typedef struct {
    const char *path[4];
    int n;
    int (*row)(lua_State *L, void *ctx, int idx, int i, int had);
    void *ctx;
    int extra;
} ul_json_rows;

#define UL_JSON_MAX_DEPTH 200

/* Decodes len bytes at s into one value on top of the stack; JSON null is
 * the value at stack index null_idx. Returns 1; or 0 with nothing pushed,
 * *off the byte offset of the fault and *msg what is wrong (static text).
 * Raises only on memory errors. rows may be NULL. */
int ul_json_decode(lua_State *L, const char *s, size_t len, int null_idx,
                   const ul_json_rows *rows, size_t *off, const char **msg);

#endif
