/* The multi handle of a group of sessions, and the transfer thread.
 *
 * Unthreaded (the default, and always with the nginx engine), the caller
 * drives libcurl: step() does one non-blocking round, finish() rounds and
 * polls until its transfer ends; meanwhile what arrives waits in the
 * kernel's socket buffers.
 *
 * Threaded (transfer_thread = true), a thread of the multi handle's own runs
 * curl_multi_perform and curl_multi_poll, so responses keep arriving while
 * Lua decodes and shapes a page. libcurl allows one thread at a time on a
 * multi handle and its easy handles, so the lock `mu` guards both: the
 * thread holds it while it performs and lets go only while it polls; a
 * caller that must add or remove a handle (enter) wakes the poll and waits
 * until the thread has let go of the handle. The thread runs no Lua and
 * touches only what libcurl's callbacks write (a session's buffers, flags,
 * error buffer) and the ul_xfer of each transfer; the session reads those
 * only after its transfer ended under the lock, or once it is removed. */
#include "multi.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>

struct ul_multi {
    CURLM *handle;
    int refs;
    int threaded; /* wanted; cleared when no thread could be started */
    int started;  /* the thread runs (joined by the last unref) */
    pthread_t thread;
    pthread_mutex_t mu;      /* everything below, and the handle while threaded */
    pthread_cond_t done_cv;  /* to callers: a transfer ended, or the poll let go */
    pthread_cond_t work_cv;  /* to the thread: a handle came or went, or stop */
    int count;               /* easy handles in the multi handle */
    int running;             /* ... of which libcurl still works on */
    int want;                /* callers waiting to use the handle */
    int polling;             /* the thread is in curl_multi_poll without mu */
    int stop, failed;
    unsigned long completions;
    unsigned long rounds;    /* the thread's curl_multi_perform calls */
};

/* Marks each transfer that ended; the caller holds mu. */
static void collect(ul_multi *m)
{
    CURLMsg *msg;
    int left, n = 0;
    while ((msg = curl_multi_info_read(m->handle, &left)) != NULL) {
        char *owner = NULL;
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &owner);
        if (owner != NULL) {
            ul_xfer *x = (ul_xfer *)(void *)owner;
            x->done = 1;
            x->rc = msg->data.result;
            n++;
        }
    }
    m->completions += (unsigned long)n;
}

