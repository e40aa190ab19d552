/* SPDX-License-Identifier: Apache-2.0 */
/* Asynchronous HTTP client: libcurl's multi interface on kumod's libuv loop
 * (curl_multi_socket_action from uv_poll and uv_timer callbacks). */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/task.h"
#include "base/xalloc.h"
#include "io/httpc.h"
#include "io/loop.h"
#include "ktrace.h"

struct httpc_xfer {
	uint64_t id;
	CURL *easy;
	struct curl_slist *hdrs;
	char *body;
	httpc_done_fn done;
	void *arg;
	struct task *task;
	uint64_t started_ns;
	int header_seen;
	int too_big;
	struct httpc_resp resp;
	char errbuf[CURL_ERROR_SIZE];
	struct httpc_xfer *next, *prev;
};

/* A socket libcurl asked us to watch; freed in the close callback. */
struct httpc_sock {
	uv_poll_t poll;
	curl_socket_t fd;
};

static struct {
	int init;
	CURLM *multi;
	uv_timer_t timer;
	struct task *task; /* the multi handle's own task: polls and timers */
	uint64_t next_id;
	size_t inflight;
	struct httpc_xfer *xfers;
	char *cafile; /* SSL_CERT_FILE, when set: the trust store instead of the system's */
} hc;

static void check_done(void);

/* --- libuv glue ---------------------------------------------------------- */

static void sock_closed(uv_handle_t *h)
{
	free(h->data);
}

static void poll_cb(uv_poll_t *p, int status, int events)
{
	struct httpc_sock *s = p->data;
	struct task *prev = task_enter(hc.task);
	int flags = 0;
	if (status < 0)
		flags = CURL_CSELECT_ERR;
	if (events & UV_READABLE)
		flags |= CURL_CSELECT_IN;
	if (events & UV_WRITABLE)
		flags |= CURL_CSELECT_OUT;
	int running = 0;
	curl_multi_socket_action(hc.multi, s->fd, flags, &running);
	check_done();
	task_exit(hc.task, prev);
}

static int sock_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *sockp)
{
	(void)e;
	(void)userp;
	struct httpc_sock *s = sockp;
	if (what == CURL_POLL_REMOVE) {
		if (s) {
			curl_multi_assign(hc.multi, fd, NULL);
			uv_poll_stop(&s->poll);
			uv_close((uv_handle_t *)&s->poll, sock_closed);
		}
		return 0;
	}
	if (!s) {
		s = xcalloc(1, sizeof(*s));
		s->fd = fd;
		if (uv_poll_init_socket(kumod_loop(), &s->poll, fd) != 0) {
			free(s);
			return -1;
		}
		s->poll.data = s;
		curl_multi_assign(hc.multi, fd, s);
	}
	int ev = 0;
	if (what & CURL_POLL_IN)
		ev |= UV_READABLE;
	if (what & CURL_POLL_OUT)
		ev |= UV_WRITABLE;
	uv_poll_start(&s->poll, ev, poll_cb);
	return 0;
}

