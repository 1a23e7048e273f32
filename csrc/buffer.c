#include "buffer.h"

#include <stdlib.h>
#include <string.h>

void ul_buffer_init(ul_buffer *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

int ul_buffer_append(ul_buffer *b, const char *p, size_t n)
{
    if (n > (size_t)-1 - b->len - 1)
        return -1;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 16384;
        char *nd;
        while (cap < b->len + n + 1) {
            if (cap > (size_t)-1 / 2)
                return -1;
            cap *= 2;
        }
        nd = realloc(b->data, cap);
        if (nd == NULL)
            return -1;
        b->data = nd;
        b->cap = cap;
    }
    if (n > 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0'; /* always NUL-terminated for parsers */
    return 0;
}

void ul_buffer_reset(ul_buffer *b, size_t keep)
{
    if (b->cap > keep) {
        ul_buffer_free(b);
        return;
    }
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void ul_buffer_free(ul_buffer *b)
{
    free(b->data);
    ul_buffer_init(b);
}
