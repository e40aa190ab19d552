/* SPDX-License-Identifier: Apache-2.0 */
/* kumod: argument parsing, wiring, start-up and shutdown order. */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/fdlimit.h"
#include "base/log.h"
#include "base/memlimit.h"
#include "base/metrics.h"
#include "base/task.h"
#include "ctl/http.h"
#include "ctl/introspect.h"
#include "ctl/metrics_collect.h"
#include "proto/console_proto.h"
#include "io/loop.h"
#include "ktrace.h"
#include "policy.h"
#include "proto/smtp_cmd.h"
#include "smtp/server.h"
#include "dispatch/ready.h"
#include "dns/resolver.h"
#include "queue/queue.h"
#include "spool/logrec.h"
#include "spool/message.h"
#include "spool/spool.h"

#define SHUTDOWN_GRACE_MS 10000
/* Deliveries in flight at shutdown get this long to hear the peer's reply
 * (a message the peer took but whose 250 kumod never read would be sent
 * again after the restart). */
#define SHUTDOWN_DELIVERY_GRACE_MS 2000

static struct {
	const char *policy;
	const char *user;
	uid_t user_uid; /* --user, looked up by check_user() */
	gid_t user_gid;
	const char *diag_dir;
	const char *pid_file; /* --pid-file: written once listening, removed at exit */
	int validate;
	const char *validate_domain; /* --validate-domain */
	int console;
	enum log_format format;
	uv_signal_t sigterm, sigint, sighup;
	uv_timer_t reaper, shutdown_timer;
	struct task *main_task;
	uint64_t shutdown_deadline, delivery_deadline;
	int delivery_warned;
	int exit_code;
} app;

static void usage(FILE *out)
{
	fprintf(
	    out,
	    "Usage: kumod [OPTIONS]\n"
	    "\n"
	    "The kumod mail daemon: ESMTP listener, Lua 5.4 policy, tracepoints.\n"
	    "\n"
	    "Options:\n"
	    "  --policy FILE         policy script (default: $KUMO_POLICY, else policy/init.lua)\n"
	    "  --validate            load the policy, run pre_init/init, then every handler\n"
	    "                        once with sample arguments; exit 0 (valid) or 1\n"
	    "  --validate-domain D   the recipient domain of --validate's samples\n"
	    "                        (default example.com)\n"
	    "  --user NAME           drop privileges to NAME after binding (when started as root)\n"
	    "  --pid-file FILE       write the pid to FILE once listening (removed at exit)\n"
	    "  --diag-format FORMAT  diagnostic log format: full (default), compact, json\n"
	    "  --diag-log-dir DIR    write diagnostics to DIR/log.YYYY-MM-DD-HH instead of stderr\n"
	    "  --tokio-console       serve live tasks and queues (alias --console)\n"
	    "  --list-metrics[=markdown]  print every metric family (name, type, label,\n"
	    "                        meaning) and exit; markdown: the docs/metrics.md table\n"
	    "  --list-api[=markdown] print every KumoMTA Lua API name (functions, message\n"
	    "                        methods, events, modules) and whether kumod has it\n"
	    "  -h, --help            print this help\n"
	    "  -V, --version         print the version\n"
	    "\n"
	    "Environment:\n"
	    "  KUMOD_LOG             diagnostic filter, e.g. kumod=trace or warn,kumod=debug\n"
	    "  KUMO_POLICY           default policy path\n"
	    "  KUMOD_LOG_COLOR       auto (colour only on a terminal), always or never\n"
	    "  KUMOD_LOG_ROLE        name shown in every diagnostic line, e.g. [sink]\n"
	    "  NO_COLOR              disable ANSI colour in diagnostics (unless\n"
	    "                        KUMOD_LOG_COLOR=always)\n"
	    "\n"
	    "Docs: docs/getting-started.md, docs/kumod-log.md, docs/tracing.md, "
	    "docs/policy-api.md\n");
}

/* --list-metrics: the declared families, as docs/metrics.md shows them. */
static void list_metrics(int markdown)
{
	struct buf out;
	buf_init(&out);
	metrics_collect_register();
	metrics_list(&out, markdown);
	fwrite(out.data, 1, out.len, stdout);
	buf_free(&out);
	metrics_reset();
}

