#include "headers.h"

#include <curl/curl.h>
#include <string.h>

static int is_space(char c) { return c == ' ' || c == '\t'; }

static int is_token_char(unsigned char c)
{
    /* RFC 9110 tchar */
    if (c >= '0' && c <= '9') return 1;
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return 1;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

size_t ul_headers_each(const char *buf, size_t len, ul_header_cb cb, void *ud)
{
    size_t pos = 0, count = 0;
    while (pos < len) {
        const char *line = buf + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t llen = nl ? (size_t)(nl - line) : len - pos;
        size_t i = 0, vstart, vend;
        pos += llen + (nl ? 1 : 0);
        if (llen > 0 && line[llen - 1] == '\r')
            llen--;
        while (i < llen && is_token_char((unsigned char)line[i]))
            i++;
        if (i == 0 || i >= llen || line[i] != ':')
            continue; /* status line, blank line or garbage */
        vstart = i + 1;
        vend = llen;
        while (vstart < vend && is_space(line[vstart])) vstart++;
        while (vend > vstart && is_space(line[vend - 1])) vend--;
        cb(ud, line, i, line + vstart, vend - vstart);
        count++;
    }
    return count;
}

int ul_parse_decimal(const char *v, size_t len, double *out)
{
    double n = 0, scale = 0.1;
    size_t i = 0;
    int digits = 0;
    while (i < len && v[i] >= '0' && v[i] <= '9') {
        if (n < 1e15) /* clamp absurd values instead of overflowing */
            n = n * 10 + (v[i] - '0');
        i++;
        digits++;
    }
    if (i < len && v[i] == '.') {
        i++;
        while (i < len && v[i] >= '0' && v[i] <= '9') {
            n += (v[i] - '0') * scale;
            scale /= 10;
            i++;
            digits++;
        }
    }
    if (digits == 0 || i != len)
        return -1;
    *out = n;
    return 0;
}

int ul_parse_retry_after(const char *v, size_t len, time_t now, double *secs)
{
    char tmp[128];
    time_t t;
    if (ul_parse_decimal(v, len, secs) == 0)
        return 0;
    if (len == 0 || len >= sizeof tmp)
        return -1;
    memcpy(tmp, v, len);
    tmp[len] = '\0';
    t = curl_getdate(tmp, NULL);
    if (t == (time_t)-1)
        return -1;
    *secs = t > now ? (double)(t - now) : 0.0;
    return 0;
}

void ul_lower(char *out, const char *name, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        char c = name[i];
        out[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    out[n] = '\0';
}

/* "250ms", "1s", "6m0s", "1h2m3.5s" (the Go-style durations some APIs put in
 * x-ratelimit-reset-*). Returns 0 and sets *secs, or -1. */
static int parse_duration(const char *v, size_t len, double *secs)
{
    double total = 0;
    size_t i = 0;
    if (len == 0)
        return -1;
    while (i < len) {
        size_t start = i;
        double n, unit;
        while (i < len && ((v[i] >= '0' && v[i] <= '9') || v[i] == '.'))
            i++;
        if (i == start || ul_parse_decimal(v + start, i - start, &n) != 0)
            return -1;
        if (i + 1 < len && v[i] == 'm' && v[i + 1] == 's') {
            unit = 0.001;
            i += 2;
        } else if (i < len && (v[i] == 'h' || v[i] == 'm' || v[i] == 's')) {
            unit = v[i] == 'h' ? 3600 : v[i] == 'm' ? 60 : 1;
            i++;
        } else {
            return -1;
        }
        total += n * unit;
    }
    *secs = total;
    return 0;
}

int ul_parse_ratelimit_reset(const char *v, size_t len, time_t now, double *secs)
{
    double n;
    if (ul_parse_decimal(v, len, &n) == 0) {
        /* a count of seconds, or (as some servers send) an epoch time */
        if (n >= 1e9)
            n = n > (double)now ? n - (double)now : 0.0;
        *secs = n;
        return 0;
    }
    return parse_duration(v, len, secs);
}

int ul_parse_structured_field(const char *v, size_t len, const char *key, double *out)
{
    size_t klen = strlen(key), i = 0;
    while (i < len) {
        size_t start, end;
        while (i < len && (is_space(v[i]) || v[i] == ',' || v[i] == ';'))
            i++;
        start = i;
        while (i < len && v[i] != ',' && v[i] != ';')
            i++;
        end = i;
        while (end > start && is_space(v[end - 1]))
            end--;
        if (end - start > klen + 1 && v[start + klen] == '=') {
            size_t j;
            int same = 1;
            for (j = 0; j < klen; j++) {
                char c = v[start + j];
                if (c >= 'A' && c <= 'Z')
                    c = (char)(c + 32);
                if (c != key[j]) {
                    same = 0;
                    break;
                }
            }
            if (same)
                return ul_parse_decimal(v + start + klen + 1, end - start - klen - 1, out);
        }
    }
    return -1;
}
