/* SPDX-License-Identifier: Apache-2.0 */
/* kcli: the admin command line over kumod's HTTP API (libcurl client). */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <jansson.h>

#include "base/buf.h"
#include "base/xalloc.h"
#include "kcli.h"

#define KCLI_DEFAULT_ENDPOINT "http://127.0.0.1:8000"

static const char *endpoint;

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("kcli: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

/* --- HTTP ---------------------------------------------------------------------- */

static size_t write_cb(char *p, size_t size, size_t n, void *ctx)
{
	buf_append(ctx, p, size * n);
	return size * n;
}

/* Performs one request; returns the HTTP status and fills body. Transport
 * errors end the program with one line. */
static long http_call(const char *method, const char *path, const char *json_body, struct buf *body)
{
	CURL *c = curl_easy_init();
	if (!c)
		die("cannot initialise libcurl");
	char *url = malloc(strlen(endpoint) + strlen(path) + 2);
	if (!url)
		die("out of memory");
	size_t el = strlen(endpoint);
	while (el && endpoint[el - 1] == '/')
		el--;
	sprintf(url, "%.*s%s", (int)el, endpoint, path);
	struct curl_slist *hdrs = NULL;
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "kcli/" KUMOD_VERSION);
	curl_easy_setopt(c, CURLOPT_NETRC, (long)CURL_NETRC_OPTIONAL);
	if (json_body) {
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
		hdrs = curl_slist_append(hdrs, "Expect:");
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, json_body);
	}
	CURLcode rc = curl_easy_perform(c);
	long status = 0;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(c);
	if (rc != CURLE_OK)
		die("%s %s: %s", method, url, curl_easy_strerror(rc));
	free(url);
	buf_cstr(body);
	return status;
}

/* The response as JSON, or the program ends with the server's error text.
 * req (may be NULL) is consumed. */
static json_t *api_json(const char *method, const char *path, json_t *req)
{
	char *text = req ? json_dumps(req, JSON_COMPACT) : NULL;
	json_decref(req);
	struct buf body;
	buf_init(&body);
	long status = http_call(method, path, text, &body);
	free(text);
	json_error_t jerr;
	json_t *j = json_loadb(body.data ? body.data : "", body.len, 0, &jerr);
	if (status != 200) {
		json_t *e = json_object_get(j, "error");
		const char *why = json_is_string(e) ? json_string_value(e) : buf_cstr(&body);
		fprintf(stderr, "kcli: %s %s: HTTP %ld: %.*s\n", method, path, status,
			(int)strcspn(why, "\n"), why);
		exit(1);
	}
	if (!j)
		die("%s %s: response is not JSON: %s", method, path, jerr.text);
	buf_free(&body);
	return j;
}

static void print_json(json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
	puts(s);
	free(s);
}

/* --- commands ------------------------------------------------------------------ */

struct command {
	const char *name;
	const char *summary; /* one line for `kcli --help` */
	const char *usage;
	const char *help;
	int (*run)(int argc, char **argv);
};

static const struct command *current;

static void usage_command(FILE *out, const struct command *c)
{
	fprintf(out, "Usage: kcli [--endpoint URL] %s %s\n\n%s\n", c->name, c->usage, c->help);
}

/* getopt_long over a subcommand's arguments; --help prints its usage. */
static int sub_getopt(int argc, char **argv, const struct option *opts, int *json)
{
	int c = getopt_long(argc, argv, "h", opts, NULL);
	if (c == 'h') {
		usage_command(stdout, current);
		exit(0);
	}
	if (c == 'j') {
		*json = 1;
		return sub_getopt(argc, argv, opts, json);
	}
	if (c == '?' || c == ':')
		die("%s: invalid option '%s' (see kcli %s --help)", current->name, argv[optind - 1],
		    current->name);
	return c;
}

static int cmd_set_log_filter(int argc, char **argv)
{
	static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {0}};
	int json = 0;
	while (sub_getopt(argc, argv, opts, &json) != -1)
		;
	if (optind != argc - 1)
		die("set-log-filter: expected one FILTER argument (see kcli set-log-filter "
		    "--help)");
	json_t *r = api_json("POST", "/api/admin/set_diagnostic_log_filter/v1",
			     json_pack("{s:s}", "filter", argv[optind]));
	json_decref(r);
	printf("log filter set to '%s'\n", argv[optind]);
	return 0;
}

static int cmd_logs(int argc, char **argv)
{
	static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {0}};
	int json = 0;
	while (sub_getopt(argc, argv, opts, &json) != -1)
		;
	return kcli_logs(argc - optind, argv + optind);
}

struct ready_row {
	char *site;
	double d, t, c, q;
};

static struct ready_row *row_get(struct ready_row **rows, size_t *n, const char *site)
{
	for (size_t i = 0; i < *n; i++)
		if (strcmp((*rows)[i].site, site) == 0)
			return &(*rows)[i];
	*rows = realloc(*rows, (*n + 1) * sizeof(**rows));
	if (!*rows)
		die("out of memory");
	struct ready_row *r = &(*rows)[(*n)++];
	memset(r, 0, sizeof(*r));
	r->site = strdup(site);
	return r;
}

/* Adds metrics.json value.service["smtp_client:<site>"] into each row. */
static void rows_add(json_t *m, const char *metric, size_t off, struct ready_row **rows, size_t *n)
{
	json_t *svc =
	    json_object_get(json_object_get(json_object_get(m, metric), "value"), "service");
	const char *k;
	json_t *v;
	json_object_foreach(svc, k, v)
	{
		if (strncmp(k, "smtp_client:", 12) != 0 || !json_is_number(v))
			continue;
		struct ready_row *r = row_get(rows, n, k + 12);
		*(double *)((char *)r + off) += json_number_value(v);
	}
}

static int by_volume;

static int row_cmp(const void *a, const void *b)
{
	const struct ready_row *x = a, *y = b;
	double vx = x->d + x->t + x->c + x->q, vy = y->d + y->t + y->c + y->q;
	if (by_volume && vx != vy)
		return vx > vy ? -1 : 1;
	return strcmp(x->site, y->site);
}