static int parse_args(int argc, char **argv)
{
	enum {
		OPT_POLICY = 256,
		OPT_VALIDATE,
		OPT_USER,
		OPT_FORMAT,
		OPT_DIR,
		OPT_CONSOLE,
		OPT_LIST_METRICS,
		OPT_LIST_API,
		OPT_VALIDATE_DOMAIN,
		OPT_PID_FILE
	};
	static const struct option opts[] = {
	    {"policy", required_argument, NULL, OPT_POLICY},
	    {"validate", no_argument, NULL, OPT_VALIDATE},
	    {"user", required_argument, NULL, OPT_USER},
	    {"diag-format", required_argument, NULL, OPT_FORMAT},
	    {"diag-log-dir", required_argument, NULL, OPT_DIR},
	    {"tokio-console", no_argument, NULL, OPT_CONSOLE},
	    {"console", no_argument, NULL, OPT_CONSOLE},
	    {"list-metrics", optional_argument, NULL, OPT_LIST_METRICS},
	    {"list-api", optional_argument, NULL, OPT_LIST_API},
	    {"validate-domain", required_argument, NULL, OPT_VALIDATE_DOMAIN},
	    {"pid-file", required_argument, NULL, OPT_PID_FILE},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, ":hV", opts, NULL)) != -1) {
		switch (c) {
		case OPT_POLICY:
			app.policy = optarg;
			break;
		case OPT_VALIDATE:
			app.validate = 1;
			break;
		case OPT_USER:
			app.user = optarg;
			break;
		case OPT_PID_FILE:
			app.pid_file = optarg;
			break;
		case OPT_FORMAT:
			if (strcmp(optarg, "full") == 0)
				app.format = LOG_FORMAT_FULL;
			else if (strcmp(optarg, "compact") == 0)
				app.format = LOG_FORMAT_COMPACT;
			else if (strcmp(optarg, "json") == 0)
				app.format = LOG_FORMAT_JSON;
			else {
				fprintf(stderr,
					"kumod: invalid --diag-format '%s' (full, compact, json)\n",
					optarg);
				return 2;
			}
			break;
		case OPT_DIR:
			app.diag_dir = optarg;
			break;
		case OPT_CONSOLE:
			app.console = 1;
			break;
		case OPT_LIST_METRICS:
		case OPT_LIST_API:
			if (optarg && strcmp(optarg, "markdown") != 0) {
				fprintf(stderr, "kumod: invalid %s format '%s' (markdown)\n",
					c == OPT_LIST_API ? "--list-api" : "--list-metrics",
					optarg);
				return 2;
			}
			if (c == OPT_LIST_API)
				policy_list_api(stdout, optarg != NULL);
			else
				list_metrics(optarg != NULL);
			exit(0);
		case OPT_VALIDATE_DOMAIN:
			app.validate_domain = optarg;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case 'V':
			printf("kumod %s\n", KUMOD_VERSION);
			exit(0);
		case ':':
			fprintf(stderr, "kumod: option '%s' needs a value (see --help)\n",
				argv[optind - 1]);
			return 2;
		default:
			fprintf(stderr, "kumod: unknown option '%s' (see --help)\n",
				argv[optind - 1]);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "kumod: unexpected argument '%s' (see --help)\n", argv[optind]);
		return 2;
	}
	if (!app.policy)
		app.policy = getenv("KUMO_POLICY") ? getenv("KUMO_POLICY") : "policy/init.lua";
	return 0;
}

static int setup_logging(void)
{
	char err[512];
	const char *env = getenv("KUMOD_LOG");
	/* as upstream: a value that is not valid UTF-8 counts as unset */
	if (env && !smtp_utf8_valid(env, strlen(env)))
		env = NULL;
	const char *filter = env ? env : app.validate ? "error" : LOG_DEFAULT_FILTER;
	if (log_set_filter(filter, err, sizeof(err)) != 0) {
		fprintf(stderr, "kumod: invalid KUMOD_LOG: %s\n", err);
		return 1;
	}
	log_set_format(app.format);
	log_set_role(getenv("KUMOD_LOG_ROLE"));
	const char *color = getenv("KUMOD_LOG_COLOR");
	if (color && *color && log_set_color(color) != 0) {
		fprintf(stderr,
			"kumod: invalid KUMOD_LOG_COLOR '%s': expected auto, always or never\n",
			color);
		return 1;
	}
	if (app.diag_dir) {
		int rc = log_set_dir(app.diag_dir);
		if (rc < 0) {
			fprintf(stderr, "kumod: --diag-log-dir '%s': %s\n", app.diag_dir,
				strerror(-rc));
			return 1;
		}
	}
	return 0;
}

