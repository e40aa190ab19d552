// SPDX-License-Identifier: Apache-2.0
/* kcli trace-smtp-server / trace-smtp-client: live SMTP transcripts from
 * kumod's websocket endpoints (KumoMTA's /api/admin/trace-smtp-*-/v1 and
 * event shapes), printed as KumoMTA's kcli does, or one JSON event per line
 * with --json. The websocket client is a plain socket plus proto/ws.c
 * (libcurl's websocket support is not enabled in Debian 12's build). */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "base/base64.h"
#include "base/buf.h"
#include "base/xalloc.h"
#include "kcli.h"
#include "proto/ws.h"

#define TRACE_MAX_EVENT (16u << 20)

static void tdie(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void tdie(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("kcli: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

/* --- websocket client ---------------------------------------------------------- */

struct ws_client {
	int fd;
	struct buf in;
};

static void send_all(int fd, const void *p, size_t n)
{
	const char *s = p;
	while (n) {
		ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			tdie("websocket: send: %s", strerror(errno));
		s += k;
		n -= (size_t)k;
	}
}

/* Reads more into c->in; 0 at EOF. */
static ssize_t read_more(struct ws_client *c)
{
	char tmp[65536];
	ssize_t k;
	do
		k = recv(c->fd, tmp, sizeof(tmp), 0);
	while (k < 0 && errno == EINTR);
	if (k < 0)
		tdie("websocket: recv: %s", strerror(errno));
	buf_append(&c->in, tmp, (size_t)k);
	return k;
}

static void ws_client_send(struct ws_client *c, enum ws_opcode op, const void *p, size_t n)
{
	uint8_t mask[4], h[WS_MAX_HEADER];
	if (RAND_bytes(mask, sizeof(mask)) != 1)
		tdie("no random bytes for the websocket mask");
	size_t k = ws_frame_header(h, op, n, mask);
	uint8_t *m = xmalloc(n + 1);
	memcpy(m, p, n);
	ws_unmask(m, n, mask);
	send_all(c->fd, h, k);
	send_all(c->fd, m, n);
	free(m);
}

/* "http://host:port[/...]" -> host and port. */
static void endpoint_split(const char *endpoint, char *host, size_t hl, char *port, size_t pl)
{
	const char *p = endpoint;
	if (strncasecmp(p, "https://", 8) == 0)
		tdie("trace-smtp over https is not implemented: use the http listener's endpoint");
	if (strncasecmp(p, "http://", 7) == 0)
		p += 7;
	size_t n = strcspn(p, "/");
	char hp[250];
	snprintf(hp, sizeof(hp), "%.*s", (int)n, p);
	char *colon = hp[0] == '[' ? strstr(hp, "]:") : strrchr(hp, ':');
	if (colon && hp[0] == '[')
		colon++;
	snprintf(port, pl, "%s", colon ? colon + 1 : "80");
	if (colon)
		*colon = 0;
	if (hp[0] == '[') {
		hp[strlen(hp) - 1] = 0;
		snprintf(host, hl, "%s", hp + 1);
	} else {
		snprintf(host, hl, "%s", hp);
	}
}

static int tcp_connect(const char *host, const char *port)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *ai;
	int rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0)
		tdie("%s:%s: %s", host, port, gai_strerror(rc));
	int fd = -1;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
		if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		tdie("cannot connect to %s:%s: %s", host, port, strerror(errno));
	return fd;
}

/* The expected Sec-WebSocket-Accept: base64(SHA-1(key GUID)). */
static void kcli_ws_accept(const char *key, char out[32])
{
	char in[128];
	unsigned char md[SHA_DIGEST_LENGTH];
	int n = snprintf(in, sizeof(in), "%s%s", key, WS_GUID);
	SHA1((const unsigned char *)in, (size_t)n, md);
	struct buf b;
	buf_init(&b);
	base64_encode(&b, md, sizeof(md));
	snprintf(out, 32, "%s", buf_cstr(&b));
	buf_free(&b);
}

/* Connects and upgrades; a refusal ends the program with kumod's error. */
static void ws_connect(struct ws_client *c, const char *endpoint, const char *path)
{
	char host[256], port[16];
	endpoint_split(endpoint, host, sizeof(host), port, sizeof(port));
	c->fd = tcp_connect(host, port);
	buf_init(&c->in);
	unsigned char raw[16];
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		tdie("no random bytes for the websocket key");
	struct buf key, req;
	buf_init(&key);
	buf_init(&req);
	base64_encode(&key, raw, sizeof(raw));
	int v6 = strchr(host, ':') != NULL;
	buf_printf(&req,
		   "GET %s HTTP/1.1\r\nHost: %s%s%s:%s\r\nUpgrade: websocket\r\nConnection: "
		   "Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nUser-Agent: "
		   "kcli/" KUMOD_VERSION "\r\n\r\n",
		   path, v6 ? "[" : "", host, v6 ? "]" : "", port, buf_cstr(&key));
	send_all(c->fd, req.data, req.len);
	char *end;
	while (!(end = memmem(c->in.data ? c->in.data : "", c->in.len, "\r\n\r\n", 4)))
		if (read_more(c) == 0 || c->in.len > 65536)
			tdie("GET %s: connection closed during the websocket handshake", path);
	size_t head = (size_t)(end - c->in.data) + 4;
	char *h = xstrndup(c->in.data, head);
	int status = 0;
	sscanf(h, "HTTP/1.%*d %d", &status);
	if (status != 101) {
		/* the error body (JSON {"error": ...}) follows the head */
		while (c->in.len < head + 1 && read_more(c) > 0)
			;
		json_t *j = json_loadb(c->in.data + head, c->in.len - head, 0, NULL);
		const char *why = json_string_value(json_object_get(j, "error"));
		tdie("GET %s: HTTP %d: %s", path, status, why ? why : "websocket refused");
	}
	char want[32];
	kcli_ws_accept(buf_cstr(&key), want);
	char *acc = strcasestr(h, "\r\nSec-WebSocket-Accept:");
	if (!acc)
		tdie("GET %s: 101 without Sec-WebSocket-Accept", path);
	acc += strlen("\r\nSec-WebSocket-Accept:");
	acc += strspn(acc, " ");
	if (strncmp(acc, want, strlen(want)) != 0)
		tdie("GET %s: wrong Sec-WebSocket-Accept", path);
	free(h);
	buf_consume(&c->in, head);
	buf_free(&key);
	buf_free(&req);
}

/* The next text frame's payload (NUL-terminated, caller frees), answering
 * pings; NULL when the server closed. */
static char *ws_next_text(struct ws_client *c)
{
	for (;;) {
		struct ws_frame f;
		long rc = ws_frame_parse((const uint8_t *)buf_rptr(&c->in), buf_avail(&c->in), 0,
					 TRACE_MAX_EVENT, &f);
		if (rc < 0)
			tdie("websocket protocol error from kumod (%ld)", rc);
		if (rc == 0) {
			if (read_more(c) == 0)
				return NULL;
			continue;
		}
		const char *pl = buf_rptr(&c->in) + f.header_len;
		size_t n = (size_t)f.payload_len;
		char *out = NULL;
		if (f.opcode == WS_OP_TEXT && f.fin)
			out = xstrndup(pl, n);
		else if (f.opcode == WS_OP_PING)
			ws_client_send(c, WS_OP_PONG, pl, n);
		else if (f.opcode == WS_OP_CLOSE) {
			ws_client_send(c, WS_OP_CLOSE, pl, n < 2 ? n : 2);
			return NULL;
		}
		buf_consume(&c->in, (size_t)rc);
		if (out)
			return out;
	}
}

/* --- printing ------------------------------------------------------------------ */

struct trace_opts {
	int client, json, terse, only_new, only_one, data;
	int color;
	json_t *request;
};

struct seen {
	char *key;
	double opened;
	json_t *meta;
	struct seen *next;
};

static double parse_when(const char *s)
{
	struct tm tm = {0};
	const char *rest = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
	if (!rest)
		return 0;
	double frac = *rest == '.' ? strtod(rest, NULL) : 0;
	return (double)timegm(&tm) + frac;
}

static void fmt_delta(double d, char *out, size_t n)
{
	if (d < 0.001)
		snprintf(out, n, "%.0fµs", d * 1e6);
	else if (d < 1)
		snprintf(out, n, "%.0fms", d * 1e3);
	else
		snprintf(out, n, "%.0fs", d);
}

/* Prints s with C-style escapes (Rust's escape_debug, as KumoMTA's kcli). */
static void put_escaped(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '\r')
			fputs("\\r", stdout);
		else if (ch == '\t')
			fputs("\\t", stdout);
		else if (ch == '\\')
			fputs("\\\\", stdout);
		else if (ch < 0x20 || ch == 0x7f)
			printf("\\u{%x}", ch);
		else
			putchar(ch);
	}
}

