/* A strict (RFC 8259) JSON decoder that builds Lua values straight from the
 * text: every response body is decoded here (lua-cjson only encodes). */
#ifndef USERLIST_JSON_H
#define USERLIST_JSON_H

#include <lua.h>
#include <stddef.h>

/* Optional: the rows array of a page, at a path of object keys from the top
 * (e.g. {"data", "users"}). `row` is called on each element of that array
 * as soon as it is decoded (the table at absolute index idx, 1-based i,
 * `had` the UL_JSON_* flags of what it held), while it is still in cache;
 * it returns 0 to go on, nonzero to stop calling it for this array (the
 * decoding goes on). It is also called with i 0 when such an array begins
 * and with i -1 and the array at idx when it ends (a key repeated on the
 * path gives several). `extra` fields are room left in each row table for
 * what the hook adds.
 *
 * Inside a row the decoder does the cheap part of shaping as it goes: an
 * object field that is null is not set (JSON null absent), and with
 * `deep_ints` (5.3+) a whole number within 2^53 becomes an integer. `role`,
 * when set, names what a row's own key is for (UL_JSON_ROLE_*; asked once
 * per key and page): an INT field's whole float becomes an integer, and the
 * row is flagged UL_JSON_CLEAN when every ID, INT and NUM field it has was
 * already in its final form, so the hook need not look at them again. */
/* What a row held: a null array element, or a non-integer number, anywhere */
#define UL_JSON_HAD_NULL 1
#define UL_JSON_HAD_FLOAT 2
/* every role field in its final form (only with `role`), and a string "id" */
#define UL_JSON_CLEAN 4
#define UL_JSON_HAD_ID 8
#define UL_JSON_ROLES 32    /* the row's keys were given their roles */
#define UL_JSON_HAD_NEST 64 /* a NEST key had a table */

#define UL_JSON_ROLE_ID 1    /* a string id */
#define UL_JSON_ROLE_INT 2   /* an integer (a whole float is made one) */
#define UL_JSON_ROLE_NUM 4   /* a number */
#define UL_JSON_ROLE_THE_ID 8 /* the key "id": the row's identity */
#define UL_JSON_ROLE_ID_LIST 16 /* an id list: decoded as sent (no nulls out) */
#define UL_JSON_ROLE_NEST 32    /* where a nested path starts */
#define UL_JSON_ROLE_TIME 64    /* a time's source: `time` is told its value */
#define UL_JSON_ROLE_TPARENT 128 /* holds time sources: `time` is told its fields' */

typedef struct {
    const char *path[4];
    int n;
    int (*row)(lua_State *L, void *ctx, int idx, int i, int had);
    int (*role)(lua_State *L, void *ctx, const char *key, size_t len);
    /* a TIME key's value (parent NULL), or a field of a TPARENT key's object,
     * is on top (or was null); a TPARENT key's value begins (key NULL) */
    void (*time)(lua_State *L, void *ctx, const char *parent, size_t plen, const char *key,
                 size_t klen, int null);
    void *ctx;
    int extra;
    int deep_ints;
} ul_json_rows;

#define UL_JSON_MAX_DEPTH 200

/* Decodes len bytes at s into one value on top of the stack; JSON null is
 * the value at stack index null_idx. Returns 1; or 0 with nothing pushed,
 * *off the byte offset of the fault and *msg what is wrong (static text).
 * Raises only on memory errors. rows may be NULL. */
int ul_json_decode(lua_State *L, const char *s, size_t len, int null_idx,
                   const ul_json_rows *rows, size_t *off, const char **msg);

#endif