struct sched_row {
	const char *name;
	double count;
};

static int sched_cmp(const void *a, const void *b)
{
	const struct sched_row *x = a, *y = b;
	if (by_volume && x->count != y->count)
		return x->count > y->count ? -1 : 1;
	return strcmp(x->name, y->name);
}

static void summary_print(struct ready_row *rows, size_t n, struct sched_row *s, size_t ns,
			  int json)
{
	if (json) {
		json_t *ready = json_array(), *sched = json_array();
		for (size_t i = 0; i < n; i++)
			json_array_append_new(
			    ready, json_pack("{s:s, s:f, s:f, s:f, s:f}", "site", rows[i].site,
					     "delivered", rows[i].d, "transfail", rows[i].t,
					     "connections", rows[i].c, "queued", rows[i].q));
		for (size_t i = 0; i < ns; i++)
			json_array_append_new(sched, json_pack("{s:s, s:f}", "queue", s[i].name,
							       "count", s[i].count));
		json_t *j = json_pack("{s:o, s:o}", "ready", ready, "scheduled", sched);
		print_json(j);
		json_decref(j);
		return;
	}
	int w = 4;
	for (size_t i = 0; i < n; i++)
		w = (int)strlen(rows[i].site) > w ? (int)strlen(rows[i].site) : w;
	printf("%-*s %10s %10s %6s %10s\n", w, "SITE", "D", "T", "C", "Q");
	for (size_t i = 0; i < n; i++)
		printf("%-*s %10.0f %10.0f %6.0f %10.0f\n", w, rows[i].site, rows[i].d, rows[i].t,
		       rows[i].c, rows[i].q);
	w = 15;
	for (size_t i = 0; i < ns; i++)
		w = (int)strlen(s[i].name) > w ? (int)strlen(s[i].name) : w;
	printf("\n%-*s %10s\n", w, "SCHEDULED QUEUE", "COUNT");
	for (size_t i = 0; i < ns; i++)
		printf("%-*s %10.0f\n", w, s[i].name, s[i].count);
}

static void url_append_encoded(struct buf *b, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    strchr("-_.~@", c))
			buf_appendc(b, (char)c);
		else
			buf_printf(b, "%%%02X", c);
	}
}

/* The domain (or routing domain) of a scheduled queue name is domain,
 * case-insensitively: campaign:tenant@domain!routing_domain. */
static int sched_queue_for(const char *queue, const char *domain)
{
	const char *at = strchr(queue, '@');
	const char *d = at ? at + 1 : queue;
	const char *bang = strchr(d, '!');
	size_t dl = bang ? (size_t)(bang - d) : strlen(d), want = strlen(domain);
	if (dl == want && strncasecmp(d, domain, want) == 0)
		return 1;
	return bang && strcasecmp(bang + 1, domain) == 0;
}

/* Sites (as in smtp_client:<site>) of the ready queues holding or sending
 * messages of scheduled queues for domain: one inspect-ready-q per ready
 * queue. */
static json_t *sites_for_domain(const char *domain)
{
	json_t *sites = json_object();
	json_t *st = api_json("GET", "/api/admin/ready-q-states/v1", NULL);
	const char *name;
	json_t *v;
	json_object_foreach(json_object_get(st, "states_by_ready_queue"), name, v)
	{
		struct buf path;
		buf_init(&path);
		buf_appends(&path, "/api/admin/inspect-ready-q/v1?queue_name=");
		url_append_encoded(&path, name);
		json_t *r = api_json("GET", buf_cstr(&path), NULL);
		buf_free(&path);
		size_t i;
		json_t *q;
		json_array_foreach(json_object_get(r, "scheduled_queue_names"), i, q)
		{
			if (sched_queue_for(json_string_value(q), domain))
				json_object_set_new(
				    sites, json_string_value(json_object_get(r, "site_name")),
				    json_true());
		}
		json_decref(r);
	}
	json_decref(st);
	return sites;
}

static int cmd_queue_summary(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"help", no_argument, NULL, 'h'},	      {"json", no_argument, NULL, 'j'},
	    {"limit", required_argument, NULL, 'l'},  {"by-volume", no_argument, NULL, 'v'},
	    {"domain", required_argument, NULL, 'd'}, {0}};
	int json = 0, c;
	long limit = -1;
	const char *domain = NULL;
	while ((c = sub_getopt(argc, argv, opts, &json)) != -1) {
		if (c == 'v')
			by_volume = 1;
		else if (c == 'd')
			domain = optarg;
		else if (c == 'l' && (limit = strtol(optarg, NULL, 10)) < 0)
			die("queue-summary: --limit must not be negative");
	}
	if (optind != argc)
		die("queue-summary: unexpected argument '%s'", argv[optind]);
	json_t *m = api_json("GET", "/metrics.json", NULL);
	struct ready_row *rows = NULL;
	size_t n = 0;
	rows_add(m, "total_messages_delivered", offsetof(struct ready_row, d), &rows, &n);
	rows_add(m, "total_messages_transfail", offsetof(struct ready_row, t), &rows, &n);
	rows_add(m, "connection_count", offsetof(struct ready_row, c), &rows, &n);
	rows_add(m, "ready_count", offsetof(struct ready_row, q), &rows, &n);
	json_t *sq = json_object_get(
	    json_object_get(json_object_get(m, "scheduled_count"), "value"), "queue");
	struct sched_row *s = calloc(json_object_size(sq) + 1, sizeof(*s));
	size_t ns = 0;
	const char *k;
	json_t *v;
	json_object_foreach(sq, k, v)
	{
		s[ns++] = (struct sched_row){k, json_number_value(v)};
	}
	if (domain) {
		size_t keep = 0;
		for (size_t i = 0; i < ns; i++)
			if (sched_queue_for(s[i].name, domain))
				s[keep++] = s[i];
		ns = keep;
		json_t *sites = sites_for_domain(domain);
		keep = 0;
		for (size_t i = 0; i < n; i++) {
			if (json_object_get(sites, rows[i].site))
				rows[keep++] = rows[i];
			else
				free(rows[i].site);
		}
		n = keep;
		json_decref(sites);
	}
	qsort(rows, n, sizeof(*rows), row_cmp);
	qsort(s, ns, sizeof(*s), sched_cmp);
	if (limit >= 0) {
		n = n > (size_t)limit ? (size_t)limit : n;
		ns = ns > (size_t)limit ? (size_t)limit : ns;
	}
	summary_print(rows, n, s, ns, json);
	for (size_t i = 0; i < n; i++)
		free(rows[i].site);
	free(rows);
	free(s);
	json_decref(m);
	return 0;
}

