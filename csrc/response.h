/* Response building (response.c): what a transfer receives, and its end
 * made into the response table or the error value. */
#ifndef USERLIST_RESPONSE_H
#define USERLIST_RESPONSE_H

#include "session.h"

#include <curl/curl.h>
#include <lua.h>

/* Points libcurl's body and header callbacks at s's buffers (with the
 * max_size and header limits); one of the request's options. */
void ul_response_sink(ul_session *s);

/* Pushes the outcome of s's transfer, which ended with rc and is out of the
 * multi handle, its pending table at index pending: the response {status,
 * headers, body, bytes, new_connections, rate_limit?, shaped?}, or nil,
 * err. Returns the number of values pushed. */
int ul_response_build(lua_State *L, ul_session *s, CURLcode rc, int pending);

#endif