/* Open files raised to the hard limit (the SMTP/HTTP budgets follow it);
 * KUMOD_MEMORY_SOFT_LIMIT/HARD_LIMIT read before the policy may override. */
static int raise_nofile(void)
{
	fdlimit_raise();
	memlimit_init_reserve();
	char err[256];
	if (memlimit_from_env(err, sizeof(err)) != 0) {
		fprintf(stderr, "kumod: %s\n", err);
		return 1;
	}
	return 0;
}

/* --pid-file: "<pid>\n", so a tracer can pick this process among several
 * (`bpftrace -p $(cat var/run/kumod.pid)`). Written after the policy's
 * listeners are bound, before privileges are dropped. */
static int write_pid_file(void)
{
	if (!app.pid_file)
		return 0;
	FILE *f = fopen(app.pid_file, "w");
	if (!f || fprintf(f, "%ld\n", (long)getpid()) < 0 || fclose(f) != 0) {
		fprintf(stderr, "kumod: --pid-file '%s': %s\n", app.pid_file, strerror(errno));
		return 1;
	}
	return 0;
}

/* --user is looked up before the policy runs, so a wrong name is refused
 * before anything binds or opens a spool; the switch happens after. */
static int check_user(void)
{
	if (!app.user)
		return 0;
	struct passwd *pw = getpwnam(app.user);
	if (!pw) {
		fprintf(stderr, "kumod: --user '%s': no such user\n", app.user);
		return 1;
	}
	if (geteuid() != 0 && pw->pw_uid != geteuid()) {
		fprintf(stderr, "kumod: --user '%s': must be started as root to switch user\n",
			app.user);
		return 1;
	}
	app.user_uid = pw->pw_uid;
	app.user_gid = pw->pw_gid;
	return 0;
}

static int drop_privileges(void)
{
	if (!app.user) {
		if (geteuid() == 0)
			log_warn("kumod", "running as root: pass --user NAME to drop privileges");
		return 0;
	}
	if (geteuid() != 0)
		return 0; /* check_user: already that user */
	if (initgroups(app.user, app.user_gid) != 0 || setgid(app.user_gid) != 0 ||
	    setuid(app.user_uid) != 0) {
		fprintf(stderr, "kumod: --user '%s': %s\n", app.user, strerror(errno));
		return 1;
	}
	log_info("kumod", "dropped privileges to user %s", app.user);
	return 0;
}

static void close_walk_cb(uv_handle_t *h, void *arg)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static void finish_shutdown(void)
{
	uv_timer_stop(&app.shutdown_timer);
	/* Delivery stops; whatever is queued or in flight stays in the spool. */
	ready_shutdown();
	dns_shutdown();
	queue_shutdown();
	http_server_shutdown(); /* kept open while sessions drained: liveness said 503 */
	KTRACE(shutdown_complete);
	introspect_stop();
	task_close(app.main_task);
	app.main_task = NULL;
	uv_walk(kumod_loop(), close_walk_cb, NULL);
}

static void shutdown_tick(uv_timer_t *t)
{
	struct task *prev = task_enter(app.main_task);
	size_t left = smtp_server_session_count();
	size_t inflight = ready_inflight();
	if (inflight && clock_mono_ns() >= app.delivery_deadline) {
		if (!app.delivery_warned)
			log_warn(
			    "kumod",
			    "shutdown: %zu deliveries still in flight after %d ms; they stay in "
			    "the spool and are retried after the restart",
			    inflight, SHUTDOWN_DELIVERY_GRACE_MS);
		app.delivery_warned = 1;
		inflight = 0;
	}
	if (left == 0 && inflight == 0) {
		task_exit(app.main_task, prev);
		finish_shutdown();
		return;
	}
	if (clock_mono_ns() >= app.shutdown_deadline) {
		log_warn("kumod", "shutdown grace period over with %zu sessions open; closing them",
			 left);
		task_exit(app.main_task, prev);
		finish_shutdown();
		return;
	}
	task_exit(app.main_task, prev);
}