static int cmp_key(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* {"<queue>": count, ...} as a table sorted by name, like queue-summary's. */
static void sched_table_print(json_t *all)
{
	size_t n = json_object_size(all), i = 0;
	const char **names = xcalloc(n ? n : 1, sizeof(*names));
	const char *k;
	json_t *v;
	int w = 15;
	json_object_foreach(all, k, v)
	{
		names[i++] = k;
		w = (int)strlen(k) > w ? (int)strlen(k) : w;
	}
	qsort(names, n, sizeof(*names), cmp_key);
	printf("%-*s %10s\n", w, "SCHEDULED QUEUE", "COUNT");
	for (i = 0; i < n; i++)
		printf("%-*s %10lld\n", w, names[i],
		       (long long)json_integer_value(json_object_get(all, names[i])));
	free(names);
}

static int cmd_inspect_sched_q(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"help", no_argument, NULL, 'h'}, {"json", no_argument, NULL, 'j'}, {0}};
	int json = 0;
	while (sub_getopt(argc, argv, opts, &json) != -1)
		;
	if (optind < argc - 1)
		die("inspect-sched-q: expected at most one QUEUE argument");
	struct buf path;
	buf_init(&path);
	buf_appends(&path, "/api/admin/inspect-sched-q/v1");
	if (optind == argc - 1) {
		buf_appends(&path, "?queue_name=");
		url_append_encoded(&path, argv[optind]);
	}
	json_t *r = api_json("GET", buf_cstr(&path), NULL);
	buf_free(&path);
	if (json) {
		print_json(r);
	} else if (optind == argc) {
		sched_table_print(json_object_get(r, "scheduled_queues"));
	} else {
		json_t *next = json_object_get(r, "next_due");
		printf("queue %s: %lld scheduled",
		       json_string_value(json_object_get(r, "queue_name")),
		       (long long)json_integer_value(json_object_get(r, "num_scheduled")));
		if (json_is_number(next))
			printf(", next due in %.0fs",
			       json_number_value(next) -
				   json_number_value(json_object_get(r, "now")));
		putchar('\n');
	}
	json_decref(r);
	return 0;
}

static const char *jstr(json_t *o, const char *k)
{
	const char *v = json_string_value(json_object_get(o, k));
	return v ? v : "";
}

static long long jint(json_t *o, const char *k)
{
	return (long long)json_integer_value(json_object_get(o, k));
}

static int cmd_inspect_ready_q(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"help", no_argument, NULL, 'h'},	     {"json", no_argument, NULL, 'j'},
	    {"connections", no_argument, NULL, 'c'}, {"config", no_argument, NULL, 'g'},
	    {"sched-q", no_argument, NULL, 's'},     {0}};
	int json = 0, c, conns = 0, config = 0, sched = 0;
	while ((c = sub_getopt(argc, argv, opts, &json)) != -1) {
		conns |= c == 'c';
		config |= c == 'g';
		sched |= c == 's';
	}
	if (optind != argc - 1)
		die("inspect-ready-q: expected one READY_QUEUE argument (see ready-q-states)");
	struct buf path;
	buf_init(&path);
	buf_appends(&path, "/api/admin/inspect-ready-q/v1?queue_name=");
	url_append_encoded(&path, argv[optind]);
	json_t *r = api_json("GET", buf_cstr(&path), NULL);
	buf_free(&path);
	if (json) {
		print_json(r);
		json_decref(r);
		return 0;
	}
	json_t *st = json_object_get(r, "state"), *pc = json_object_get(r, "path_config");
	printf("ready queue %s (source %s, pool %s)\n", jstr(r, "queue_name"),
	       jstr(r, "egress_source"), jstr(r, "egress_pool"));
	printf(
	    "  ready %lld, connections %lld/%lld%s%s%s%s\n", jint(st, "ready_count"),
	    jint(st, "connection_count"), jint(pc, "connection_limit"),
	    json_is_true(json_object_get(st, "suspended")) ? ", suspended" : "",
	    json_is_true(json_object_get(st, "connection_limited")) ? ", connection limited" : "",
	    json_is_true(json_object_get(st, "connection_rate_throttled"))
		? ", connection rate throttled"
		: "",
	    json_is_true(json_object_get(st, "message_rate_throttled")) ? ", message rate throttled"
									: "");
	json_t *cn = json_object_get(r, "counters");
	printf("  delivered %lld, transient failures %lld, failed %lld\n", jint(cn, "delivered"),
	       jint(cn, "transfail"), jint(cn, "failed"));
	size_t i;
	json_t *v;
	json_array_foreach(json_object_get(r, "mx"), i, v)
	    printf("  mx %s (%s)\n", jstr(v, "host"), jstr(v, "addr"));
	if (config) {
		printf("config:\n");
		const char *k;
		json_object_foreach(pc, k, v)
		{
			char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
			printf("  %s = %s\n", k, t ? t : "?");
			free(t);
		}
	}
	if (sched) {
		printf("scheduled queues feeding it:\n");
		json_array_foreach(json_object_get(r, "scheduled_queue_names"), i, v)
		    printf("  %s\n", json_string_value(v));
	}
	if (conns) {
		printf("connections:\n");
		json_array_foreach(json_object_get(r, "dispatchers"), i, v)
		{
			printf(
			    "  session %lld: %s for %.1fs, %lld delivered on this connection%s%s\n",
			    jint(v, "session_id"), jstr(v, "phase"),
			    json_number_value(json_object_get(v, "time_in_current_phase")),
			    jint(v, "delivered_this_connection"), *jstr(v, "detail") ? "; " : "",
			    jstr(v, "detail"));
		}
	}
	json_decref(r);
	return 0;
}