static void timer_cb(uv_timer_t *t)
{
	(void)t;
	struct task *prev = task_enter(hc.task);
	int running = 0;
	curl_multi_socket_action(hc.multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done();
	task_exit(hc.task, prev);
}

static int timerfn_cb(CURLM *m, long timeout_ms, void *userp)
{
	(void)m;
	(void)userp;
	if (timeout_ms < 0)
		uv_timer_stop(&hc.timer);
	else
		uv_timer_start(&hc.timer, timer_cb, (uint64_t)timeout_ms, 0);
	return 0;
}

static void init_once(void)
{
	if (hc.init)
		return;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		panic("%s: curl_global_init failed", __func__);
	hc.multi = curl_multi_init();
	if (!hc.multi)
		panic("%s: curl_multi_init failed", __func__);
	curl_multi_setopt(hc.multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
	curl_multi_setopt(hc.multi, CURLMOPT_TIMERFUNCTION, timerfn_cb);
	uv_timer_init(kumod_loop(), &hc.timer);
	uv_unref((uv_handle_t *)&hc.timer);
	hc.task = task_spawn("http_client", "http client pool", 0);
	task_set_phase(hc.task, "Idle", NULL);
	const char *ca = getenv("SSL_CERT_FILE");
	if (ca && *ca)
		hc.cafile = xstrdup(ca);
	hc.init = 1;
}

/* --- per-request callbacks ----------------------------------------------- */

static size_t header_cb(char *p, size_t size, size_t n, void *ud)
{
	struct httpc_xfer *x = ud;
	size_t len = size * n;
	if (len >= 5 && strncmp(p, "HTTP/", 5) == 0)
		buf_reset(&x->resp.headers); /* a new response (redirect, 100) */
	else if (x->resp.headers.len + len > 1024 * 1024)
		return 0; /* a peer-sized header block: refuse */
	else
		buf_append(&x->resp.headers, p, len);
	if (!x->header_seen) {
		x->header_seen = 1;
		task_set_phase(x->task, "Receiving", "http");
	}
	return len;
}

static size_t write_cb(char *p, size_t size, size_t n, void *ud)
{
	struct httpc_xfer *x = ud;
	size_t len = size * n;
	if (x->resp.body.len + len > HTTPC_MAX_BODY || buf_try_reserve(&x->resp.body, len) != 0) {
		x->too_big = 1;
		return 0;
	}
	buf_append(&x->resp.body, p, len);
	return len;
}

/* Progress callback: derives the phase from libcurl's timings. */
static int xferinfo_cb(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	(void)dt;
	(void)dn;
	(void)ut;
	(void)un;
	struct httpc_xfer *x = ud;
	if (x->header_seen)
		return 0;
	curl_off_t lookup = 0, conn = 0, pre = 0;
	curl_easy_getinfo(x->easy, CURLINFO_NAMELOOKUP_TIME_T, &lookup);
	curl_easy_getinfo(x->easy, CURLINFO_CONNECT_TIME_T, &conn);
	curl_easy_getinfo(x->easy, CURLINFO_PRETRANSFER_TIME_T, &pre);
	const char *phase = pre > 0	 ? "Waiting"
			    : conn > 0	 ? "Sending"
			    : lookup > 0 ? "Connecting"
					 : "Resolving";
	task_set_phase(x->task, phase, "http");
	return 0;
}

/* --- requests ------------------------------------------------------------ */

static void xfer_free(struct httpc_xfer *x)
{
	if (x->prev)
		x->prev->next = x->next;
	else
		hc.xfers = x->next;
	if (x->next)
		x->next->prev = x->prev;
	hc.inflight--;
	curl_multi_remove_handle(hc.multi, x->easy);
	curl_easy_cleanup(x->easy);
	curl_slist_free_all(x->hdrs);
	free(x->body);
	buf_free(&x->resp.headers);
	buf_free(&x->resp.body);
	task_set_phase(x->task, "Done", NULL);
	task_close(x->task);
	free(x);
	if (!hc.inflight)
		task_set_phase(hc.task, "Idle", NULL);
}

static void xfer_finish(struct httpc_xfer *x, CURLcode rc)
{
	long status = 0;
	x->resp.duration_us = (clock_mono_ns() - x->started_ns) / 1000;
	if (rc == CURLE_OK) {
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
		x->resp.status = (int)status;
	} else if (x->too_big) {
		snprintf(x->resp.error, sizeof(x->resp.error),
			 "response body over %u bytes or out of memory", HTTPC_MAX_BODY);
	} else {
		snprintf(x->resp.error, sizeof(x->resp.error), "%s",
			 x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
	}
	KTRACE(http_client_done, x->id, (int32_t)x->resp.status, x->resp.duration_us,
	       x->resp.error);
	struct task *prev = task_enter(x->task);
	x->done(x->id, &x->resp, x->arg);
	task_exit(x->task, prev);
	xfer_free(x);
}

static void check_done(void)
{
	CURLMsg *msg;
	int left;
	while ((msg = curl_multi_info_read(hc.multi, &left))) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		struct httpc_xfer *x = NULL;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
		if (x)
			xfer_finish(x, msg->data.result);
	}
}

static int scheme_ok(const char *url)
{
	return strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0;
}

static void set_method(struct httpc_xfer *x, const struct httpc_req *req)
{
	CURL *e = x->easy;
	if (req->body) {
		x->body = xmalloc(req->body_len ? req->body_len : 1);
		memcpy(x->body, req->body, req->body_len);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->body);
		if (strcmp(req->method, "POST") != 0)
			curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
	} else if (strcmp(req->method, "HEAD") == 0) {
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	} else if (strcmp(req->method, "GET") != 0) {
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
	}
}

static void set_options(struct httpc_xfer *x, const struct httpc_req *req)
{
	CURL *e = x->easy;
	curl_easy_setopt(e, CURLOPT_URL, req->url);
	curl_easy_setopt(e, CURLOPT_PRIVATE, x);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(e, CURLOPT_MAXREDIRS, 10L);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, xferinfo_cb);
	curl_easy_setopt(e, CURLOPT_XFERINFODATA, x);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, req->insecure ? 0L : 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, req->insecure ? 0L : 2L);
	if (hc.cafile)
		curl_easy_setopt(e, CURLOPT_CAINFO, hc.cafile);
	if (req->user_agent)
		curl_easy_setopt(e, CURLOPT_USERAGENT, req->user_agent);
	if (req->timeout_ms)
		curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)req->timeout_ms);
	if (req->connect_timeout_ms)
		curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)req->connect_timeout_ms);
	if (req->pool_idle_timeout_ms)
		curl_easy_setopt(e, CURLOPT_MAXAGE_CONN,
				 (long)(req->pool_idle_timeout_ms / 1000 + 1));
	x->hdrs = curl_slist_append(NULL, "Expect:"); /* no 100-continue round trip */
	for (size_t i = 0; i < req->nheaders; i++)
		x->hdrs = curl_slist_append(x->hdrs, req->headers[i]);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs);
	set_method(x, req);
}