/* One line per line of text, with prefix and colour. */
static void print_lines(const char *pfx, const char *arrow, const char *col, const char *normal,
			const char *text, int terse)
{
	size_t len = strlen(text);
	while (len && (text[len - 1] == '\n' || text[len - 1] == '\r'))
		len--;
	const char *p = text, *end = text + len;
	int idx = 0;
	do {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *e = nl ? nl : end;
		if (e > p && e[-1] == '\r')
			e--;
		if (idx++ > 0 && terse) {
			printf("%s === bytes=%zu\n", pfx, strlen(text));
			break;
		}
		printf("%s %s%s", pfx, col, arrow);
		put_escaped(p, (size_t)(e - p));
		printf("%s\n", normal);
		p = nl ? nl + 1 : end;
	} while (p < end);
}

static void print_meta_diff(const char *pfx, struct seen *s, json_t *meta)
{
	if (!json_is_object(meta) || json_equal(s->meta, meta))
		return;
	const char *k;
	json_t *v;
	json_object_foreach(meta, k, v)
	{
		json_t *old = json_object_get(s->meta, k);
		if (old && json_equal(old, v))
			continue;
		char *txt = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
		printf("%s === conn_meta %s=%s\n", pfx, k, txt ? txt : "?");
		free(txt);
	}
	json_decref(s->meta);
	s->meta = json_deep_copy(meta);
}