static int cmd_ready_q_states(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"help", no_argument, NULL, 'h'}, {"json", no_argument, NULL, 'j'}, {0}};
	int json = 0;
	while (sub_getopt(argc, argv, opts, &json) != -1)
		;
	if (optind != argc)
		die("ready-q-states: unexpected argument '%s'", argv[optind]);
	json_t *r = api_json("GET", "/api/admin/ready-q-states/v1", NULL);
	if (json) {
		print_json(r);
	} else {
		json_t *st = json_object_get(r, "states_by_ready_queue");
		const char *k;
		json_t *v;
		printf("%-50s %8s %6s %6s %s\n", "READY QUEUE", "READY", "CONN", "LIMIT", "STATE");
		json_object_foreach(st, k, v)
		{
			int limited = json_is_true(json_object_get(v, "connection_limited"));
			int full = json_is_true(json_object_get(v, "ready_full"));
			int susp = json_is_true(json_object_get(v, "suspended"));
			printf(
			    "%-50s %8lld %6lld %6lld %s\n", k,
			    (long long)json_integer_value(json_object_get(v, "ready_count")),
			    (long long)json_integer_value(json_object_get(v, "connection_count")),
			    (long long)json_integer_value(json_object_get(v, "connection_limit")),
			    susp      ? "suspended"
			    : full    ? "ready_full"
			    : limited ? "connection_limited"
				      : "ok");
		}
	}
	json_decref(r);
	return 0;
}

static char *read_file(const char *path)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	if (!f)
		die("inject: cannot open '%s': %s", path, strerror(errno));
	struct buf b;
	buf_init(&b);
	char tmp[65536];
	size_t n;
	while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
		buf_append(&b, tmp, n);
	if (f != stdin)
		fclose(f);
	char *s = strdup(buf_cstr(&b));
	buf_free(&b);
	return s;
}

static int cmd_inject(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"help", no_argument, NULL, 'h'},	       {"json", no_argument, NULL, 'j'},
	    {"from", required_argument, NULL, 'f'},    {"to", required_argument, NULL, 't'},
	    {"subject", required_argument, NULL, 's'}, {"text", required_argument, NULL, 'x'},
	    {"file", required_argument, NULL, 'F'},    {0}};
	int json = 0, c;
	const char *from = NULL, *subject = NULL, *text = NULL, *file = NULL;
	json_t *rcpts = json_array();
	while ((c = sub_getopt(argc, argv, opts, &json)) != -1) {
		if (c == 'f')
			from = optarg;
		else if (c == 't')
			json_array_append_new(rcpts, json_pack("{s:s}", "email", optarg));
		else if (c == 's')
			subject = optarg;
		else if (c == 'x')
			text = optarg;
		else if (c == 'F')
			file = optarg;
	}
	if (optind != argc)
		die("inject: unexpected argument '%s'", argv[optind]);
	if (!from || !json_array_size(rcpts))
		die("inject: --from and at least one --to are required (see kcli inject --help)");
	if (!!file == !!text)
		die("inject: give exactly one of --file or --text");
	json_t *content;
	if (file) {
		char *raw = read_file(file);
		content = json_string(raw);
		free(raw);
		if (!content)
			die("inject: '%s' is not valid UTF-8", file);
	} else {
		content =
		    json_pack("{s:s, s:s}", "text_body", text, "subject", subject ? subject : "");
		json_object_set_new(content, "from", json_pack("{s:s}", "email", from));
	}
	json_t *req = json_pack("{s:s, s:o, s:o}", "envelope_sender", from, "content", content,
				"recipients", rcpts);
	json_t *r = api_json("POST", "/api/inject/v1", req);
	if (json) {
		print_json(r);
	} else {
		printf("injected: %lld ok, %lld failed\n",
		       (long long)json_integer_value(json_object_get(r, "success_count")),
		       (long long)json_integer_value(json_object_get(r, "fail_count")));
		size_t i;
		json_t *e;
		json_array_foreach(json_object_get(r, "errors"), i, e)
		{
			printf("  %s\n", json_string_value(e));
		}
	}
	int failed = json_integer_value(json_object_get(r, "fail_count")) > 0;
	json_decref(r);
	return failed;
}

/* Parses a subcommand's options into a JSON request body: each option
 * with an argument becomes a string field named like the option with '-'
 * as '_' (--routing-domain R: "routing_domain": "R"). */
static json_t *options_body(int argc, char **argv, const struct option *opts, int *json)
{
	json_t *body = json_object();
	int c;
	while ((c = sub_getopt(argc, argv, opts, json)) != -1) {
		for (const struct option *o = opts; o->name; o++) {
			if (o->val != c || o->has_arg != required_argument)
				continue;
			char key[64];
			snprintf(key, sizeof(key), "%s", o->name);
			for (char *p = key; *p; p++)
				*p = *p == '-' ? '_' : *p;
			json_object_set_new(body, key, json_string(optarg));
		}
	}
	if (optind != argc)
		die("%s: unexpected argument '%s'", current->name, argv[optind]);
	return body;
}

