/* SPDX-License-Identifier: Apache-2.0 */
/* The live SMTP transcript hook: the server session (session.c) and the
 * client engine (client.c) report what they exchange through SMTP_TRACE(),
 * which costs one predicted branch while nobody subscribes. Subscribers
 * (a small fixed list) each name the sides they want: the websocket fan-out
 * for `kcli trace-smtp-server/-client` (kumod/ctl/trace_smtp.c) and the
 * per-session transcript ring (smtp/transcript.c: the mail catcher's
 * per-message conversation and the console's session view).
 * The hook never sees a secret: callers pass AUTH lines already redacted.
 * Loop thread only. */
#ifndef KUMOD_SMTP_SMTP_TRACE_H
#define KUMOD_SMTP_SMTP_TRACE_H

#include <stddef.h>
#include <stdint.h>

enum smtp_trace_side {
	SMTP_TRACE_SERVER = 1,
	SMTP_TRACE_CLIENT = 2,
};

enum smtp_trace_kind {
	SMTP_TRACE_BEGIN,     /* client: session created (connect starts) */
	SMTP_TRACE_CONNECTED, /* server: accepted; client: TCP connected */
	SMTP_TRACE_CLOSED,    /* text: why */
	SMTP_TRACE_READ,      /* text[0..len): a line or reply read from the peer */
	SMTP_TRACE_WRITE,     /* server: code/enhanced/text of a reply; client: a command line */
	SMTP_TRACE_DATA,      /* message content: server read it, client wrote it */
	SMTP_TRACE_TLS,	      /* ok; text = protocol, text2 = cipher (or the error) */
	SMTP_TRACE_AUTH,      /* text = mechanism, text2 = result, name = identity */
	SMTP_TRACE_POLICY,    /* name = event, text = result, code */
	SMTP_TRACE_MESSAGE,   /* server: queued (name = id, text = sender, text2 = queue);
				 client: obtained (text = sender, rcpts) */
};

struct smtp_transcript;

struct smtp_trace_ev {
	enum smtp_trace_side side;
	enum smtp_trace_kind kind;
	uint64_t session;
	const void *meta; /* server: the session's conn_meta (json_t *), else NULL */
	struct smtp_transcript *transcript; /* server: the session's ring, else NULL */
	const char *peer, *local;
	uint64_t parent_task; /* client: the dispatcher task (its name is the ready queue) */
	const char *text, *text2, *name;
	size_t len; /* text length for READ/DATA (text may hold no NUL) */
	int code, ok;
	const char *enhanced;
	const char *const *rcpts;
	size_t nrcpts;
};

/* Bit set of sides with at least one subscriber (the union of their sides). */
extern unsigned smtp_trace_active;

#define SMTP_TRACE(sd, ...)                                                                   \
	do {                                                                                  \
		if (__builtin_expect((smtp_trace_active & (sd)) != 0, 0))                     \
			smtp_trace__emit(&(struct smtp_trace_ev){.side = (sd), __VA_ARGS__}); \
	} while (0)

/* Shorthands for the two callers: s is a struct smtp_session *, c a
 * struct smtp_client * (expanded where those types are known). */
#define SMTP_TRACE_SRV(s, ...)                                               \
	SMTP_TRACE(SMTP_TRACE_SERVER, .session = (s)->id, .meta = (s)->meta, \
		   .transcript = &(s)->ts, __VA_ARGS__)
#define SMTP_TRACE_CLI(c, ...)                                                              \
	SMTP_TRACE(SMTP_TRACE_CLIENT, .session = (c)->id, .parent_task = (c)->task->parent, \
		   .peer = (c)->conn.peer, .local = (c)->conn.local, __VA_ARGS__)

void smtp_trace__emit(const struct smtp_trace_ev *ev);

/* --- subscribers ----------------------------------------------------------
 * fn(ev, arg) runs synchronously inside the protocol code for every event of
 * a side in its set, in subscription order; it must not re-enter the
 * session. sides may be 0 (subscribed but quiet) and change at any time. */
#define SMTP_TRACE_MAX_SUBS 8
typedef void (*smtp_trace_fn)(const struct smtp_trace_ev *ev, void *arg);
/* Returns a handle (>= 0), or -ENOSPC when the list is full. */
int smtp_trace_subscribe(unsigned sides, smtp_trace_fn fn, void *arg);
void smtp_trace_set_sides(int handle, unsigned sides);
void smtp_trace_unsubscribe(int handle);

#endif
