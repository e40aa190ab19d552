/* SPDX-License-Identifier: Apache-2.0 */
/* traffic-gen: SMTP (and HTTP inject) load generator. Start-up, the shared
 * schedule (message count, throttle, deadline), live output and the final
 * report. */
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/task.h"
#include "base/xalloc.h"
#include "ktrace.h"
#include "tg.h"

/* --- schedule --------------------------------------------------------------- */

int tg_stopping(const struct tg *tg)
{
	return tg->stop != TG_STOP_NONE;
}

uint64_t tg_claim(struct tg *tg, uint64_t want)
{
	if (tg_stopping(tg))
		return 0;
	if (!tg->o.message_count) {
		tg->claimed += want;
		return want;
	}
	uint64_t left = tg->o.message_count - tg->claimed;
	uint64_t n = want < left ? want : left;
	tg->claimed += n;
	return n;
}

void tg_unclaim(struct tg *tg, uint64_t n)
{
	tg->claimed -= n;
}

/* Evenly spaced slots: message k may start at start + k * period / N. */
uint64_t tg_throttle_delay(struct tg *tg, uint64_t n)
{
	if (!tg->o.throttle_n)
		return 0;
	uint64_t now = clock_mono_ns();
	uint64_t interval = tg->o.throttle_period_ns / tg->o.throttle_n;
	uint64_t slot = tg->next_slot_ns > now ? tg->next_slot_ns : now;
	tg->next_slot_ns = slot + interval * n;
	return slot - now;
}

static void tg_stop_all(struct tg *tg)
{
	for (size_t i = 0; i < tg->nclients; i++)
		tg->clients[i]->ops->stop(tg->clients[i]);
}

void tg_fatal(struct tg *tg, const char *fmt, ...)
{
	if (tg->stop == TG_STOP_FATAL)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(tg->fatal, sizeof(tg->fatal), fmt, ap);
	va_end(ap);
	tg->stop = TG_STOP_FATAL;
	tg_stop_all(tg);
}

static void tg_finish(struct tg *tg);

/* Ends an open live progress line (terminal only) before other output. */
static void end_live_line(struct tg *tg, FILE *f)
{
	if (tg->live_line_open)
		fputc('\n', f);
	tg->live_line_open = 0;
}