static int cmd_bounce(int argc, char **argv)
{
	static const struct option opts[] = {{"help", no_argument, NULL, 'h'},
					     {"json", no_argument, NULL, 'j'},
					     {"domain", required_argument, NULL, 'd'},
					     {"campaign", required_argument, NULL, 'c'},
					     {"tenant", required_argument, NULL, 't'},
					     {"queue", required_argument, NULL, 'q'},
					     {"reason", required_argument, NULL, 'r'},
					     {"duration", required_argument, NULL, 'D'},
					     {"routing-domain", required_argument, NULL, 'R'},
					     {0}};
	int json = 0;
	json_t *body = options_body(argc, argv, opts, &json);
	if (!json_object_get(body, "reason"))
		die("bounce: --reason is required (see kcli bounce --help)");
	if (json_object_size(body) == 1 ||
	    (json_object_size(body) == 2 && json_object_get(body, "duration")))
		die("bounce: refusing to bounce everything; give --domain, --campaign, --tenant, "
		    "--queue or --routing-domain");
	json_t *r = api_json("POST", "/api/admin/bounce/v1", body);
	if (json)
		print_json(r);
	else
		printf("bounce entry %lld: %lld messages bounced\n",
		       (long long)json_integer_value(json_object_get(r, "id")),
		       (long long)json_integer_value(json_object_get(r, "total_bounced")));
	json_decref(r);
	return 0;
}

static int cmd_bounce_list(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"help", no_argument, NULL, 'h'}, {"json", no_argument, NULL, 'j'}, {0}};
	int json = 0;
	while (sub_getopt(argc, argv, opts, &json) != -1)
		;
	json_t *r = api_json("GET", "/api/admin/bounce/v1", NULL);
	if (json) {
		print_json(r);
	} else {
		size_t i;
		json_t *e;
		printf("%-6s %-30s %-10s %s\n", "ID", "MATCH", "BOUNCED", "REASON");
		json_array_foreach(r, i, e)
		{
			char match[256] = "";
			static const char *const keys[] = {"queue", "domain", "campaign", "tenant",
							   "routing_domain"};
			for (size_t k = 0; k < 5; k++) {
				const char *v = json_string_value(json_object_get(e, keys[k]));
				if (v)
					snprintf(match + strlen(match),
						 sizeof(match) - strlen(match), "%s%s=%s",
						 match[0] ? "," : "", keys[k], v);
			}
			printf("%-6lld %-30s %-10lld %s\n",
			       (long long)json_integer_value(json_object_get(e, "id")), match,
			       (long long)json_integer_value(json_object_get(e, "bounced")),
			       json_string_value(json_object_get(e, "reason")));
		}
	}
	json_decref(r);
	return 0;
}

static int cmd_bounce_cancel(int argc, char **argv)
{
	static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {0}};
	int json = 0;
	while (sub_getopt(argc, argv, opts, &json) != -1)
		;
	char *end;
	if (optind != argc - 1 || strtoll(argv[optind], &end, 10) <= 0 || *end)
		die("bounce-cancel: expected one entry ID (see kcli bounce-list)");
	json_t *r = api_json("DELETE", "/api/admin/bounce/v1",
			     json_pack("{s:I}", "id", (json_int_t)strtoll(argv[optind], NULL, 10)));
	json_decref(r);
	return 0;
}

/* --- suspensions ------------------------------------------------------------------- */

/* POSTs a suspend body built from the options; prints the new entry's id. */
static int suspend_post(const char *path, json_t *body, int json)
{
	json_t *r = api_json("POST", path, body);
	if (json)
		print_json(r);
	else
		printf("suspension %s\n", json_string_value(json_object_get(r, "id")));
	json_decref(r);
	return 0;
}

static int cmd_suspend(int argc, char **argv)
{
	static const struct option opts[] = {{"help", no_argument, NULL, 'h'},
					     {"json", no_argument, NULL, 'j'},
					     {"domain", required_argument, NULL, 'd'},
					     {"campaign", required_argument, NULL, 'c'},
					     {"tenant", required_argument, NULL, 't'},
					     {"reason", required_argument, NULL, 'r'},
					     {"duration", required_argument, NULL, 'D'},
					     {"expires", required_argument, NULL, 'E'},
					     {0}};
	int json = 0;
	json_t *body = options_body(argc, argv, opts, &json);
	if (!json_object_get(body, "reason"))
		die("suspend: --reason is required (see kcli suspend --help)");
	if (!json_object_get(body, "domain") && !json_object_get(body, "campaign") &&
	    !json_object_get(body, "tenant"))
		die("suspend: refusing to suspend everything; give --domain, --campaign or "
		    "--tenant");
	return suspend_post("/api/admin/suspend/v1", body, json);
}

static int cmd_suspend_ready_q(int argc, char **argv)
{
	static const struct option opts[] = {{"help", no_argument, NULL, 'h'},
					     {"json", no_argument, NULL, 'j'},
					     {"name", required_argument, NULL, 'n'},
					     {"reason", required_argument, NULL, 'r'},
					     {"duration", required_argument, NULL, 'D'},
					     {"expires", required_argument, NULL, 'E'},
					     {0}};
	int json = 0;
	json_t *body = options_body(argc, argv, opts, &json);
	if (!json_object_get(body, "name"))
		die("suspend-ready-q: --name is required (see kcli ready-q-states for names)");
	if (!json_object_get(body, "reason"))
		die("suspend-ready-q: --reason is required (see kcli suspend-ready-q --help)");
	return suspend_post("/api/admin/suspend-ready-q/v1", body, json);
}

/* Lists entries from path; match_keys are the criteria shown in MATCH. */
static int suspend_list(int argc, char **argv, const char *path, const char *const *match_keys)
{
	static const struct option opts[] = {
	    {"help", no_argument, NULL, 'h'}, {"json", no_argument, NULL, 'j'}, {0}};
	int json = 0;
	while (sub_getopt(argc, argv, opts, &json) != -1)
		;
	if (optind != argc)
		die("%s: unexpected argument '%s'", current->name, argv[optind]);
	json_t *r = api_json("GET", path, NULL);
	if (json) {
		print_json(r);
		json_decref(r);
		return 0;
	}
	size_t i;
	json_t *e;
	printf("%-36s %-30s %-12s %s\n", "ID", "MATCH", "TIME LEFT", "REASON");
	json_array_foreach(r, i, e)
	{
		char match[512] = "";
		for (size_t k = 0; match_keys[k]; k++) {
			const char *v = json_string_value(json_object_get(e, match_keys[k]));
			if (v)
				snprintf(match + strlen(match), sizeof(match) - strlen(match),
					 "%s%s=%s", match[0] ? "," : "", match_keys[k], v);
		}
		printf("%-36s %-30s %-12s %s\n", json_string_value(json_object_get(e, "id")),
		       match[0] ? match : "*", json_string_value(json_object_get(e, "duration")),
		       json_string_value(json_object_get(e, "reason")));
	}
	json_decref(r);
	return 0;
}

