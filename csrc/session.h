/* The session userdata, shared by the three files of the request path:
 * session.c (its lifetime, and driving its transfer), request.c (a request
 * table built into it) and response.c (its ended transfer made into the
 * response or the error). */
#ifndef USERLIST_SESSION_H
#define USERLIST_SESSION_H

#include "buffer.h"
#include "multi.h"

#include <curl/curl.h>
#include <lua.h>

#define UL_KEEP_BUFFER (1024 * 1024) /* keep up to this much buffer between requests */

/* The session methods' second upvalue (the first is the state table). */
#define UL_USER_AGENT lua_upvalueindex(2)

typedef struct {
    CURL *easy;
    ul_multi *m; /* drives the easy handle (multi.c); shared by sessions opened
                    together (core.session(opts, other)), whose transfers run
                    side by side on one connection cache */
    CURLU *url;
    struct curl_slist *hdrs;
    ul_buffer body, head, query;
    char errbuf[CURL_ERROR_SIZE];
    /* options */
    double connect_timeout, timeout, low_speed_time;
    long low_speed_limit, max_redirects;
    curl_off_t max_size;
    int verify, follow, allow_insecure_http;
    char *cafile, *capath, *proxy;
    /* per transfer */
    int too_large, oom;
    int active;  /* the easy handle is in the multi handle */
    ul_xfer x;   /* ... and whether its transfer has ended, with what */
    int pending; /* registry ref of {method, url, key, body, decode, rows} while
                    a transfer runs: keeps the strings libcurl points at alive */
} ul_session;

#endif
