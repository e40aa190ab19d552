/* SPDX-License-Identifier: Apache-2.0 */
/* traffic-gen command line: KumoMTA-compatible options (kumo-compat §13)
 * plus a few of ours; every bad value is one line on stderr, exit 2. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "base/xalloc.h"
#include "tg.h"

static const char usage[] =
    "Usage: traffic-gen [OPTIONS]\n"
    "SMTP (and HTTP inject) load generator, option-compatible with KumoMTA's traffic-gen.\n"
    "\n"
    "  --target HOST:PORT        server to send to (default 127.0.0.1:2025;\n"
    "                            with --http: http://127.0.0.1:8000)\n"
    "  --concurrency N           connections (default: cores x 10)\n"
    "  --duration SECONDS        how long to generate (default 60)\n"
    "  --message-count N         send exactly N messages, then stop\n"
    "  --throttle N/PERIOD       at most N messages per PERIOD (s, m, h, d; e.g. 500/s, 10/5s)\n"
    "  --body-size SIZE          generated body size (default 1024; accepts 60kb, 1mb)\n"
    "  --body-file PATH          use this body instead (line ends normalised to CRLF)\n"
    "  --domain NAME[:WEIGHT]    recipient domain, repeatable (default aol.com gmail.com\n"
    "                            hotmail.com yahoo.com, weight 1)\n"
    "  --domain-suffix SUFFIX    appended to every domain (default mx-sink.wezfurlong.org;\n"
    "                            '' for none)\n"
    "  --header 'Name: value'    extra header, repeatable\n"
    "  --starttls                use STARTTLS when offered (certificates are not verified)\n"
    "  --keep-going              failures do not stop a connection; exit 0 despite them\n"
    "  --http                    inject through POST <target>/api/inject/v1 instead of SMTP\n"
    "  --http-batch-size N       recipients per inject request (default 1)\n"
    "  --http-defer-spool        set deferred_spool in inject requests\n"
    "  --http-defer-generation   set deferred_generation in inject requests\n"
    "  --json                    print the final report as one JSON object on stdout\n"
    "  --recipient-local LOCAL   recipient local part instead of user-<n> (ours; e.g.\n"
    "                            tempfail to exercise a smart sink)\n"
    "  --timeout SECONDS         per-reply timeout (ours; default 60; connect max 10)\n"
    "  --help                    this text\n"
    "\n"
    "Environment: TRAFFIC_GEN_LOG (or KUMOD_LOG) sets the diagnostic log filter,\n"
    "e.g. TRAFFIC_GEN_LOG=kumod::smtp_client=trace,traffic_gen=debug\n"
    "Exit status: 0 all messages sent (or --keep-going), 1 failures or fatal error, 2 usage.\n";

enum {
	OPT_TARGET = 256,
	OPT_CONCURRENCY,
	OPT_DURATION,
	OPT_COUNT,
	OPT_THROTTLE,
	OPT_BODY_SIZE,
	OPT_BODY_FILE,
	OPT_DOMAIN,
	OPT_SUFFIX,
	OPT_HEADER,
	OPT_STARTTLS,
	OPT_KEEP_GOING,
	OPT_HTTP,
	OPT_HTTP_BATCH,
	OPT_HTTP_DEFER_SPOOL,
	OPT_HTTP_DEFER_GEN,
	OPT_JSON,
	OPT_RCPT_LOCAL,
	OPT_TIMEOUT,
	OPT_HELP,
};

static const struct option long_opts[] = {
    {"target", required_argument, NULL, OPT_TARGET},
    {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
    {"duration", required_argument, NULL, OPT_DURATION},
    {"message-count", required_argument, NULL, OPT_COUNT},
    {"throttle", required_argument, NULL, OPT_THROTTLE},
    {"body-size", required_argument, NULL, OPT_BODY_SIZE},
    {"body-file", required_argument, NULL, OPT_BODY_FILE},
    {"domain", required_argument, NULL, OPT_DOMAIN},
    {"domain-suffix", required_argument, NULL, OPT_SUFFIX},
    {"header", required_argument, NULL, OPT_HEADER},
    {"starttls", no_argument, NULL, OPT_STARTTLS},
    {"keep-going", no_argument, NULL, OPT_KEEP_GOING},
    {"http", no_argument, NULL, OPT_HTTP},
    {"http-batch-size", required_argument, NULL, OPT_HTTP_BATCH},
    {"http-defer-spool", no_argument, NULL, OPT_HTTP_DEFER_SPOOL},
    {"http-defer-generation", no_argument, NULL, OPT_HTTP_DEFER_GEN},
    {"json", no_argument, NULL, OPT_JSON},
    {"recipient-local", required_argument, NULL, OPT_RCPT_LOCAL},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static int bad(const char *fmt, const char *a, const char *b)
{
	fprintf(stderr, "traffic-gen: ");
	fprintf(stderr, fmt, a, b);
	fprintf(stderr, " (see --help)\n");
	return TG_EXIT_USAGE;
}

/* Whole decimal number in [min, max]. */
static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	if (!*s || *s == '-' || *s == '+')
		return -1;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/* "1024", "60kb", "1.5mb", "2KiB": units are powers of 1024. */