static char *conn_key(const struct trace_opts *o, json_t *meta)
{
	if (!json_is_object(meta))
		return xstrdup("");
	if (o->client) {
		const char *id = json_string_value(json_object_get(meta, "id"));
		return xstrdup(id ? id : "");
	}
	const char *from = json_string_value(json_object_get(meta, "received_from"));
	const char *via = json_string_value(json_object_get(meta, "received_via"));
	return xasprintf("%s->%s", from ? from : "?", via ? via : "?");
}

/* Returns 1 when the program should end (--only-one and its session closed). */
static int print_event(const struct trace_opts *o, json_t *ev, struct seen **seen, char **wanted)
{
	const char *cyan = o->color ? "\033[36m" : "", *green = o->color ? "\033[32m" : "";
	const char *red = o->color ? "\033[31m" : "", *normal = o->color ? "\033[0m" : "";
	json_t *meta = json_object_get(ev, "conn_meta"), *pl = json_object_get(ev, "payload");
	const char *when_s = json_string_value(json_object_get(ev, "when"));
	double when = parse_when(when_s);
	char *key = conn_key(o, meta);
	if (*wanted && strcmp(*wanted, key) != 0 && *key) {
		free(key);
		return 0;
	}
	struct seen *s = *seen;
	while (s && strcmp(s->key, key) != 0)
		s = s->next;
	const char *first = json_string_value(pl);
	char delta[32] = "     ";
	if (s) {
		char d[24];
		fmt_delta(when - s->opened, d, sizeof(d));
		snprintf(delta, sizeof(delta), "%6s", d);
	} else {
		int opening = first && (strcmp(first, "Connected") == 0 ||
					strcmp(first, "BeginSession") == 0);
		if (!opening && o->only_new && *key) {
			free(key);
			return 0;
		}
		if (o->only_one && !*wanted && *key)
			*wanted = xstrdup(key);
		s = xcalloc(1, sizeof(*s));
		s->key = xstrdup(key);
		s->opened = when;
		s->meta = json_object();
		s->next = *seen;
		*seen = s;
	}
	char *pfx = xasprintf("[%s] %s", key, delta);
	const char *in_arrow = o->client ? " <- " : " -> ",
		   *out_arrow = o->client ? "->  " : "<-  ";
	const char *in_col = o->client ? cyan : green, *out_col = o->client ? green : cyan;
	int end = 0;
	json_t *v;
	if (first && (strcmp(first, "Connected") == 0 || strcmp(first, "BeginSession") == 0)) {
		printf("%s === %s %s\n", pfx, first, when_s ? when_s : "");
	} else if (first && strcmp(first, "Closed") == 0) {
		printf("%s === Closed\n", pfx);
		end = o->only_one;
	} else if (first) {
		printf("%s === %s\n", pfx, first);
	} else if ((v = json_object_get(pl, "Read"))) {
		print_lines(pfx, in_arrow, in_col, normal, json_string_value(v), o->terse);
	} else if ((v = json_object_get(pl, "Write"))) {
		print_lines(pfx, out_arrow, out_col, normal, json_string_value(v), o->terse);
	} else if ((v = json_object_get(pl, "AbbreviatedRead")) ||
		   (v = json_object_get(pl, "AbbreviatedWrite"))) {
		int rd = json_object_get(pl, "AbbreviatedRead") != NULL;
		print_lines(pfx, rd ? in_arrow : out_arrow, rd ? in_col : out_col, normal,
			    json_string_value(json_object_get(v, "snippet")), 0);
		printf("%s === bytes %s=%lld\n", pfx, rd ? "read" : "written",
		       (long long)json_integer_value(json_object_get(v, "len")));
	} else if ((v = json_object_get(pl, "Diagnostic"))) {
		const char *level = json_string_value(json_object_get(v, "level"));
		printf("%s === %s%s: %s%s\n", pfx, level && strcmp(level, "ERROR") == 0 ? red : "",
		       level ? level : "?", json_string_value(json_object_get(v, "message")),
		       normal);
	} else if ((v = json_object_get(pl, "Callback"))) {
		const char *err = json_string_value(json_object_get(v, "error"));
		const char *name = json_string_value(json_object_get(v, "name"));
		if (err)
			printf("%s === %s: %sError: %s%s\n", pfx, name, red, err, normal);
		else
			printf("%s === %s: Ok\n", pfx, name);
	} else if ((v = json_object_get(pl, "MessageDisposition"))) {
		printf("%s === Message from=<%s> to=<", pfx,
		       json_string_value(json_object_get(v, "sender")));
		size_t i;
		json_t *r;
		json_array_foreach(json_object_get(v, "recipient"), i, r)
		{
			printf("%s%s", i ? ", " : "", json_string_value(r));
		}
		printf("> id=%s\n%s === Message queue=%s will_enqueue=%s\n",
		       json_string_value(json_object_get(v, "id")), pfx,
		       json_string_value(json_object_get(v, "queue")),
		       json_is_true(json_object_get(v, "will_enqueue")) ? "true" : "false");
	} else {
		char *txt = json_dumps(pl, JSON_ENCODE_ANY | JSON_COMPACT);
		printf("%s === %s\n", pfx, txt ? txt : "?");
		free(txt);
	}
	print_meta_diff(pfx, s, meta);
	free(pfx);
	free(key);
	fflush(stdout);
	return end;
}