/* Stops accepting, drains sessions and deliveries, then ends the loop. */
static void begin_shutdown(const char *why)
{
	if (!kumod_shutting_down()) {
		KTRACE(shutdown_begin, why);
		kumod_set_shutting_down();
		task_set_phase(app.main_task, "ShuttingDown", NULL);
		smtp_server_shutdown();
		ready_drain();
		size_t inflight = ready_inflight();
		if (inflight)
			log_info("kumod",
				 "shutdown: waiting up to %d ms for %zu deliveries in flight",
				 SHUTDOWN_DELIVERY_GRACE_MS, inflight);
		app.shutdown_deadline = clock_mono_ns() + SHUTDOWN_GRACE_MS * 1000000ull;
		app.delivery_deadline = clock_mono_ns() + SHUTDOWN_DELIVERY_GRACE_MS * 1000000ull;
		uv_timer_start(&app.shutdown_timer, shutdown_tick, 0, 50);
	}
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct task *prev = task_enter(app.main_task);
	if (signum == SIGHUP) {
		log_info("kumod", "SIGHUP: reopening log files");
		log_reopen();
		task_exit(app.main_task, prev);
		return;
	}
	begin_shutdown(strsignal(signum));
	task_exit(app.main_task, prev);
}

/* The RocksDB spool opens after the listeners started (spool_open); when
 * that open fails kumod exits with the error, as a failed define_spool
 * does: sessions waiting for it were answered 451, nothing was accepted. */
static void spool_open_failed(const char *err)
{
	struct task *prev = task_enter(app.main_task);
	fprintf(stderr, "kumod: policy error: define_spool: %s\n", err);
	app.exit_code = 1;
	begin_shutdown("spool open failed");
	task_exit(app.main_task, prev);
}

/* Queue snapshots for the console (kumo-console's Queues view). */
static void sched_q_cb(const struct queue_info *qi, void *ctx)
{
	struct buf *b = introspect_queue_begin(ctx, "scheduled", qi->name);
	console_json_kv_u64(b, "count", qi->count);
	if (qi->next_due_ms)
		console_json_kv_u64(b, "next_due_ms", qi->next_due_ms);
	console_json_kv_bool(b, "suspended", qi->suspended);
	introspect_queue_end(ctx);
}

static void ready_q_cb(const struct ready_info *ri, void *ctx)
{
	struct buf *b = introspect_queue_begin(ctx, "ready", ri->name);
	console_json_kv_u64(b, "count", ri->count);
	console_json_kv_u64(b, "connections", ri->connections);
	console_json_kv_u64(b, "connection_limit", ri->connection_limit);
	console_json_kv_u64(b, "max_ready", ri->max_ready);
	console_json_kv_u64(b, "delivered", ri->delivered);
	console_json_kv_u64(b, "transfail", ri->transfail);
	console_json_kv_u64(b, "failed", ri->failed);
	console_json_kv_bool(b, "suspended", ri->suspended);
	console_json_kv_bool(b, "throttled", 0);
	introspect_queue_end(ctx);
}

static void queue_source(struct introspect_queues *qs, void *ctx)
{
	queue_foreach(sched_q_cb, qs);
	ready_foreach(ready_q_cb, qs);
}

/* spool_message_enumerated may re-assign the queue first; an error stops
 * kumod as it stops KumoMTA's start-up: that message and the ones not yet
 * enumerated stay in the spool untouched. */
static void recovered_cb(struct message *m, void *ctx)
{
	if (kumod_shutting_down())
		return; /* stays spooled: recovered at the next start */
	struct policy_result r;
	policy_spool_message_enumerated(m, &r);
	if (r.status != POLICY_OK) {
		fprintf(stderr,
			"kumod: policy error: spool_message_enumerated failed for message %s: %s "
			"(it stays in the spool; stopping)\n",
			m->id, r.text);
		app.exit_code = 1;
		begin_shutdown("spool_message_enumerated failed");
		return;
	}
	queue_insert(m, "Enumerated");
}

static void recovery_done_cb(void *ctx, size_t loaded, size_t quarantined)
{
	log_info("kumod::spool", "spool recovery complete: %zu messages queued, %zu quarantined",
		 loaded, quarantined);
}

