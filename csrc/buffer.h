/* A growing byte buffer with a hard limit, in the spirit of lua-cjson's strbuf. */
#ifndef USERLIST_BUFFER_H
#define USERLIST_BUFFER_H

#include <stddef.h>

typedef struct {
    char *data;
    size_t len;
    size_t cap;
} ul_buffer;

void ul_buffer_init(ul_buffer *b);
/* Appends n bytes; returns 0 on success, -1 when memory runs out. */
int ul_buffer_append(ul_buffer *b, const char *p, size_t n);
/* Forgets the contents; keeps the memory unless it grew past keep bytes. */
void ul_buffer_reset(ul_buffer *b, size_t keep);
void ul_buffer_free(ul_buffer *b);

#endif