/* --- the commands ----------------------------------------------------------------- */

enum {
	OPT_SOURCE = 256,
	OPT_COLOR,
	OPT_ONLY_NEW,
	OPT_ONLY_ONE,
	OPT_TERSE,
	OPT_DATA,
	OPT_JSON,
	OPT_FILTER, /* client string filters: index into filter_keys */
};

static const char *const filter_keys[][2] = {
    {"mx-addr", "mx_addr"},	    {"mx-host", "mx_host"},
    {"domain", "domain"},	    {"routing-domain", "routing_domain"},
    {"campaign", "campaign"},	    {"tenant", "tenant"},
    {"egress-pool", "egress_pool"}, {"egress-source", "egress_source"},
    {"mail-from", "mail_from"},	    {"rcpt-to", "rcpt_to"},
    {"ready-queue", "ready_queue"},
};
#define NFILTERS (sizeof(filter_keys) / sizeof(filter_keys[0]))

static void add_list(json_t *req, const char *key, const char *v)
{
	json_t *a = json_object_get(req, key);
	if (!a) {
		a = json_array();
		json_object_set_new(req, key, a);
	}
	json_array_append_new(a, json_string(v));
}

static void parse_opts(int argc, char **argv, struct trace_opts *o, void (*help)(void))
{
	struct option opts[8 + NFILTERS + 1];
	memset(opts, 0, sizeof(opts));
	static const struct option base[] = {
	    {"help", no_argument, NULL, 'h'},
	    {"source", required_argument, NULL, OPT_SOURCE},
	    {"color", required_argument, NULL, OPT_COLOR},
	    {"only-new", no_argument, NULL, OPT_ONLY_NEW},
	    {"only-one", no_argument, NULL, OPT_ONLY_ONE},
	    {"terse", no_argument, NULL, OPT_TERSE},
	    {"data", no_argument, NULL, OPT_DATA},
	    {"json", no_argument, NULL, OPT_JSON},
	};
	size_t n = sizeof(base) / sizeof(base[0]);
	memcpy(opts, base, sizeof(base));
	for (size_t i = 0; o->client && i < NFILTERS; i++)
		opts[n++] = (struct option){filter_keys[i][0], required_argument, NULL,
					    OPT_FILTER + (int)i};
	const char *color = "tty";
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == 'h') {
			help();
			exit(0);
		} else if (c == OPT_SOURCE) {
			add_list(o->request, "source_addr", optarg);
		} else if (c == OPT_COLOR) {
			color = optarg;
		} else if (c == OPT_ONLY_NEW) {
			o->only_new = 1;
		} else if (c == OPT_ONLY_ONE) {
			o->only_one = 1;
		} else if (c == OPT_TERSE) {
			o->terse = 1;
		} else if (c == OPT_DATA) {
			o->data = 1;
		} else if (c == OPT_JSON) {
			o->json = 1;
		} else if (c >= OPT_FILTER && c < OPT_FILTER + (int)NFILTERS) {
			add_list(o->request, filter_keys[c - OPT_FILTER][1], optarg);
		} else {
			tdie("invalid option '%s' (see kcli %s --help)", argv[optind - 1], argv[0]);
		}
	}
	if (optind != argc)
		tdie("%s: unexpected argument '%s'", argv[0], argv[optind]);
	if (strcmp(color, "tty") == 0)
		o->color = isatty(1);
	else if (strcmp(color, "yes") == 0)
		o->color = 1;
	else if (strcmp(color, "no") == 0)
		o->color = 0;
	else
		tdie("--color: expected tty, yes or no, not '%s'", color);
	if (o->terse)
		json_object_set_new(o->request, "terse", json_true());
	if (o->data)
		json_object_set_new(o->request, "data", json_true());
}

