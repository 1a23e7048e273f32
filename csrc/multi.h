/* The multi handle that drives sessions' transfers, on the calling thread
 * or on a transfer thread of its own. */
#ifndef USERLIST_MULTI_H
#define USERLIST_MULTI_H

#include <curl/curl.h>

/* One transfer's outcome, owned by its session; written by whoever drives
 * the multi handle, read by the session's owner through the calls below. */
typedef struct {
    int done;           /* the transfer has ended with rc */
    CURLcode rc;
    int sent;           /* its request is going out (set by ul_xfer_prereq) */
    unsigned long seen; /* completions counted when its owner last looked */
    unsigned long round; /* the thread's rounds when it was added */
} ul_xfer;

typedef struct ul_multi ul_multi;

/* A new multi handle with one reference, or NULL. threaded: once a transfer
 * is added, a thread of its own drives every transfer (falls back to the
 * caller's thread if none can be started). */
ul_multi *ul_multi_new(int threaded);
void ul_multi_ref(ul_multi *m);
/* The last reference stops the thread (joined) and frees the handle. */
void ul_multi_unref(ul_multi *m);

/* Adds easy (whose CURLOPT_PRIVATE the multi sets to x); 0 or -1. */
int ul_multi_add(ul_multi *m, CURL *easy, ul_xfer *x);
/* Takes easy out; after this nobody touches it or x. */
void ul_multi_remove(ul_multi *m, CURL *easy);
/* Does what can be done now, never waits: 1 when x has ended, 0 while it
 * runs, -1 when the multi handle failed. */
int ul_multi_step(ul_multi *m, ul_xfer *x);
/* Waits until x has ended: 1, or -1 when the multi handle failed. */
int ul_multi_finish(ul_multi *m, ul_xfer *x);
/* Waits until some transfer of m can make progress (unthreaded) or has
 * ended since x's owner last looked (threaded), or secs pass: 0 or -1. */
int ul_multi_wait(ul_multi *m, ul_xfer *x, double secs);
/* Threaded: waits for the thread's first round over x, then whether its
 * request went out (or it ended). Unthreaded: -1, ask libcurl. */
int ul_multi_sent(ul_multi *m, ul_xfer *x);
/* CURLOPT_PREREQFUNCTION, with CURLOPT_PREREQDATA the transfer's ul_xfer. */
int ul_xfer_prereq(void *x, char *remote_ip, char *local_ip, int remote_port, int local_port);
/* The seconds libcurl would like to wait at most before the next step, or
 * a negative number when it has no deadline (or a thread drives it). */
double ul_multi_timeout(ul_multi *m);

#endif
