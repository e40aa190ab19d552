/* SPDX-License-Identifier: Apache-2.0 */
/* A message's whole story: a bounded in-memory ring per message of
 * (time, event, detail), fed by MSG_TIMELINE() beside the tracepoints that
 * concern that message (reception, policy, spool writes, queue moves,
 * each delivery attempt with the peer's reply, the outcome). Kept while the
 * message lives and for the last MSG_TIMELINE_KEEP finished messages, so
 * `kcli inspect-message ID --timeline` also answers after delivery.
 * Settings (read once, at the first note): KUMOD_MESSAGE_TIMELINE = entries
 * per message (default 32, 0 = off, at most 1024); KUMOD_MESSAGE_TIMELINE_BYTES
 * = bytes of packed entries per message (default MSG_TIMELINE_BYTES, 0 = no
 * byte limit, else 128..65536): over either limit the first entries after
 * the head (the first 4: policy, reception, spool, ...) go, so the story
 * keeps its start and its latest events, with a "Dropped" entry in their
 * place; a head entry takes at most a fifth of the budget.
 * KUMOD_MESSAGE_TIMELINE_LOG=1 adds the timeline to the final log record
 * (key "timeline").
 * Loop thread only. Callers: smtp, queue, dispatch, spool, ctl. */
#ifndef KUMOD_SPOOL_TIMELINE_H
#define KUMOD_SPOOL_TIMELINE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define MSG_TIMELINE_KEEP 1024	     /* finished messages whose story is kept */
#define MSG_TIMELINE_LIVE_MAX 200000 /* live messages with a story; later ones get none */
#define MSG_TIMELINE_BYTES 512	     /* default byte budget of one story */

/* Entries per message; 0 when off. -1 before the settings were read. */
extern int msg_timeline_size;

#define MSG_TIMELINE(id, event, ...)                                    \
	do {                                                            \
		if (__builtin_expect(msg_timeline_size != 0, 1))        \
			msg_timeline__note((id), (event), __VA_ARGS__); \
	} while (0)

/* Appends one entry (event: a static string; detail printf-formatted, cut
 * at 240 bytes). A message seen for the first time gets a new ring. */
void msg_timeline__note(const char *id, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The message object was freed: its story moves to the finished ones. */
void msg_timeline_end(const char *id);

/* [{"at": RFC 3339 µs, "event", "detail", "elapsed_us", "delta_us"}] for
 * the message, or NULL when none is kept; where entries were dropped, one
 * {"event": "Dropped", "detail": "… N earlier events dropped"} stands in
 * their place. *finished says whether the message is gone, *dropped how
 * many entries the story lost. */
json_t *msg_timeline_json(const char *id, int *finished, uint64_t *dropped);

/* 1 when KUMOD_MESSAGE_TIMELINE_LOG asked for the timeline in final records. */
int msg_timeline_in_log(void);

#endif