int httpc_start(const struct httpc_req *req, httpc_done_fn done, void *arg, uint64_t *id)
{
	if (!scheme_ok(req->url))
		return -EINVAL;
	init_once();
	struct httpc_xfer *x = xcalloc(1, sizeof(*x));
	x->easy = curl_easy_init();
	if (!x->easy) {
		free(x);
		return -ENOMEM;
	}
	x->id = ++hc.next_id;
	x->done = done;
	x->arg = arg;
	buf_init(&x->resp.headers);
	buf_init(&x->resp.body);
	set_options(x, req);
	char name[160];
	snprintf(name, sizeof(name), "%s %.140s", req->method, req->url);
	x->task = task_spawn("http_request", name, req->parent_task);
	task_set_phase(x->task, "Resolving", "http");
	x->started_ns = clock_mono_ns();
	if (curl_multi_add_handle(hc.multi, x->easy) != CURLM_OK) {
		curl_easy_cleanup(x->easy);
		curl_slist_free_all(x->hdrs);
		free(x->body);
		task_close(x->task);
		free(x);
		return -ENOMEM;
	}
	x->next = hc.xfers;
	if (hc.xfers)
		hc.xfers->prev = x;
	hc.xfers = x;
	hc.inflight++;
	task_set_phase(hc.task, "Active", NULL);
	KTRACE(http_client_start, x->id, req->method, req->url);
	*id = x->id;
	return 0;
}

void httpc_cancel(uint64_t id)
{
	for (struct httpc_xfer *x = hc.xfers; x; x = x->next) {
		if (x->id == id) {
			KTRACE(http_client_done, x->id, 0, (clock_mono_ns() - x->started_ns) / 1000,
			       "cancelled");
			xfer_free(x);
			return;
		}
	}
}

size_t httpc_inflight(void)
{
	return hc.inflight;
}

static void timer_closed(uv_handle_t *h)
{
	(void)h;
}

void httpc_shutdown(void)
{
	if (!hc.init)
		return;
	while (hc.xfers)
		xfer_free(hc.xfers);
	curl_multi_cleanup(hc.multi);
	uv_close((uv_handle_t *)&hc.timer, timer_closed);
	task_close(hc.task);
	free(hc.cafile);
	curl_global_cleanup();
	memset(&hc, 0, sizeof(hc));
}