int tg_parse_size(const char *s, size_t *out)
{
	char *end;
	if (!*s || *s == '-' || *s == '+')
		return -1;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || v < 0)
		return -1;
	while (*end == ' ')
		end++;
	double mul = 1;
	if (!*end || !strcasecmp(end, "b"))
		mul = 1;
	else if (!strcasecmp(end, "k") || !strcasecmp(end, "kb") || !strcasecmp(end, "kib"))
		mul = 1024;
	else if (!strcasecmp(end, "m") || !strcasecmp(end, "mb") || !strcasecmp(end, "mib"))
		mul = 1024.0 * 1024;
	else if (!strcasecmp(end, "g") || !strcasecmp(end, "gb") || !strcasecmp(end, "gib"))
		mul = 1024.0 * 1024 * 1024;
	else
		return -1;
	double r = v * mul;
	if (r > 4.0 * 1024 * 1024 * 1024)
		return -1;
	*out = (size_t)r;
	return 0;
}

/* "500/s", "1000/min", "10/5s", "3600/h". */
int tg_parse_throttle(const char *s, uint64_t *n, uint64_t *period_ns)
{
	const char *slash = strchr(s, '/');
	if (!slash)
		return -1;
	char num[32];
	if ((size_t)(slash - s) >= sizeof(num))
		return -1;
	memcpy(num, s, (size_t)(slash - s));
	num[slash - s] = '\0';
	if (parse_u64(num, 1, 1000000000ull, n) < 0)
		return -1;
	const char *p = slash + 1;
	char *end;
	double mult = 1;
	if (*p >= '0' && *p <= '9') {
		mult = strtod(p, &end);
		if (mult <= 0)
			return -1;
		p = end;
	}
	static const struct {
		const char *name;
		uint64_t ns;
	} units[] = {
	    {"s", 1000000000ull},     {"sec", 1000000000ull},	  {"second", 1000000000ull},
	    {"m", 60000000000ull},    {"min", 60000000000ull},	  {"minute", 60000000000ull},
	    {"h", 3600000000000ull},  {"hr", 3600000000000ull},	  {"hour", 3600000000000ull},
	    {"d", 86400000000000ull}, {"day", 86400000000000ull},
	};
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (!strcasecmp(p, units[i].name)) {
			*period_ns = (uint64_t)(mult * (double)units[i].ns);
			return *period_ns ? 0 : -1;
		}
	}
	return -1;
}

static int add_domain(struct tg_opts *o, const char *arg)
{
	const char *colon = strrchr(arg, ':');
	uint64_t w = 1;
	size_t len = strlen(arg);
	if (colon) {
		if (parse_u64(colon + 1, 0, 1000000, &w) < 0)
			return -1;
		len = (size_t)(colon - arg);
	}
	if (!len)
		return -1;
	for (size_t i = 0; i < len; i++) {
		char ch = arg[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_'))
			return -1;
	}
	o->domains = xrealloc(o->domains, (o->ndomains + 1) * sizeof(*o->domains));
	o->domains[o->ndomains].name = xstrndup(arg, len);
	o->domains[o->ndomains].weight = (uint32_t)w;
	o->ndomains++;
	o->total_weight += w;
	return 0;
}

/* "Name: value": printable name without spaces, no CR or LF anywhere. */
static int valid_header(const char *h)
{
	const char *colon = strchr(h, ':');
	if (!colon || colon == h)
		return 0;
	for (const char *p = h; p < colon; p++)
		if (*p <= ' ' || *p >= 127)
			return 0;
	return strpbrk(h, "\r\n") == NULL;
}

static void set_str(char **dst, const char *v)
{
	free(*dst);
	*dst = xstrdup(v);
}

static int apply_defaults(struct tg_opts *o)
{
	if (!o->suffix)
		o->suffix = xstrdup("mx-sink.wezfurlong.org");
	if (!o->ndomains) {
		static const char *const def[] = {"aol.com", "gmail.com", "hotmail.com",
						  "yahoo.com"};
		for (size_t i = 0; i < 4; i++)
			add_domain(o, def[i]);
	}
	if (!o->total_weight)
		return bad("--domain: all weights are zero%s%s", "", "");
	if (*o->suffix) {
		for (size_t i = 0; i < o->ndomains; i++) {
			char *full = xasprintf("%s.%s", o->domains[i].name, o->suffix);
			free(o->domains[i].name);
			o->domains[i].name = full;
		}
	}
	if (!o->target)
		o->target = xstrdup(o->http ? "http://127.0.0.1:8000" : "127.0.0.1:2025");
	if (!o->concurrency) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		o->concurrency = (unsigned)(n > 0 ? n : 1) * 10;
	}
	if (!o->http_batch)
		o->http_batch = 1;
	if (!o->timeout_ms)
		o->timeout_ms = 60000;
	if (!o->duration_set)
		o->duration_s = 60;
	if (o->body_file && o->body_size)
		return bad("--body-size and --body-file are mutually exclusive%s%s", "", "");
	if (!o->body_size)
		o->body_size = 1024;
	return 0;
}

