/* SPDX-License-Identifier: Apache-2.0 */
/* traffic-gen internals shared by its files: options, the run context (one
 * per loop), message generation and the SMTP and HTTP drivers. */
#ifndef TRAFFIC_GEN_TG_H
#define TRAFFIC_GEN_TG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "base/buf.h"
#include "base/hist.h"

#define TG_EXIT_OK 0
#define TG_EXIT_FAILED 1
#define TG_EXIT_USAGE 2

struct tg_domain {
	char *name; /* "<domain>.<suffix>" (suffix already applied) */
	uint32_t weight;
};

struct tg_opts {
	char *target; /* host:port (SMTP) or URL (HTTP) as given */
	unsigned concurrency;
	uint64_t duration_s;
	int duration_set;
	uint64_t message_count;			 /* 0 = unset */
	uint64_t throttle_n, throttle_period_ns; /* 0 = no throttle */
	size_t body_size;
	char *body_file;
	struct tg_domain *domains;
	size_t ndomains;
	uint64_t total_weight;
	char *suffix;	/* "" = none */
	char **headers; /* "Name: value" */
	size_t nheaders;
	char *recipient_local; /* ours: fixed local part instead of user-<n> */
	int starttls;
	int keep_going;
	int http;
	unsigned http_batch;
	int http_defer_spool, http_defer_generation;
	int json;
	uint64_t timeout_ms; /* ours: per-reply timeout */
};

enum tg_stop {
	TG_STOP_NONE = 0,
	TG_STOP_DEADLINE,
	TG_STOP_FINISHED,
	TG_STOP_FATAL,
	TG_STOP_SIGNAL,
};

struct tg_client;

/* Each driver embeds struct tg_client first and provides these. */
struct tg_client_ops {
	void (*start)(struct tg_client *cl);
	void (*stop)(struct tg_client *cl);
	void (*free)(struct tg_client *cl);
	int (*done)(const struct tg_client *cl); /* stopped for good */
};

struct tg_client {
	const struct tg_client_ops *ops;
	struct tg *tg;
	unsigned idx;
};

/* The run: one per loop. */
#define TG_REPLY_CODES 600

struct tg {
	struct tg_opts o;
	uv_loop_t *loop;
	struct sockaddr_storage addr;
	char host[300]; /* for Host: and messages */
	char hostport[330];
	char http_path[256];
	struct task *task;

	/* Message parts built once. */
	struct buf body;	  /* raw body (CRLF lines), no terminator */
	struct buf body_wire;	  /* body dot-stuffed with the ".\r\n" terminator */
	struct buf body_json;	  /* body escaped as JSON string content */
	struct buf extra_headers; /* the --header lines, CRLF terminated */
	char date[64];		  /* RFC 2822 date, refreshed every second */
	uint64_t date_sec;

	/* Accounting. */
	uint64_t claimed; /* messages started or done (count mode) */
	uint64_t sent, failed, reconnects, conn_errors;
	uint64_t replies[TG_REPLY_CODES]; /* messages per final reply code (100..599) */
	uint64_t open_conns;
	int ever_connected;
	struct hist lat;
	uint64_t start_ns, end_ns;
	uint64_t next_slot_ns; /* throttle: earliest start of the next message */
	enum tg_stop stop;
	char fatal[256];

	/* Live output. */
	int tty;
	uint64_t last_tick_ns, last_tick_sent;
	int live_line_open;
	uv_timer_t tick, deadline;
	uv_signal_t sigint;

	struct tg_client **clients;
	size_t nclients, running;
	uint64_t rng;
};

/* options.c */
/* Parses argv into o; on error prints one line to stderr and returns
 * TG_EXIT_USAGE; returns -1 when --help was printed; 0 otherwise. */
int tg_parse_options(struct tg_opts *o, int argc, char **argv);
void tg_opts_free(struct tg_opts *o);
int tg_parse_size(const char *s, size_t *out);
int tg_parse_throttle(const char *s, uint64_t *n, uint64_t *period_ns);

/* gen.c */
uint64_t tg_rand(struct tg *tg);
const char *tg_pick_domain(struct tg *tg);
/* Builds body, body_wire, body_json and extra_headers; 0 or -1 with err. */
int tg_build_bodies(struct tg *tg, char *err, size_t errlen);
void tg_refresh_date(struct tg *tg);
/* Envelope and the header block of one message (header ends with the
 * blank line). sender/rcpt get NUL-terminated addresses. */
void tg_make_message(struct tg *tg, char *sender, size_t slen, char *rcpt, size_t rlen,
		     struct buf *hdr);
void tg_make_recipient(struct tg *tg, char *rcpt, size_t rlen);
void tg_make_sender(struct tg *tg, char *sender, size_t slen);
/* Formats n with "," thousands separators. */
const char *tg_commas(uint64_t n, char *out, size_t cap);
/* Appends s escaped as JSON string content. */
void tg_json_escape(struct buf *b, const char *s, size_t len);

/* run.c: shared scheduling used by both drivers. */
/* Claims up to `want` messages; returns how many (0 = nothing left). */
uint64_t tg_claim(struct tg *tg, uint64_t want);
void tg_unclaim(struct tg *tg, uint64_t n);
/* Nanoseconds to wait before starting n messages (throttle); reserves the slot. */
uint64_t tg_throttle_delay(struct tg *tg, uint64_t n);
void tg_client_finished(struct tg *tg); /* a client stopped for good */
void tg_fatal(struct tg *tg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int tg_stopping(const struct tg *tg);
/* One "traffic-gen: ..." line on stderr (not with --json); ends the live
 * progress line first when one is open on the terminal, and only then. */
void tg_warn(struct tg *tg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Counts n messages answered with reply code (SMTP, or HTTP for --http). */
void tg_count_reply(struct tg *tg, int code, uint64_t n);

/* smtp_driver.c / http_driver.c */
struct tg_client *tg_smtp_client_new(struct tg *tg, unsigned idx);
struct tg_client *tg_http_client_new(struct tg *tg, unsigned idx);
void tg_client_start(struct tg_client *cl);
/* Stop request (deadline, signal, fatal): idle clients quit at once. */
void tg_client_stop(struct tg_client *cl);
void tg_client_free(struct tg_client *cl);

#endif
