/* SPDX-License-Identifier: Apache-2.0 */
/* Private to the mail catcher's files (catcher.c, catcher_faults.c). */
#ifndef KUMOD_CTL_CATCHER_INT_H
#define KUMOD_CTL_CATCHER_INT_H

struct http_conn;
struct http_request;

/* catcher_faults.c: GET, PUT and DELETE /api/v1/faults. */
void catcher_faults__http(struct http_conn *hc, struct http_request *req);

#endif