static int cmd_suspend_list(int argc, char **argv)
{
	static const char *const keys[] = {"domain", "tenant", "campaign", NULL};
	return suspend_list(argc, argv, "/api/admin/suspend/v1", keys);
}

static int cmd_suspend_ready_q_list(int argc, char **argv)
{
	static const char *const keys[] = {"name", NULL};
	return suspend_list(argc, argv, "/api/admin/suspend-ready-q/v1", keys);
}

/* kumod's own: the live effects of traffic shaping automation rules. */
static int cmd_shaping_automation(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"help", no_argument, NULL, 'h'}, {"json", no_argument, NULL, 'j'}, {0}};
	int json = 0;
	while (sub_getopt(argc, argv, opts, &json) != -1)
		;
	if (optind != argc)
		die("%s: unexpected argument '%s'", current->name, argv[optind]);
	json_t *r = api_json("GET", "/api/admin/shaping-automation/v1", NULL);
	if (json) {
		print_json(r);
		json_decref(r);
		return 0;
	}
	size_t i;
	json_t *e;
	printf("%-16s %-44s %-24s %-40s %s\n", "ACTION", "SCOPE", "EXPIRES", "EFFECT", "RULE");
	json_array_foreach(r, i, e)
	{
		printf("%-16s %-44s %-24s %-40s %s\n",
		       json_string_value(json_object_get(e, "action")),
		       json_string_value(json_object_get(e, "scope")),
		       json_string_value(json_object_get(e, "expires")),
		       json_string_value(json_object_get(e, "effect")),
		       json_string_value(json_object_get(e, "rule")));
	}
	json_decref(r);
	return 0;
}

/* DELETE {id} at path; --id ID or a lone ID argument. */
static int suspend_cancel(int argc, char **argv, const char *path)
{
	static const struct option opts[] = {{"help", no_argument, NULL, 'h'},
					     {"json", no_argument, NULL, 'j'},
					     {"id", required_argument, NULL, 'i'},
					     {0}};
	int json = 0, c;
	const char *id = NULL;
	while ((c = sub_getopt(argc, argv, opts, &json)) != -1)
		if (c == 'i')
			id = optarg;
	if (!id && optind == argc - 1)
		id = argv[optind++];
	if (!id || optind != argc)
		die("%s: expected one suspension id, --id ID (see kcli %s-list)", current->name,
		    strcmp(current->name, "suspend-cancel") == 0 ? "suspend" : "suspend-ready-q");
	json_t *r = api_json("DELETE", path, json_pack("{s:s}", "id", id));
	if (json)
		print_json(r);
	else
		printf("suspension %s cancelled\n", id);
	json_decref(r);
	return 0;
}

static int cmd_suspend_cancel(int argc, char **argv)
{
	return suspend_cancel(argc, argv, "/api/admin/suspend/v1");
}

static int cmd_suspend_ready_q_cancel(int argc, char **argv)
{
	return suspend_cancel(argc, argv, "/api/admin/suspend-ready-q/v1");
}

/* Microseconds as "850µs", "12.3ms", "4.20s", "3m05s". */
static void fmt_us(long long us, char *out, size_t n)
{
	if (us < 1000)
		snprintf(out, n, "%lldµs", us);
	else if (us < 1000000)
		snprintf(out, n, "%.1fms", (double)us / 1e3);
	else if (us < 60000000)
		snprintf(out, n, "%.2fs", (double)us / 1e6);
	else
		snprintf(out, n, "%lldm%02llds", us / 60000000, us / 1000000 % 60);
}

/* The message's story: one line per event with the time since the first
 * and since the previous event. */
static void timeline_print(json_t *r)
{
	json_t *tl = json_object_get(r, "timeline");
	/* dropped entries show as a "Dropped" row where they were */
	printf("\ntimeline%s:\n",
	       json_is_true(json_object_get(r, "timeline_finished")) ? " (message finished)" : "");
	printf("  %-27s %9s %9s  %-16s %s\n", "AT (UTC)", "ELAPSED", "+DELTA", "EVENT", "DETAIL");
	size_t i;
	json_t *e;
	json_array_foreach(tl, i, e)
	{
		char el[32], dl[32];
		fmt_us(json_integer_value(json_object_get(e, "elapsed_us")), el, sizeof(el));
		fmt_us(json_integer_value(json_object_get(e, "delta_us")), dl, sizeof(dl));
		/* "µ" is two bytes and one column */
		printf("  %-27s %*s %*s  %-16s %s\n", json_string_value(json_object_get(e, "at")),
		       9 + (strstr(el, "µ") != NULL), el, 9 + (strstr(dl, "µ") != NULL), dl,
		       json_string_value(json_object_get(e, "event")),
		       json_string_value(json_object_get(e, "detail")));
	}
}

