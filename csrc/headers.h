/* Response header handling in plain C, free of Lua and libcurl so that it can
 * be fuzzed on its own. */
#ifndef USERLIST_HEADERS_H
#define USERLIST_HEADERS_H

#include <stddef.h>
#include <time.h>

typedef void (*ul_header_cb)(void *ud, const char *name, size_t nlen,
                             const char *value, size_t vlen);

/* Walks the raw header block of ONE response ("Name: value\r\n" lines; the
 * status line and malformed lines are skipped) and calls cb for each header
 * with the name as received and the value trimmed. Returns the count. */
size_t ul_headers_each(const char *buf, size_t len, ul_header_cb cb, void *ud);

/* Parses a Retry-After value: delta seconds or an HTTP date (relative to
 * now). Returns 0 and sets *secs (>= 0) on success, -1 when it is neither. */
int ul_parse_retry_after(const char *v, size_t len, time_t now, double *secs);

/* Parses a non-negative decimal number (integer or fraction, as used by
 * retry-after-ms and RateLimit-* headers). Returns 0 on success, -1 if not. */
int ul_parse_decimal(const char *v, size_t len, double *out);

/* Parses a rate-limit reset: delta seconds, an epoch time (values >= 1e9),
 * or a duration such as "250ms", "6m0s". Returns 0 and sets *secs (>= 0). */
int ul_parse_ratelimit_reset(const char *v, size_t len, time_t now, double *secs);

/* Reads key=<decimal> from a structured header such as
 * "RateLimit: limit=100, remaining=0, reset=30" (key in lower case).
 * Returns 0 and sets *out, or -1 when the key is absent or not a number. */
int ul_parse_structured_field(const char *v, size_t len, const char *key, double *out);

/* Lower-cases an ASCII header name into out (size >= n + 1). */
void ul_lower(char *out, const char *name, size_t n);

#endif
