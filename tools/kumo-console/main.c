/* SPDX-License-Identifier: Apache-2.0 */
/* kumo-console: the terminal viewer of kumod's introspection server
 * (`kumod --tokio-console`), its one-shot mode for scripts (--once) and the
 * player of recordings (--replay). Transport and modes live here; the
 * model is model.c and the screen tui.c. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/xalloc.h"
#include "console.h"
#include "proto/console_proto.h"

#define KC_FRAME_LIMIT (64u << 20) /* longest line accepted from a server or file */
#define KC_BACKOFF_MIN_MS 500
#define KC_BACKOFF_MAX_MS 5000
#define KC_REDRAW_MS 250

static struct {
	/* options */
	const char *addr_text;
	const char *replay_path;
	int once, json, ascii, colors;
	uint64_t timeout_ns;
	double speed;
	/* state */
	uv_loop_t *loop;
	struct kc_model model;
	int tui;
	int exit_code;
	/* live connection */
	struct sockaddr_storage addr;
	uv_tcp_t tcp;
	uv_connect_t connect_req;
	int tcp_open, connected;
	struct buf in;
	uv_timer_t retry, redraw, deadline;
	uv_poll_t keys;
	uint64_t backoff_ms, retry_at_ns;
	char conn_text[256];
	char why[128];
	/* replay */
	char **lines;
	size_t nlines, cur;
	int replay_paused, replay_failed;
	uv_timer_t step;
	char replay_text[256];
} kc = {.addr_text = "127.0.0.1:6669", .colors = 1, .speed = 1.0};

static void usage(FILE *out)
{
	fprintf(
	    out,
	    "Usage: kumo-console [OPTIONS] [HOST:PORT]\n"
	    "\n"
	    "Live view of a kumod started with --tokio-console (default 127.0.0.1:6669).\n"
	    "\n"
	    "Options:\n"
	    "  --once               print one snapshot (tasks and queues) and exit\n"
	    "  --json               with --once: print the merged state as JSON\n"
	    "  --replay FILE        play a TOKIO_CONSOLE_RECORD_PATH recording\n"
	    "                       (space pause, . step, + / - speed); with --once: print\n"
	    "                       the state at the end of the recording\n"
	    "  --speed X            replay speed factor (default 1)\n"
	    "  --retain-for DUR     keep finished tasks this long (default 6s; none = forever)\n"
	    "  --timeout DUR        with --once: give up waiting for a snapshot after DUR\n"
	    "                       (default 10s; a refused connection fails at once)\n"
	    "  --ascii-only         no Unicode glyphs\n"
	    "  --no-colors          no colours (also when NO_COLOR is set)\n"
	    "  -W LINT / -A LINT    warn on / allow a lint: long-callback, lost-wake, watchdog,\n"
	    "                       self-wakes (all on by default)\n"
	    "  --long-callback DUR  long-callback threshold (default 50ms)\n"
	    "  --watchdog DUR       watchdog threshold for time in one phase (default 5m)\n"
	    "  -h, --help           this help;  -V, --version  the version\n"
	    "\n"
	    "Keys: t tasks, Q queues, L loop, Enter details, Esc back, h/l sort, i invert,\n"
	    "j/k move, g/G top/bottom, / filter, n/N next/previous, space pause, ? help, q quit.\n"
	    "Enter on an smtp_server task shows its envelope and latest transcript lines; Enter\n"
	    "on a scheduled queue lists its messages (] next page, [ first page); Enter on a\n"
	    "message shows its metadata and timeline; Esc goes back one view.\n"
	    "Docs: docs/console.md, docs/console-protocol.md\n");
}

static int parse_dur_opt(const char *opt, const char *v, uint64_t *ns)
{
	if (console_parse_duration(v, ns) == 0)
		return 0;
	fprintf(stderr, "kumo-console: %s '%s': not a duration (250ms, 6s, 5m)\n", opt, v);
	return -1;
}