/* After the loop ended (or --validate): flush logs, close the spool, free. */
static void shutdown_subsystems(uv_loop_t *loop)
{
	queue_shutdown();
	dns_shutdown();
	ready_free_all();
	/* pending spool and resolver handles are closed by now; run their close callbacks */
	uv_walk(loop, close_walk_cb, NULL);
	uv_run(loop, UV_RUN_DEFAULT);
	spool_close();
	logrec_shutdown();
	policy_close();
	uv_loop_close(loop);
}

static void reaper_cb(uv_timer_t *t)
{
	task_registry_reap(clock_wall_ns());
	logrec_poll(); /* the log writer's phase and errors, reported from the loop */
}

static void start_runtime(uv_loop_t *loop)
{
	uv_signal_init(loop, &app.sigterm);
	uv_signal_init(loop, &app.sigint);
	uv_signal_init(loop, &app.sighup);
	uv_signal_start(&app.sigterm, on_signal, SIGTERM);
	uv_signal_start(&app.sigint, on_signal, SIGINT);
	uv_signal_start(&app.sighup, on_signal, SIGHUP);
	uv_timer_init(loop, &app.reaper);
	uv_timer_start(&app.reaper, reaper_cb, 1000, 1000);
	uv_timer_init(loop, &app.shutdown_timer);
}

int main(int argc, char **argv)
{
	int rc = parse_args(argc, argv);
	if (rc)
		return rc;
	signal(SIGPIPE, SIG_IGN);
	if (setup_logging() || check_user())
		return 1;
	if (raise_nofile())
		return 1;
	uv_loop_t *loop = kumod_loop();
	app.main_task = task_spawn("main", "kumod", 0);
	task_set_phase(app.main_task, "Starting", NULL);
	KTRACE(kumod_start, KUMOD_VERSION, (uint64_t)getpid());
	if (access(app.policy, R_OK) != 0) {
		fprintf(stderr, "kumod: policy file '%s': %s\n", app.policy, strerror(errno));
		return 1;
	}
	char err[2048];
	if (dns_init(loop, NULL, err, sizeof(err)) != 0) {
		fprintf(stderr, "kumod: dns: %s\n", err);
		return 1;
	}
	queue_init(loop);
	ready_init(loop);
	introspect_register_queue_source(queue_source, NULL);
	spool_on_open_failure(spool_open_failed);
	struct task *prev = task_enter(app.main_task);
	rc = policy_load(app.policy, app.validate, err, sizeof(err));
	task_exit(app.main_task, prev);
	if (rc != 0) {
		fprintf(stderr, "kumod: policy error: %s\n", err);
		return 1;
	}
	if (app.validate && policy_validation_failed()) {
		fprintf(stderr, "kumod: Validation failed\n");
		shutdown_subsystems(loop);
		return 1;
	}
	if (app.validate) {
		int errors = policy_validate_handlers(
		    app.validate_domain ? app.validate_domain : "example.com", stdout);
		if (errors) {
			printf("policy %s is not valid: %d handler error%s\n", app.policy, errors,
			       errors == 1 ? "" : "s");
			shutdown_subsystems(loop);
			return 1;
		}
		printf("policy %s is valid\n", app.policy);
		shutdown_subsystems(loop);
		return 0;
	}
	if (write_pid_file() || drop_privileges())
		return 1;
	if (app.console) {
		struct introspect_config ccfg;
		if (introspect_config_from_env(&ccfg, err, sizeof(err)) != 0 ||
		    introspect_start(loop, &ccfg, err, sizeof(err)) != 0) {
			fprintf(stderr, "kumod: --tokio-console: %s\n", err);
			return 1;
		}
	}
	start_runtime(loop);
	if (spool_is_open()) {
		/* queued mail from a previous run goes back into its queues */
		task_set_phase(app.main_task, "Recovering", "spool");
		spool_recover(recovered_cb, recovery_done_cb, NULL);
	}
	task_set_phase(app.main_task, "Running", NULL);
	KTRACE(init_complete);
	uv_run(loop, UV_RUN_DEFAULT);
	shutdown_subsystems(loop);
	task_registry_clear();
	if (app.pid_file)
		unlink(app.pid_file);
	return app.exit_code;
}