static void *drive(void *arg)
{
    ul_multi *m = arg;
    pthread_mutex_lock(&m->mu);
    while (!m->stop) {
        CURLMcode mc;
        if (m->want > 0 || m->failed || m->count == 0) {
            pthread_cond_wait(&m->work_cv, &m->mu);
            continue;
        }
        if (curl_multi_perform(m->handle, &m->running) != CURLM_OK) {
            m->failed = 1;
            pthread_cond_broadcast(&m->done_cv);
            continue;
        }
        m->rounds++;
        collect(m);
        pthread_cond_broadcast(&m->done_cv); /* ended transfers; sent() waits for a round */
        if (m->want > 0 || m->stop)
            continue;
        if (m->running == 0) { /* only ended transfers left: sleep until one comes or goes */
            pthread_cond_wait(&m->work_cv, &m->mu);
            continue;
        }
        m->polling = 1;
        pthread_mutex_unlock(&m->mu);
        mc = curl_multi_poll(m->handle, NULL, 0, 1000, NULL);
        pthread_mutex_lock(&m->mu);
        m->polling = 0;
        if (mc != CURLM_OK)
            m->failed = 1;
        if (m->want > 0 || m->failed)
            pthread_cond_broadcast(&m->done_cv);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

/* Takes mu and, while threaded, the handle: waits until the thread is out
 * of its poll. No Lua may run (nor raise) until leave(). */
static void enter(ul_multi *m)
{
    pthread_mutex_lock(&m->mu);
    if (!m->started)
        return;
    m->want++;
    while (m->polling) {
        curl_multi_wakeup(m->handle);
        pthread_cond_wait(&m->done_cv, &m->mu);
    }
}

static void leave(ul_multi *m)
{
    if (m->started && --m->want == 0)
        pthread_cond_signal(&m->work_cv);
    pthread_mutex_unlock(&m->mu);
}

ul_multi *ul_multi_new(int threaded)
{
    pthread_condattr_t ca;
    ul_multi *m = calloc(1, sizeof *m);
    if (m == NULL)
        return NULL;
    m->handle = curl_multi_init();
    if (m->handle == NULL) {
        free(m);
        return NULL;
    }
    m->refs = 1;
    m->threaded = threaded;
    pthread_mutex_init(&m->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* timed waits ignore clock changes */
    pthread_cond_init(&m->done_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&m->work_cv, NULL);
    return m;
}

void ul_multi_ref(ul_multi *m)
{
    m->refs++;
}

void ul_multi_unref(ul_multi *m)
{
    if (--m->refs > 0)
        return;
    if (m->started) {
        pthread_mutex_lock(&m->mu);
        m->stop = 1;
        pthread_cond_signal(&m->work_cv);
        if (m->polling)
            curl_multi_wakeup(m->handle);
        pthread_mutex_unlock(&m->mu);
        pthread_join(m->thread, NULL);
    }
    pthread_cond_destroy(&m->done_cv);
    pthread_cond_destroy(&m->work_cv);
    pthread_mutex_destroy(&m->mu);
    curl_multi_cleanup(m->handle);
    free(m);
}

/* Starts the thread with every signal blocked, so that signals (Ctrl-C in
 * the command) reach the thread that runs Lua. */
static void start(ul_multi *m)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    if (pthread_create(&m->thread, NULL, drive, m) == 0)
        m->started = 1;
    else
        m->threaded = 0; /* the caller drives, as unthreaded */
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

int ul_multi_add(ul_multi *m, CURL *easy, ul_xfer *x)
{
    int rc;
    if (m->threaded && !m->started)
        start(m);
    x->done = x->sent = 0;
    curl_easy_setopt(easy, CURLOPT_PRIVATE, (void *)x);
    enter(m);
    x->round = m->rounds;
    rc = curl_multi_add_handle(m->handle, easy) == CURLM_OK ? 0 : -1;
    if (rc == 0)
        m->count++; /* leave() wakes a thread that had nothing to run */
    leave(m);
    return rc;
}

void ul_multi_remove(ul_multi *m, CURL *easy)
{
    enter(m);
    curl_multi_remove_handle(m->handle, easy); /* drops its messages too */
    m->count--;
    leave(m);
}

int ul_multi_step(ul_multi *m, ul_xfer *x)
{
    int r;
    pthread_mutex_lock(&m->mu);
    if (!m->started && !x->done) {
        if (curl_multi_perform(m->handle, &m->running) != CURLM_OK)
            m->failed = 1;
        else
            collect(m);
    }
    r = x->done ? 1 : m->failed ? -1 : 0;
    x->seen = m->completions;
    pthread_mutex_unlock(&m->mu);
    return r;
}

int ul_multi_finish(ul_multi *m, ul_xfer *x)
{
    int r;
    if (!m->started) {
        while ((r = ul_multi_step(m, x)) == 0)
            if (curl_multi_poll(m->handle, NULL, 0, 1000, NULL) != CURLM_OK)
                return -1;
        return r;
    }
    pthread_mutex_lock(&m->mu);
    while (!x->done && !m->failed)
        pthread_cond_wait(&m->done_cv, &m->mu);
    r = x->done ? 1 : -1;
    pthread_mutex_unlock(&m->mu);
    return r;
}

int ul_multi_wait(ul_multi *m, ul_xfer *x, double secs)
{
    struct timespec until;
    int r;
    if (!m->started)
        return curl_multi_poll(m->handle, NULL, 0, (int)(secs * 1000), NULL) == CURLM_OK ? 0 : -1;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += (time_t)secs;
    until.tv_nsec += (long)((secs - (double)(time_t)secs) * 1e9);
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&m->mu);
    while (m->completions == x->seen && !m->failed)
        if (pthread_cond_timedwait(&m->done_cv, &m->mu, &until) != 0)
            break; /* ETIMEDOUT */
    x->seen = m->completions;
    r = m->failed ? -1 : 0;
    pthread_mutex_unlock(&m->mu);
    return r;
}

int ul_multi_sent(ul_multi *m, ul_xfer *x)
{
    int r;
    if (!m->started)
        return -1;
    pthread_mutex_lock(&m->mu);
    while (m->rounds == x->round && !x->done && !m->failed)
        pthread_cond_wait(&m->done_cv, &m->mu);
    r = x->sent || x->done;
    pthread_mutex_unlock(&m->mu);
    return r;
}

/* Runs inside curl_multi_perform: with mu held, on whichever thread drives. */
int ul_xfer_prereq(void *x, char *remote_ip, char *local_ip, int remote_port, int local_port)
{
    (void)remote_ip;
    (void)local_ip;
    (void)remote_port;
    (void)local_port;
    ((ul_xfer *)x)->sent = 1;
    return CURL_PREREQFUNC_OK;
}

double ul_multi_timeout(ul_multi *m)
{
    long ms = -1;
    if (m->started || curl_multi_timeout(m->handle, &ms) != CURLM_OK)
        return -1;
    return (double)ms / 1000;
}