int kcli_trace_smtp(int argc, char **argv, const char *endpoint, int client, void (*help)(void))
{
	struct trace_opts o = {.client = client, .request = json_object()};
	parse_opts(argc, argv, &o, help);
	struct ws_client c;
	ws_connect(&c, endpoint,
		   client ? "/api/admin/trace-smtp-client/v1" : "/api/admin/trace-smtp-server/v1");
	char *req = json_dumps(o.request, JSON_COMPACT);
	ws_client_send(&c, WS_OP_TEXT, req, strlen(req));
	free(req);
	struct seen *seen = NULL;
	char *wanted = NULL, *text;
	while ((text = ws_next_text(&c))) {
		json_error_t jerr;
		json_t *ev = json_loads(text, 0, &jerr);
		if (!ev)
			tdie("kumod sent an event that is not JSON: %s", jerr.text);
		int end;
		if (o.json) {
			/* --only-one: the first session seen, then only its events */
			char *key = conn_key(&o, json_object_get(ev, "conn_meta"));
			if (o.only_one && *key && !wanted)
				wanted = xstrdup(key);
			int mine = !o.only_one || !*key || strcmp(key, wanted) == 0;
			if (mine) {
				puts(text);
				fflush(stdout);
			}
			json_t *p = json_object_get(ev, "payload");
			end = o.only_one && *key && mine && json_is_string(p) &&
			      strcmp(json_string_value(p), "Closed") == 0;
			free(key);
		} else {
			end = print_event(&o, ev, &seen, &wanted);
		}
		json_decref(ev);
		free(text);
		if (end) {
			ws_client_send(&c, WS_OP_CLOSE, "\x03\xe8", 2);
			break;
		}
	}
	close(c.fd);
	while (seen) {
		struct seen *n = seen->next;
		free(seen->key);
		json_decref(seen->meta);
		free(seen);
		seen = n;
	}
	free(wanted);
	buf_free(&c.in);
	json_decref(o.request);
	return 0;
}