static int parse_lint(const char *v, int on)
{
	int l = kc_lint_parse(v);
	if (l < 0) {
		fprintf(stderr, "kumo-console: unknown lint '%s'\n", v);
		return -1;
	}
	if (on)
		kc.model.lints_on |= 1u << l;
	else
		kc.model.lints_on &= ~(1u << l);
	return 0;
}

static int parse_args(int argc, char **argv)
{
	enum {
		O_ONCE = 256,
		O_JSON,
		O_REPLAY,
		O_RETAIN,
		O_ASCII,
		O_NOCOLOR,
		O_TIMEOUT,
		O_SPEED,
		O_LONG,
		O_WATCHDOG
	};
	static const struct option opts[] = {
	    {"once", no_argument, NULL, O_ONCE},
	    {"json", no_argument, NULL, O_JSON},
	    {"replay", required_argument, NULL, O_REPLAY},
	    {"retain-for", required_argument, NULL, O_RETAIN},
	    {"ascii-only", no_argument, NULL, O_ASCII},
	    {"no-colors", no_argument, NULL, O_NOCOLOR},
	    {"timeout", required_argument, NULL, O_TIMEOUT},
	    {"speed", required_argument, NULL, O_SPEED},
	    {"long-callback", required_argument, NULL, O_LONG},
	    {"watchdog", required_argument, NULL, O_WATCHDOG},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	int c;
	kc.timeout_ns = 10000000000ull;
	while ((c = getopt_long(argc, argv, "hVW:A:", opts, NULL)) != -1) {
		int rc = 0;
		switch (c) {
		case O_ONCE:
			kc.once = 1;
			break;
		case O_JSON:
			kc.json = 1;
			break;
		case O_REPLAY:
			kc.replay_path = optarg;
			break;
		case O_RETAIN:
			if (strcmp(optarg, "none") == 0)
				kc.model.retain_ns = 0;
			else
				rc = parse_dur_opt("--retain-for", optarg, &kc.model.retain_ns);
			break;
		case O_ASCII:
			kc.ascii = 1;
			break;
		case O_NOCOLOR:
			kc.colors = 0;
			break;
		case O_TIMEOUT:
			rc = parse_dur_opt("--timeout", optarg, &kc.timeout_ns);
			break;
		case O_SPEED:
			kc.speed = strtod(optarg, NULL);
			if (kc.speed <= 0) {
				fprintf(stderr, "kumo-console: --speed wants a positive number\n");
				rc = -1;
			}
			break;
		case O_LONG:
			rc = parse_dur_opt("--long-callback", optarg, &kc.model.long_callback_ns);
			break;
		case O_WATCHDOG:
			rc = parse_dur_opt("--watchdog", optarg, &kc.model.watchdog_ns);
			break;
		case 'W':
		case 'A':
			rc = parse_lint(optarg, c == 'W');
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case 'V':
			printf("kumo-console %s\n", KUMOD_VERSION);
			exit(0);
		default:
			fprintf(stderr, "kumo-console: see --help\n");
			return 2;
		}
		if (rc)
			return 2;
	}
	if (optind < argc)
		kc.addr_text = argv[optind++];
	if (optind < argc) {
		fprintf(stderr, "kumo-console: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (kc.json && !kc.once) {
		fprintf(stderr, "kumo-console: --json needs --once\n");
		return 2;
	}
	const char *nc = getenv("NO_COLOR");
	if (nc && *nc)
		kc.colors = 0;
	return 0;
}

/* HOST:PORT, [V6]:PORT, localhost:PORT; an http:// prefix (tokio-console's
 * spelling) is accepted. */
static int parse_addr(const char *text, struct sockaddr_storage *ss)
{
	char host[256];
	if (strncmp(text, "http://", 7) == 0)
		text += 7;
	const char *colon = strrchr(text, ':');
	if (!colon || (size_t)(colon - text) >= sizeof(host) || colon == text)
		return -1;
	int port = atoi(colon + 1);
	if (port <= 0 || port > 65535)
		return -1;
	memcpy(host, text, (size_t)(colon - text));
	host[colon - text] = '\0';
	if (host[0] == '[') {
		size_t n = strlen(host);
		if (host[n - 1] != ']')
			return -1;
		host[n - 1] = '\0';
		return uv_ip6_addr(host + 1, port, (struct sockaddr_in6 *)ss) ? -1 : 0;
	}
	if (strcmp(host, "localhost") == 0)
		snprintf(host, sizeof(host), "127.0.0.1");
	return uv_ip4_addr(host, port, (struct sockaddr_in *)ss) ? -1 : 0;
}

/* --- screen ----------------------------------------------------------------- */

static void draw(void)
{
	if (!kc.tui)
		return;
	struct kc_tui_status st = {.conn = kc.conn_text};
	if (kc.replay_path) {
		st.conn = "REPLAY";
		st.replay = kc.replay_text;
		st.replay_paused = kc.replay_paused;
	}
	kc_tui_draw(&kc.model, &st);
}

static void finish(int code)
{
	kc.exit_code = code;
	uv_stop(kc.loop);
}

static void print_once(void)
{
	kc_model_refresh(&kc.model);
	if (kc.json)
		kc_print_json(&kc.model, stdout);
	else
		kc_print_table(&kc.model, stdout, kc.ascii);
	fflush(stdout);
}

/* --- live connection -------------------------------------------------------- */

static void write_done(uv_write_t *w, int status)
{
	free(w->data);
}

static void send_line(const char *line, size_t n)
{
	if (!kc.connected || !n)
		return;
	char *copy = xmalloc(n + sizeof(uv_write_t));
	uv_write_t *w = (uv_write_t *)copy;
	memcpy(copy + sizeof(uv_write_t), line, n);
	uv_buf_t b = uv_buf_init(copy + sizeof(uv_write_t), (unsigned)n);
	w->data = copy;
	if (uv_write(w, (uv_stream_t *)&kc.tcp, &b, 1, write_done) < 0)
		free(copy);
}

/* The current drill-down view's request (a queue page, a message), if any. */
static void send_view_request(void)
{
	char line[CONSOLE_CMD_MAX];
	send_line(line, kc_tui_request(line, sizeof(line)));
}

static void send_cmd(const char *fmt, uint64_t id)
{
	if (!kc.connected)
		return;
	char line[128];
	int n = snprintf(line, sizeof(line), fmt, id);
	char *copy = xmalloc((size_t)n + sizeof(uv_write_t));
	uv_write_t *w = (uv_write_t *)copy;
	memcpy(copy + sizeof(uv_write_t), line, (size_t)n);
	uv_buf_t b = uv_buf_init(copy + sizeof(uv_write_t), (unsigned)n);
	w->data = copy;
	if (uv_write(w, (uv_stream_t *)&kc.tcp, &b, 1, write_done) < 0)
		free(copy);
}

static void schedule_retry(const char *why);

static void tcp_closed(uv_handle_t *h)
{
	kc.tcp_open = 0;
}

static void drop_connection(const char *why)
{
	if (kc.tcp_open && !uv_is_closing((uv_handle_t *)&kc.tcp))
		uv_close((uv_handle_t *)&kc.tcp, tcp_closed);
	kc.connected = 0;
	buf_reset(&kc.in);
	schedule_retry(why);
}

static void on_frame(const char *line, size_t len)
{
	char err[160];
	if (kc_model_apply(&kc.model, line, len, err, sizeof(err)) < 0) {
		snprintf(kc.model.last_error, sizeof(kc.model.last_error), "bad frame: %s", err);
		return;
	}
	if (kc.model.hello)
		kc.backoff_ms = 0;
	if (kc.once && kc.model.snapshot_complete) {
		print_once();
		finish(0);
	}
}

/* Frames of one read are handled in a loop: with --once, the snapshot is
 * printed once and any frame after it in the same read is not looked at. */
static int once_finished(void)
{
	return kc.once && kc.model.snapshot_complete;
}

static void read_alloc(uv_handle_t *h, size_t sug, uv_buf_t *b)
{
	buf_reserve(&kc.in, 65536);
	b->base = kc.in.data + kc.in.len;
	b->len = kc.in.cap - kc.in.len - 1;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	if (once_finished())
		return; /* printed; the loop is stopping */
	if (n < 0) {
		drop_connection(n == UV_EOF ? "server closed the connection" : uv_strerror((int)n));
		return;
	}
	kc.in.len += (size_t)n;
	for (;;) {
		size_t linelen;
		int used = console_line_next(buf_rptr(&kc.in), buf_avail(&kc.in), KC_FRAME_LIMIT,
					     &linelen);
		if (used < 0) {
			drop_connection("frame too long");
			return;
		}
		if (used == 0)
			break;
		on_frame(buf_rptr(&kc.in), linelen);
		buf_consume(&kc.in, (size_t)used);
		if (!kc.connected || once_finished())
			return;
	}
	buf_compact(&kc.in);
}

static void on_connect(uv_connect_t *req, int status)
{
	if (status < 0 && kc.once) {
		/* a script wants an answer now: nothing listens there (--timeout
		 * bounds a server that accepts but sends no snapshot) */
		fprintf(stderr, "kumo-console: cannot connect to %s: %s\n", kc.addr_text,
			uv_strerror(status));
		finish(1);
		return;
	}
	if (status < 0) {
		drop_connection(uv_strerror(status));
		return;
	}
	kc.connected = 1;
	snprintf(kc.conn_text, sizeof(kc.conn_text), "CONNECTED %s", kc.addr_text);
	kc_model_reset(&kc.model);
	kc.model.paused = 0;
	uv_read_start((uv_stream_t *)&kc.tcp, read_alloc, on_read);
	if (kc_tui_watch_id() && kc.tui)
		send_cmd("{\"cmd\":\"watch_task\",\"id\":%" PRIu64 "}\n", kc_tui_watch_id());
	if (kc.tui)
		send_view_request();
	draw();
}

static void start_connect(uv_timer_t *t)
{
	if (kc.tcp_open)
		return schedule_retry("previous connection still closing");
	uv_tcp_init(kc.loop, &kc.tcp);
	kc.tcp_open = 1;
	snprintf(kc.conn_text, sizeof(kc.conn_text), "CONNECTING %s", kc.addr_text);
	int rc = uv_tcp_connect(&kc.connect_req, &kc.tcp, (struct sockaddr *)&kc.addr, on_connect);
	if (rc < 0)
		drop_connection(uv_strerror(rc));
	draw();
}

static void schedule_retry(const char *why)
{
	kc.backoff_ms = kc.backoff_ms ? kc.backoff_ms * 2 : KC_BACKOFF_MIN_MS;
	if (kc.backoff_ms > KC_BACKOFF_MAX_MS)
		kc.backoff_ms = KC_BACKOFF_MAX_MS;
	snprintf(kc.why, sizeof(kc.why), "%s", why);
	kc.retry_at_ns = clock_mono_ns() + kc.backoff_ms * 1000000ull;
	uv_timer_start(&kc.retry, start_connect, kc.backoff_ms, 0);
	draw();
}

static void update_conn_text(void)
{
	if (kc.connected || !kc.retry_at_ns)
		return;
	uint64_t now = clock_mono_ns();
	double left = kc.retry_at_ns > now ? (double)(kc.retry_at_ns - now) / 1e9 : 0;
	snprintf(kc.conn_text, sizeof(kc.conn_text), "RECONNECTING IN %.1fs (%s: %s)", left,
		 kc.addr_text, kc.why);
}

static void on_deadline(uv_timer_t *t)
{
	fprintf(stderr, "kumo-console: no state from %s within the timeout (%s)\n", kc.addr_text,
		kc.why[0] ? kc.why : "no complete snapshot");
	finish(1);
}

/* --- replay ----------------------------------------------------------------- */

static int load_recording(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		fprintf(stderr, "kumo-console: --replay %s: %s\n", path, strerror(errno));
		return -1;
	}
	char *line = NULL;
	size_t cap = 0, n = 0;
	ssize_t len;
	while ((len = getline(&line, &cap, f)) >= 0) {
		if (kc.nlines == n) {
			n = n ? n * 2 : 1024;
			kc.lines = xrealloc(kc.lines, n * sizeof(*kc.lines));
		}
		kc.lines[kc.nlines++] = xstrndup(line, (size_t)len);
	}
	free(line);
	fclose(f);
	if (!kc.nlines || strncmp(kc.lines[0], "{\"v\":", 5) != 0) {
		fprintf(stderr,
			"kumo-console: --replay %s: line 1: not a kumod recording (want a "
			"{\"v\":1,...} header)\n",
			path);
		return -1;
	}
	return 0;
}

static uint64_t line_now(const char *l)
{
	const char *p = strstr(l, "\"now\":");
	return p ? strtoull(p + 6, NULL, 10) : 0;
}

/* Applies line kc.cur; on error stops with a message naming the line. */
static int replay_apply(void)
{
	const char *l = kc.lines[kc.cur];
	size_t len = strlen(l);
	char err[160];
	if (len == 0 || l[len - 1] != '\n') {
		snprintf(err, sizeof(err), "truncated (no newline at the end)");
		goto fail;
	}
	if (kc_model_apply(&kc.model, l, len - 1, err, sizeof(err)) < 0)
		goto fail;
	kc.cur++;
	return 0;
fail:
	kc.replay_failed = 1;
	snprintf(kc.replay_text, sizeof(kc.replay_text), "STOPPED: %s line %zu: %s", kc.replay_path,
		 kc.cur + 1, err);
	if (!kc.tui)
		fprintf(stderr, "kumo-console: --replay %s: line %zu: %s\n", kc.replay_path,
			kc.cur + 1, err);
	return -1;
}

static void replay_status(void)
{
	if (kc.replay_failed)
		return;
	/* line 0 is the recording's header, not a frame; the header bar
	 * already says REPLAY */
	snprintf(kc.replay_text, sizeof(kc.replay_text), "x%g frame %zu/%zu%s%s", kc.speed,
		 kc.cur ? kc.cur - 1 : 0, kc.nlines - 1, kc.replay_paused ? " PAUSED" : "",
		 kc.cur >= kc.nlines ? " END" : "");
}

/* Applies the frames of one moment (up to the next update with a later
 * `now`) and schedules the next step. */
static void replay_step(uv_timer_t *t)
{
	uint64_t at = 0;
	while (kc.cur < kc.nlines && !kc.replay_failed) {
		uint64_t now = strstr(kc.lines[kc.cur], "\"type\":\"update\"")
				   ? line_now(kc.lines[kc.cur])
				   : 0;
		if (at && now && now > at)
			break;
		if (replay_apply() < 0)
			break;
		if (now)
			at = now;
	}
	replay_status();
	draw();
	if (kc.replay_failed || kc.cur >= kc.nlines || kc.replay_paused)
		return;
	uint64_t next = line_now(kc.lines[kc.cur]);
	uint64_t delay_ms = next > at && at ? (uint64_t)((double)(next - at) / 1e6 / kc.speed) : 0;
	if (delay_ms > 10000)
		delay_ms = 10000; /* idle gaps in a recording are not worth waiting for */
	uv_timer_start(&kc.step, replay_step, delay_ms, 0);
}

static int replay_once(void)
{
	while (kc.cur < kc.nlines)
		if (replay_apply() < 0)
			return 1;
	print_once();
	return 0;
}

/* --- keys and redraw -------------------------------------------------------- */

static void replay_key(enum kc_key_result r)
{
	switch (r) {
	case KC_KEY_PAUSE:
		kc.replay_paused = !kc.replay_paused;
		if (!kc.replay_paused)
			replay_step(&kc.step);
		else
			uv_timer_stop(&kc.step);
		break;
	case KC_KEY_STEP:
		kc.replay_paused = 1;
		uv_timer_stop(&kc.step);
		replay_step(&kc.step);
		break;
	case KC_KEY_FASTER:
		kc.speed = kc.speed < 64 ? kc.speed * 2 : kc.speed;
		break;
	case KC_KEY_SLOWER:
		kc.speed = kc.speed > 0.25 ? kc.speed / 2 : kc.speed;
		break;
	default:
		break;
	}
	replay_status();
}

static void live_key(enum kc_key_result r)
{
	switch (r) {
	case KC_KEY_PAUSE:
		send_cmd(kc.model.paused ? "{\"cmd\":\"resume\"}\n" : "{\"cmd\":\"pause\"}\n", 0);
		break;
	case KC_KEY_WATCH:
		send_cmd("{\"cmd\":\"watch_task\",\"id\":%" PRIu64 "}\n", kc_tui_watch_id());
		break;
	case KC_KEY_UNWATCH:
		send_cmd("{\"cmd\":\"unwatch_task\"}\n", 0);
		break;
	case KC_KEY_REQUEST:
		send_view_request();
		break;
	default:
		break;
	}
}

static void on_keys(uv_poll_t *p, int status, int events)
{
	enum kc_key_result r;
	while ((r = kc_tui_keys(&kc.model)) != KC_KEY_NONE) {
		if (r == KC_KEY_QUIT) {
			finish(0);
			return;
		}
		if (kc.replay_path)
			replay_key(r);
		else
			live_key(r);
	}
	draw();
}

static void on_redraw(uv_timer_t *t)
{
	static unsigned ticks;
	/* a drill-down view is refreshed about once a second */
	if (!kc.replay_path && ++ticks % (1000 / KC_REDRAW_MS) == 0)
		send_view_request();
	update_conn_text();
	draw();
}

static void close_all(uv_handle_t *h, void *arg)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static int run_tui(void)
{
	if (kc_tui_start(kc.ascii, kc.colors) < 0) {
		fprintf(stderr, "kumo-console: cannot start the terminal UI (TERM=%s)\n",
			getenv("TERM") ? getenv("TERM") : "");
		return 1;
	}
	kc.tui = 1;
	uv_poll_init(kc.loop, &kc.keys, STDIN_FILENO);
	uv_poll_start(&kc.keys, UV_READABLE, on_keys);
	uv_timer_init(kc.loop, &kc.redraw);
	uv_timer_start(&kc.redraw, on_redraw, KC_REDRAW_MS, KC_REDRAW_MS);
	return 0;
}

int main(int argc, char **argv)
{
	kc_model_init(&kc.model);
	int rc = parse_args(argc, argv);
	if (rc)
		return rc;
	signal(SIGPIPE, SIG_IGN);
	kc.loop = uv_default_loop();
	buf_init(&kc.in);
	if (kc.replay_path) {
		if (load_recording(kc.replay_path) < 0)
			return 1;
		if (kc.once) {
			rc = replay_once();
			goto out;
		}
		uv_timer_init(kc.loop, &kc.step);
		if (run_tui())
			return 1;
		replay_step(&kc.step);
	} else {
		if (parse_addr(kc.addr_text, &kc.addr) < 0) {
			fprintf(stderr, "kumo-console: '%s': want HOST:PORT (127.0.0.1:6669)\n",
				kc.addr_text);
			return 2;
		}
		uv_timer_init(kc.loop, &kc.retry);
		if (kc.once) {
			uv_timer_init(kc.loop, &kc.deadline);
			uv_timer_start(&kc.deadline, on_deadline, kc.timeout_ns / 1000000, 0);
		} else if (run_tui()) {
			return 1;
		}
		start_connect(&kc.retry);
	}
	uv_run(kc.loop, UV_RUN_DEFAULT);
	rc = kc.exit_code;
	if (kc.tui)
		kc_tui_stop();
out:
	uv_walk(kc.loop, close_all, NULL);
	uv_run(kc.loop, UV_RUN_DEFAULT);
	uv_loop_close(kc.loop);
	for (size_t i = 0; i < kc.nlines; i++)
		free(kc.lines[i]);
	free(kc.lines);
	buf_free(&kc.in);
	kc_model_free(&kc.model);
	return rc;
}
