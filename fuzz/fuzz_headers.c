/* libFuzzer target: the response-header parsers of csrc/headers.c.
 * The input is a raw header block; every header value found is also fed to
 * each value parser (Retry-After, decimal, rate-limit reset, structured). */
#include "../csrc/headers.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void each(void *ud, const char *name, size_t nlen, const char *value, size_t vlen)
{
    char lower[256];
    double d;
    size_t *count = ud;
    (*count)++;
    if (nlen < sizeof lower)
        ul_lower(lower, name, nlen);
    if (ul_parse_retry_after(value, vlen, 1700000000, &d) == 0 && d < 0)
        __builtin_trap(); /* a wait is never negative */
    if (ul_parse_decimal(value, vlen, &d) == 0 && d < 0)
        __builtin_trap();
    if (ul_parse_ratelimit_reset(value, vlen, 1700000000, &d) == 0 && d < 0)
        __builtin_trap();
    (void)ul_parse_structured_field(value, vlen, "remaining", &d);
    (void)ul_parse_structured_field(value, vlen, "reset", &d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t count = 0;
    size_t n = ul_headers_each((const char *)data, size, each, &count);
    if (n != count)
        __builtin_trap();
    return 0;
}