static int cmd_inspect_message(int argc, char **argv)
{
	static const struct option opts[] = {{"help", no_argument, NULL, 'h'},
					     {"json", no_argument, NULL, 'j'},
					     {"want-body", no_argument, NULL, 'b'},
					     {"timeline", no_argument, NULL, 't'},
					     {0}};
	int json = 0, c, want_body = 0, timeline = 0;
	while ((c = sub_getopt(argc, argv, opts, &json)) != -1) { /* options may follow the ID */
		if (c == 'b')
			want_body = 1;
		else if (c == 't')
			timeline = 1;
	}
	if (optind != argc - 1)
		die("inspect-message: expected one message ID (32 hex digits)");
	const char *id = argv[optind];
	struct buf path;
	buf_init(&path);
	buf_appends(&path, "/api/admin/inspect-message/v1?id=");
	url_append_encoded(&path, id);
	buf_appends(&path, want_body ? "&want_body=true" : "&want_body=false");
	if (timeline)
		buf_appends(&path, "&timeline=true");
	json_t *r = api_json("GET", buf_cstr(&path), NULL);
	buf_free(&path);
	json_t *m = json_object_get(r, "message");
	if (json) {
		print_json(r);
	} else if (!json_is_object(m)) {
		printf("id:       %s\nstate:    finished (no longer queued)\n",
		       json_string_value(json_object_get(r, "id")));
	} else {
		printf("id:       %s\nqueue:    %s\nsender:   %s\n",
		       json_string_value(json_object_get(r, "id")),
		       json_string_value(json_object_get(m, "queue")),
		       json_string_value(json_object_get(m, "sender")));
		size_t i;
		json_t *v;
		json_array_foreach(json_object_get(m, "recipient"), i, v)
		{
			printf("to:       %s\n", json_string_value(v));
		}
		const char *due = json_string_value(json_object_get(m, "due"));
		printf("attempts: %lld\ndue:      %s\n",
		       (long long)json_integer_value(json_object_get(m, "num_attempts")),
		       due ? due : "(in a ready queue or being delivered)");
		char *meta = json_dumps(json_object_get(m, "meta"), JSON_COMPACT | JSON_SORT_KEYS);
		printf("meta:     %s\n", meta ? meta : "{}");
		free(meta);
		const char *data = json_string_value(json_object_get(m, "data"));
		if (data)
			printf("\n%s", data);
	}
	if (!json && timeline)
		timeline_print(r);
	json_decref(r);
	return 0;
}

static void trace_help(void)
{
	usage_command(stdout, current);
}

static int cmd_trace_smtp_server(int argc, char **argv)
{
	return kcli_trace_smtp(argc, argv, endpoint, 0, trace_help);
}

static int cmd_trace_smtp_client(int argc, char **argv)
{
	return kcli_trace_smtp(argc, argv, endpoint, 1, trace_help);
}