void tg_warn(struct tg *tg, const char *fmt, ...)
{
	if (tg->o.json)
		return;
	end_live_line(tg, stderr);
	va_list ap;
	va_start(ap, fmt);
	fputs("traffic-gen: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

void tg_count_reply(struct tg *tg, int code, uint64_t n)
{
	if (code >= 100 && code < TG_REPLY_CODES)
		tg->replies[code] += n;
}

void tg_client_finished(struct tg *tg)
{
	if (--tg->running == 0)
		tg_finish(tg);
}

/* --- output ----------------------------------------------------------------- */

static void print_rates(FILE *f, const char *prefix, double per_sec)
{
	char a[32], b[32], c[32];
	uint64_t s = (uint64_t)per_sec;
	fprintf(f, "%s%s msgs/s, %s msgs/minute, %s msgs/hour", prefix, tg_commas(s, a, sizeof(a)),
		tg_commas(s * 60, b, sizeof(b)), tg_commas(s * 3600, c, sizeof(c)));
}

static void tick_cb(uv_timer_t *t)
{
	struct tg *tg = t->data;
	struct task *prev = task_enter(tg->task);
	uint64_t now = clock_mono_ns();
	double secs = (double)(now - tg->last_tick_ns) / 1e9;
	double rate = secs > 0 ? (double)(tg->sent - tg->last_tick_sent) / secs : 0;
	tg->last_tick_ns = now;
	tg->last_tick_sent = tg->sent;
	FILE *f = tg->o.json ? stderr : stdout;
	char a[32], b[32], c[32];
	if (!tg->o.json || tg->tty) {
		print_rates(f, tg->tty ? "\r\x1b[Kcurrent rate: " : "current rate: ", rate);
		fprintf(f, " (sent=%s, failed=%s, clients=%s)%s", tg_commas(tg->sent, a, sizeof(a)),
			tg_commas(tg->failed, b, sizeof(b)),
			tg_commas(tg->open_conns, c, sizeof(c)), tg->tty ? "" : "\n");
		fflush(f);
		tg->live_line_open = tg->tty;
	}
	task_registry_reap(clock_wall_ns());
	task_exit(tg->task, prev);
}

static void deadline_cb(uv_timer_t *t)
{
	struct tg *tg = t->data;
	struct task *prev = task_enter(tg->task);
	if (!tg_stopping(tg)) {
		tg->stop = TG_STOP_DEADLINE;
		if (!tg->o.json) {
			end_live_line(tg, stdout);
			printf("Deadline reached, stopping\n");
			fflush(stdout);
		}
		tg_stop_all(tg);
	}
	task_exit(tg->task, prev);
}

static void sigint_cb(uv_signal_t *h, int sig)
{
	struct tg *tg = h->data;
	if (tg_stopping(tg)) {
		tg_fatal(tg, "interrupted");
		return;
	}
	tg->stop = TG_STOP_SIGNAL;
	if (!tg->o.json) {
		end_live_line(tg, stdout);
		printf("Interrupted, stopping\n");
	}
	tg_stop_all(tg);
}

static void fmt_lat(const struct tg *tg, double p, char *out, size_t cap)
{
	hist_format_duration(hist_percentile(&tg->lat, p), out, cap);
}

static void report_text(struct tg *tg, double elapsed, double rate)
{
	char el[40], v[9][40];
	hist_format_duration(tg->end_ns - tg->start_ns, el, sizeof(el));
	/* a progress line may have been drawn after "Deadline reached" */
	end_live_line(tg, stdout);
	if (tg->stop != TG_STOP_DEADLINE && tg->stop != TG_STOP_SIGNAL)
		printf("All clients finished\n");
	printf("sent %llu messages, failed %llu over %s.\n", (unsigned long long)tg->sent,
	       (unsigned long long)tg->failed, el);
	printf("replies:");
	int any = 0;
	for (int c = 0; c < TG_REPLY_CODES; c++)
		if (tg->replies[c]) {
			printf(" %d=%llu", c, (unsigned long long)tg->replies[c]);
			any = 1;
		}
	printf("%s\n", any ? "" : " none");
	hist_format_duration(hist_mean(&tg->lat), v[0], sizeof(v[0]));
	fmt_lat(tg, 0, v[1], sizeof(v[1]));
	fmt_lat(tg, 100, v[2], sizeof(v[2]));
	static const double ps[] = {50, 75, 90, 95, 99, 99.9};
	for (size_t i = 0; i < 6; i++)
		fmt_lat(tg, ps[i], v[3 + i], sizeof(v[3 + i]));
	printf("transaction latency: avg=%s min=%s max=%s p50=%s p75=%s p90=%s p95=%s p99=%s "
	       "p99.9=%s\n",
	       v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]);
	print_rates(stdout, "overall rate: ", rate);
	printf("\n");
	(void)elapsed;
}

static void report_json(struct tg *tg, double elapsed, double rate)
{
	static const char *const reasons[] = {"none", "deadline", "finished", "error",
					      "interrupted"};
	uint64_t r = (uint64_t)rate;
	printf("{\"target\":\"");
	struct buf b;
	buf_init(&b);
	tg_json_escape(&b, tg->o.target, strlen(tg->o.target));
	fwrite(b.data, 1, b.len, stdout);
	buf_free(&b);
	printf("\",\"mode\":\"%s\",\"stop_reason\":\"%s\",\"sent\":%llu,\"failed\":%llu,"
	       "\"reconnects\":%llu,\"connection_errors\":%llu,\"elapsed_s\":%.6f,"
	       "\"rate\":{\"per_second\":%llu,\"per_minute\":%llu,\"per_hour\":%llu,"
	       "\"per_second_exact\":%.3f},",
	       tg->o.http ? "http" : "smtp", reasons[tg->stop], (unsigned long long)tg->sent,
	       (unsigned long long)tg->failed, (unsigned long long)tg->reconnects,
	       (unsigned long long)tg->conn_errors, elapsed, (unsigned long long)r,
	       (unsigned long long)r * 60, (unsigned long long)r * 3600, rate);
	printf("\"latency_ns\":{\"count\":%llu,\"avg\":%llu,\"min\":%llu,\"max\":%llu,\"p50\":%llu,"
	       "\"p75\":%llu,\"p90\":%llu,\"p95\":%llu,\"p99\":%llu,\"p99.9\":%llu}",
	       (unsigned long long)tg->lat.count, (unsigned long long)hist_mean(&tg->lat),
	       (unsigned long long)hist_percentile(&tg->lat, 0),
	       (unsigned long long)hist_percentile(&tg->lat, 100),
	       (unsigned long long)hist_percentile(&tg->lat, 50),
	       (unsigned long long)hist_percentile(&tg->lat, 75),
	       (unsigned long long)hist_percentile(&tg->lat, 90),
	       (unsigned long long)hist_percentile(&tg->lat, 95),
	       (unsigned long long)hist_percentile(&tg->lat, 99),
	       (unsigned long long)hist_percentile(&tg->lat, 99.9));
	printf(",\"replies\":{");
	for (int c = 0, n = 0; c < TG_REPLY_CODES; c++)
		if (tg->replies[c])
			printf("%s\"%d\":%llu", n++ ? "," : "", c,
			       (unsigned long long)tg->replies[c]);
	printf("}");
	if (tg->fatal[0]) {
		struct buf e;
		buf_init(&e);
		tg_json_escape(&e, tg->fatal, strlen(tg->fatal));
		printf(",\"error\":\"%.*s\"", (int)e.len, e.data);
		buf_free(&e);
	}
	printf("}\n");
}

static void close_walk(uv_handle_t *h, void *arg)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

/* Every client stopped: report and let the loop end. */
static void tg_finish(struct tg *tg)
{
	tg->end_ns = clock_mono_ns();
	if (tg->stop == TG_STOP_NONE)
		tg->stop = TG_STOP_FINISHED;
	double elapsed = (double)(tg->end_ns - tg->start_ns) / 1e9;
	double rate = elapsed > 0 ? (double)tg->sent / elapsed : 0;
	if (tg->stop == TG_STOP_FATAL) {
		end_live_line(tg, stderr);
		fprintf(stderr, "traffic-gen: %s\n", tg->fatal);
	}
	if (tg->o.json)
		report_json(tg, elapsed, rate);
	else if (tg->stop != TG_STOP_FATAL || tg->sent || tg->failed)
		report_text(tg, elapsed, rate);
	fflush(stdout);
	uv_timer_stop(&tg->tick);
	uv_timer_stop(&tg->deadline);
	uv_signal_stop(&tg->sigint);
}

/* --- start-up --------------------------------------------------------------- */

/* "host:port", "[v6]:port" or (HTTP) "http://host:port/path". */
static int resolve_target(struct tg *tg, char *err, size_t errlen)
{
	const char *t = tg->o.target;
	const char *def_port = tg->o.http ? "8000" : "25";
	snprintf(tg->http_path, sizeof(tg->http_path), "/api/inject/v1");
	if (!strncmp(t, "http://", 7)) {
		t += 7;
	} else if (!strncmp(t, "https://", 8)) {
		snprintf(err, errlen, "--target %s: https is not supported", tg->o.target);
		return -1;
	}
	char hp[300];
	size_t hl = strcspn(t, "/");
	if (hl >= sizeof(hp) || hl == 0) {
		snprintf(err, errlen, "--target '%s': expected HOST:PORT", tg->o.target);
		return -1;
	}
	memcpy(hp, t, hl);
	hp[hl] = '\0';
	if (t[hl] == '/' && t[hl + 1]) {
		/* a base path before /api/inject/v1 */
		snprintf(tg->http_path, sizeof(tg->http_path), "%.*s/api/inject/v1",
			 (int)(strlen(t + hl) - (t[strlen(t) - 1] == '/')), t + hl);
	}
	const char *host = hp, *port = def_port;
	char *colon;
	if (hp[0] == '[') {
		char *close = strchr(hp, ']');
		if (!close) {
			snprintf(err, errlen, "--target '%s': unbalanced [", tg->o.target);
			return -1;
		}
		*close = '\0';
		host = hp + 1;
		if (close[1] == ':')
			port = close + 2;
		else if (close[1]) {
			snprintf(err, errlen, "--target '%s': expected [ADDR]:PORT", tg->o.target);
			return -1;
		}
	} else if ((colon = strrchr(hp, ':'))) {
		*colon = '\0';
		port = colon + 1;
	}
	char *end;
	long pn = strtol(port, &end, 10);
	if (!*port || *end || pn <= 0 || pn > 65535 || !*host) {
		snprintf(err, errlen, "--target '%s': expected HOST:PORT with a port 1-65535",
			 tg->o.target);
		return -1;
	}
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	int rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0 || !res) {
		snprintf(err, errlen, "cannot resolve %s: %s", host, gai_strerror(rc));
		return -1;
	}
	memcpy(&tg->addr, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	snprintf(tg->host, sizeof(tg->host), "%s", host);
	snprintf(tg->hostport, sizeof(tg->hostport), "%s%s%s:%s", strchr(host, ':') ? "[" : "",
		 host, strchr(host, ':') ? "]" : "", port);
	return 0;
}

static void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static int setup_log(void)
{
	const char *f = getenv("TRAFFIC_GEN_LOG");
	if (!f || !*f)
		f = getenv("KUMOD_LOG");
	char err[256];
	if (log_set_filter(f && *f ? f : "traffic_gen=warn,kumod=warn", err, sizeof(err)) < 0) {
		fprintf(stderr, "traffic-gen: %s\n", err);
		return -1;
	}
	return 0;
}

static int tg_run(struct tg *tg)
{
	tg->loop = uv_default_loop();
	tg->task = task_spawn("traffic_gen", tg->hostport, 0);
	task_registry_set_retention(0);
	unsigned n = tg->o.concurrency;
	if (tg->o.message_count) {
		uint64_t per = tg->o.http ? tg->o.http_batch : 1;
		uint64_t need = (tg->o.message_count + per - 1) / per;
		if (need < n)
			n = (unsigned)need;
	}
	tg->clients = xcalloc(n, sizeof(*tg->clients));
	tg->nclients = tg->running = n;
	for (unsigned i = 0; i < n; i++)
		tg->clients[i] = tg->o.http ? tg_http_client_new(tg, i) : tg_smtp_client_new(tg, i);
	uv_timer_init(tg->loop, &tg->tick);
	uv_timer_init(tg->loop, &tg->deadline);
	uv_signal_init(tg->loop, &tg->sigint);
	tg->tick.data = tg->deadline.data = tg->sigint.data = tg;
	KTRACE(tg_start, tg->hostport, (uint64_t)n, tg->o.http ? "http" : "smtp");
	tg->start_ns = tg->last_tick_ns = clock_mono_ns();
	uv_timer_start(&tg->tick, tick_cb, 1000, 1000);
	if (!tg->o.message_count || tg->o.duration_set)
		uv_timer_start(&tg->deadline, deadline_cb, tg->o.duration_s * 1000, 0);
	uv_signal_start(&tg->sigint, sigint_cb, SIGINT);
	for (unsigned i = 0; i < n && !tg_stopping(tg); i++)
		tg->clients[i]->ops->start(tg->clients[i]);
	uv_run(tg->loop, UV_RUN_DEFAULT);
	for (size_t i = 0; i < tg->nclients; i++)
		tg->clients[i]->ops->free(tg->clients[i]);
	uv_walk(tg->loop, close_walk, NULL);
	uv_run(tg->loop, UV_RUN_DEFAULT);
	free(tg->clients);
	task_close(tg->task);
	task_registry_clear();
	if (tg->stop == TG_STOP_FATAL)
		return TG_EXIT_FAILED;
	if ((tg->failed || tg->conn_errors) && !tg->o.keep_going)
		return TG_EXIT_FAILED;
	return TG_EXIT_OK;
}

int main(int argc, char **argv)
{
	static struct tg tg; /* the one run context of this loop */
	int rc = tg_parse_options(&tg.o, argc, argv);
	if (rc < 0)
		return TG_EXIT_OK; /* --help */
	if (rc > 0)
		return rc;
	if (setup_log() < 0)
		return TG_EXIT_USAGE;
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
	char err[512];
	if (resolve_target(&tg, err, sizeof(err)) < 0) {
		fprintf(stderr, "traffic-gen: %s\n", err);
		tg_opts_free(&tg.o);
		return err[0] == '-' ? TG_EXIT_USAGE : TG_EXIT_FAILED;
	}
	tg.rng = clock_wall_ns() ^ ((uint64_t)getpid() << 32) ^ 0x9E3779B97F4A7C15ull;
	tg.tty = isatty(STDOUT_FILENO);
	hist_init(&tg.lat);
	buf_init(&tg.body);
	buf_init(&tg.body_wire);
	buf_init(&tg.body_json);
	buf_init(&tg.extra_headers);
	if (tg_build_bodies(&tg, err, sizeof(err)) < 0) {
		fprintf(stderr, "traffic-gen: %s\n", err);
		rc = TG_EXIT_USAGE;
	} else {
		fprintf(stderr, "Generated body of size %zu\n", tg.body.len);
		rc = tg_run(&tg);
	}
	buf_free(&tg.body);
	buf_free(&tg.body_wire);
	buf_free(&tg.body_json);
	buf_free(&tg.extra_headers);
	tg_opts_free(&tg.o);
	return rc;
}
