/* Request building (request.c): a request table made into the session's
 * URL, header list and libcurl options, ready for the multi handle. */
#ifndef USERLIST_REQUEST_H
#define USERLIST_REQUEST_H

#include "session.h"

#include <lua.h>

/* Builds the request described by the table at index t into s, whose last
 * request has been freed. Pushes the pending table, what finishing the
 * transfer needs ({method, url, key?, body?, decode, rows?}; it anchors the
 * strings libcurl points at), and returns 0; or, when the request's data
 * is unusable, pushes nil, err and returns 2. The calling code's mistakes
 * are raised (the rule in core.h). Must run inside a session method (it
 * reads UL_STATE and UL_USER_AGENT). */
int ul_request_build(lua_State *L, ul_session *s, int t);

#endif