static const struct command commands[] = {
    {"set-log-filter", "replace kumod's diagnostic log filter", "FILTER",
     "Replaces kumod's diagnostic log filter (KUMOD_LOG syntax, e.g. 'kumod=debug').\n"
     "An invalid filter is refused and the old one stays in force.",
     cmd_set_log_filter},
    {"logs", "print the local log records, the open segment included", "[DIR|SEGMENT...]",
     "Prints every log record (one JSON object per line) of the segments in DIR\n"
     "(default " KCLI_LOGS_DEFAULT ", the log_dir of `make run`), oldest first. Unlike\n"
     "zstdcat it also reads the segment kumod is still writing (up to its last flush,\n"
     "about a second old) without an error. Needs no endpoint: pipe it to jq.",
     cmd_logs},
    {"queue-summary", "ready and scheduled queues with their counts",
     "[--by-volume] [--limit N] [--domain D] [--json]",
     "Summarises the queues from /metrics.json: ready queues per destination site with\n"
     "D delivered, T transient failures, C open connections, Q queued messages; then the\n"
     "scheduled queues with their message counts. Ordered by name, or by volume.\n"
     "--domain keeps the scheduled queues of that (routing) domain and the ready queues\n"
     "now holding or sending their messages.",
     cmd_queue_summary},
    {"inspect-sched-q", "one scheduled queue, or all of them", "[QUEUE] [--json]",
     "Shows one scheduled queue (count, next due time), or a table of every queue and\n"
     "its count without QUEUE.",
     cmd_inspect_sched_q},
    {"inspect-ready-q", "one ready queue: state, limits, MX, dispatchers",
     "READY_QUEUE [--connections] [--config] [--sched-q] [--json]",
     "Shows one ready queue (name as in ready-q-states): ready count, connections and\n"
     "limits, throttling and suspension, counters and MX hosts; --connections adds every\n"
     "dispatcher with its phase, --config the egress path configuration, --sched-q the\n"
     "scheduled queues whose messages it holds or is sending.",
     cmd_inspect_ready_q},
    {"ready-q-states", "ready queues with counts, connections and limits", "[--json]",
     "Lists the ready queues with ready count, connections and limits.", cmd_ready_q_states},
    {"inject", "inject a message through /api/inject/v1",
     "--from SENDER --to RCPT [--to RCPT...] (--file PATH|- | --text BODY "
     "[--subject S]) [--json]",
     "Injects a message through /api/inject/v1: a raw RFC 5322 file (or - for stdin), or\n"
     "a plain text body built into a message. Exits 1 when a recipient failed.",
     cmd_inject},
    {"bounce", "bounce matching queued messages (and later arrivals)",
     "--reason TEXT [--domain D] [--campaign C] [--tenant T] [--queue Q] "
     "[--routing-domain R] [--duration 5m] [--json]",
     "Bounces every queued message matching all the criteria now (AdminBounce records)\n"
     "and, for --duration (default 5m), every matching message that becomes due.",
     cmd_bounce},
    {"bounce-list", "list the live admin bounce entries", "[--json]",
     "Lists the live admin bounce entries.", cmd_bounce_list},
    {"bounce-cancel", "cancel an admin bounce entry", "ID", "Cancels an admin bounce entry.",
     cmd_bounce_cancel},
    {"suspend", "hold delivery from matching scheduled queues",
     "--reason TEXT [--domain D] [--campaign C] [--tenant T] [--duration 5m | --expires "
     "RFC3339] [--json]",
     "Suspends delivery from the matching scheduled queues: due messages are held\n"
     "(TransientFailure, no attempt counted) until the suspension is cancelled or\n"
     "expires (--duration, default 5m), then they are due at once. Not kept across a\n"
     "restart.",
     cmd_suspend},
    {"suspend-list", "list the scheduled-queue suspensions", "[--json]",
     "Lists the live scheduled-queue suspensions.", cmd_suspend_list},
    {"suspend-cancel", "cancel a scheduled-queue suspension", "--id ID [--json]",
     "Cancels a scheduled-queue suspension; its held messages become due now.", cmd_suspend_cancel},
    {"suspend-ready-q", "stop new deliveries from one ready queue",
     "--name READY_QUEUE --reason TEXT [--duration 5m | --expires RFC3339] [--json]",
     "Suspends a ready queue (name as in ready-q-states): no new connection or\n"
     "transaction starts, one in flight finishes; its messages stay queued and\n"
     "delivery resumes as soon as the suspension is cancelled or expires.",
     cmd_suspend_ready_q},
    {"suspend-ready-q-list", "list the ready-queue suspensions", "[--json]",
     "Lists the live ready-queue suspensions.", cmd_suspend_ready_q_list},
    {"suspend-ready-q-cancel", "cancel a ready-queue suspension", "--id ID [--json]",
     "Cancels a ready-queue suspension; delivery resumes at once.", cmd_suspend_ready_q_cancel},
    {"shaping-automation", "list the live effects of shaping automation rules", "[--json]",
     "Lists the live effects of traffic shaping automation rules (kumod's own, in-process: "
     "policy-extras.shaping): action, scope, expiry, effect, rule.",
     cmd_shaping_automation},
    {"inspect-message", "show a queued message (envelope, meta, body, timeline)",
     "ID [--want-body] [--timeline] [--json]",
     "Shows a queued message: envelope, meta, attempts, due time; --want-body adds\n"
     "its content. --timeline adds its whole story: every event from reception to\n"
     "its last outcome (policy, spool writes, queue moves, each delivery attempt\n"
     "with the peer's reply) with times since the first and the previous event;\n"
     "it also answers for one of the last 1024 finished messages.",
     cmd_inspect_message},
    {"trace-smtp-server", "live transcript of incoming SMTP sessions",
     "[--source CIDR...] [--terse] [--data] [--only-new] [--only-one] [--color tty|yes|no] "
     "[--json]",
     "Streams every incoming SMTP session as it happens (websocket\n"
     "/api/admin/trace-smtp-server/v1, KumoMTA's endpoint and events): connection, each\n"
     "line read (->) and reply written (<-), TLS handshake results, policy callbacks,\n"
     "AUTH outcomes and the message disposition. AUTH secrets are never sent: the AUTH\n"
     "line and its continuation lines arrive redacted. DATA is summarised (first line\n"
     "and size) unless --data. --source keeps sessions from those peers (repeatable);\n"
     "--only-new ignores sessions that began before; --only-one follows the first\n"
     "session and exits when it closes; --terse shortens multi-line reads; --json\n"
     "prints each event as kumod sent it (one JSON object per line). Ctrl-C ends it.",
     cmd_trace_smtp_server},
    {"trace-smtp-client", "live transcript of outgoing SMTP sessions",
     "[--source CIDR...] [--mx-addr CIDR...] [--domain D...] [--mail-from A...] "
     "[--rcpt-to A...] [--ready-queue Q...] [--egress-source S...] [--terse] [--data] "
     "[--only-new] [--only-one] [--color tty|yes|no] [--json]",
     "Streams every delivery session (websocket /api/admin/trace-smtp-client/v1):\n"
     "begin, connect, each command written (->) and reply read (<-), TLS results and\n"
     "the close reason. The content is summarised unless --data. Filters are\n"
     "allow-lists that apply once the session knows the property (the domain, sender\n"
     "and recipient once a message is obtained): --source (local address), --mx-addr,\n"
     "--domain, --mail-from, --rcpt-to, --ready-queue, --egress-source. kumod refuses\n"
     "--campaign, --tenant, --routing-domain, --egress-pool and --mx-host (its client\n"
     "sessions do not carry them yet) rather than match everything.",
     cmd_trace_smtp_client},
};

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: kcli [--endpoint URL] COMMAND [ARGS]\n\n"
		"Administers kumod through its HTTP API.\n\n"
		"Options:\n"
		"  --endpoint URL  kumod HTTP listener (default $KUMO_KCLI_ENDPOINT, else "
		"%s)\n"
		"  -h, --help      this help; `kcli COMMAND --help` for a command\n"
		"  -V, --version   print the version\n\nCommands:\n",
		KCLI_DEFAULT_ENDPOINT);
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(out, "  %-22s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {{"endpoint", required_argument, NULL, 'e'},
					     {"help", no_argument, NULL, 'h'},
					     {"version", no_argument, NULL, 'V'},
					     {0}};
	endpoint = getenv("KUMO_KCLI_ENDPOINT");
	if (!endpoint || !*endpoint)
		endpoint = KCLI_DEFAULT_ENDPOINT;
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, "+hV", opts, NULL)) != -1) {
		if (c == 'e') {
			endpoint = optarg;
		} else if (c == 'h') {
			usage(stdout);
			return 0;
		} else if (c == 'V') {
			printf("kcli %s\n", KUMOD_VERSION);
			return 0;
		} else {
			die("invalid option '%s' (see kcli --help)", argv[optind - 1]);
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	const char *name = argv[optind];
	if (strcmp(name, "help") == 0) {
		usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(commands[i].name, name) != 0)
			continue;
		current = &commands[i];
		curl_global_init(CURL_GLOBAL_DEFAULT);
		int sub_argc = argc - optind;
		char **sub_argv = argv + optind;
		/* 0, not 1: glibc then re-initialises getopt completely, so the
		 * subcommand's options may also follow its arguments (the top level
		 * parsed in "+" order, stopping at the command name) */
		optind = 0;
		int rc = commands[i].run(sub_argc, sub_argv);
		curl_global_cleanup();
		return rc;
	}
	die("unknown command '%s' (see kcli --help)", name);
}