static int parse_one(struct tg_opts *o, int opt, const char *arg, const char *name)
{
	uint64_t v;
	switch (opt) {
	case OPT_TARGET:
		if (!*arg)
			return bad("--target: empty value%s%s", "", "");
		set_str(&o->target, arg);
		break;
	case OPT_CONCURRENCY:
		if (parse_u64(arg, 1, 100000, &v) < 0)
			return bad("--concurrency: '%s' is not a number from 1 to 100000%s", arg,
				   "");
		o->concurrency = (unsigned)v;
		break;
	case OPT_DURATION:
		if (parse_u64(arg, 1, 365ull * 86400, &v) < 0)
			return bad("--duration: '%s' is not a whole number of seconds >= 1%s", arg,
				   "");
		o->duration_s = v;
		o->duration_set = 1;
		break;
	case OPT_COUNT:
		if (parse_u64(arg, 1, UINT64_MAX / 2, &v) < 0)
			return bad("--message-count: '%s' is not a number >= 1%s", arg, "");
		o->message_count = v;
		break;
	case OPT_THROTTLE:
		if (tg_parse_throttle(arg, &o->throttle_n, &o->throttle_period_ns) < 0)
			return bad(
			    "--throttle: '%s' is not N/PERIOD (e.g. 500/s, 1000/min, 10/5s)%s", arg,
			    "");
		break;
	case OPT_BODY_SIZE:
		if (tg_parse_size(arg, &o->body_size) < 0 || !o->body_size)
			return bad("--body-size: '%s' is not a size (e.g. 1024, 60kb, 1mb)%s", arg,
				   "");
		break;
	case OPT_BODY_FILE:
		set_str(&o->body_file, arg);
		break;
	case OPT_DOMAIN:
		if (add_domain(o, arg) < 0)
			return bad("--domain: '%s' is not NAME or NAME:WEIGHT%s", arg, "");
		break;
	case OPT_SUFFIX:
		set_str(&o->suffix, arg);
		break;
	case OPT_HEADER:
		if (!valid_header(arg))
			return bad("--header: '%s' is not 'Name: value'%s", arg, "");
		o->headers = xrealloc(o->headers, (o->nheaders + 1) * sizeof(char *));
		o->headers[o->nheaders++] = xstrdup(arg);
		break;
	case OPT_STARTTLS:
		o->starttls = 1;
		break;
	case OPT_KEEP_GOING:
		o->keep_going = 1;
		break;
	case OPT_HTTP:
		o->http = 1;
		break;
	case OPT_HTTP_BATCH:
		if (parse_u64(arg, 1, 100000, &v) < 0)
			return bad("--http-batch-size: '%s' is not a number from 1 to 100000%s",
				   arg, "");
		o->http_batch = (unsigned)v;
		break;
	case OPT_HTTP_DEFER_SPOOL:
		o->http_defer_spool = 1;
		break;
	case OPT_HTTP_DEFER_GEN:
		o->http_defer_generation = 1;
		break;
	case OPT_JSON:
		o->json = 1;
		break;
	case OPT_RCPT_LOCAL:
		if (!*arg || strpbrk(arg, "<>@ \t\r\n\"\\"))
			return bad("--recipient-local: '%s' is not a plain local part%s", arg, "");
		set_str(&o->recipient_local, arg);
		break;
	case OPT_TIMEOUT:
		if (parse_u64(arg, 1, 86400, &v) < 0)
			return bad("--timeout: '%s' is not a whole number of seconds >= 1%s", arg,
				   "");
		o->timeout_ms = v * 1000;
		break;
	default:
		return bad("unknown option '%s'%s", name, "");
	}
	return 0;
}

int tg_parse_options(struct tg_opts *o, int argc, char **argv)
{
	memset(o, 0, sizeof(*o));
	opterr = 0;
	optind = 1;
	for (;;) {
		int idx = -1;
		int prev = optind;
		int opt = getopt_long(argc, argv, ":", long_opts, &idx);
		if (opt == -1)
			break;
		const char *name = prev < argc ? argv[prev] : "?";
		if (opt == OPT_HELP) {
			fputs(usage, stdout);
			return -1;
		}
		if (opt == ':')
			return bad("option '%s' needs a value%s", name, "");
		if (opt == '?')
			return bad("unknown option '%s'%s", name, "");
		int rc = parse_one(o, opt, optarg, name);
		if (rc)
			return rc;
	}
	if (optind < argc)
		return bad("unexpected argument '%s'%s", argv[optind], "");
	return apply_defaults(o);
}

void tg_opts_free(struct tg_opts *o)
{
	for (size_t i = 0; i < o->ndomains; i++)
		free(o->domains[i].name);
	free(o->domains);
	for (size_t i = 0; i < o->nheaders; i++)
		free(o->headers[i]);
	free(o->headers);
	free(o->target);
	free(o->body_file);
	free(o->suffix);
	free(o->recipient_local);
	memset(o, 0, sizeof(*o));
}
