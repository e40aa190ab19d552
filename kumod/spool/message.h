/* SPDX-License-Identifier: Apache-2.0 */
/* The Message: envelope, metadata (JSON object) and content of one message
 * being received or queued. Reference counted: the reception path, the
 * spool and Lua userdata each hold a reference; the last unref frees it. */
#ifndef KUMOD_SPOOL_MESSAGE_H
#define KUMOD_SPOOL_MESSAGE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

#define MESSAGE_ID_LEN 32

/* A body spilled to the spool's temporary storage during reception
 * (docs/spool.md, "Streamed bodies"): an unlinked file (fd) holding len
 * bytes that follow the message's resident header section. Shared by the
 * messages split from one transaction and by the spool store writing it;
 * the last unref closes the file, which the kernel then frees. Files are
 * written only before the spill is attached to a message and read with
 * pread (worker threads included) afterwards. */
struct message_spill {
	unsigned refs;
	int fd;
	uint64_t len;
};

struct message {
	unsigned refs;
	char id[MESSAGE_ID_LEN + 1]; /* time-ordered, 32 lowercase hex chars */
	char *sender;		     /* "local@domain" or "" for the null sender */
	char **recipients;
	size_t nrecipients;
	json_t *meta;	 /* object: queue, tenant, campaign, routing_domain, free keys */
	struct buf data; /* full RFC 5322 content, CRLF line endings */
	uint64_t created_ns;
	/* Queue state persisted by the meta spool (spool_store/update_meta)
	 * and restored by spool_recover: attempts made so far and the next due
	 * time in unix ms (0 = due now). */
	uint32_t attempts;
	uint64_t due_ms;
	/* Lean queued messages (docs/spool.md, "Resident bodies"): data_stored
	 * is 1 while data holds exactly the spool's data record (set when a
	 * store completed or recovery loaded it; any content change clears it).
	 * data_shrunk is 1 while the body lives only in the spool (data empty,
	 * data_shrunk_len its length); spool_load_data brings it back. */
	unsigned char data_stored, data_shrunk;
	size_t data_shrunk_len;
	/* Streamed reception: when set, the content is data (the header
	 * section, blank line included) followed by the spill's bytes; body
	 * readers call message_load_spill first. Dropped by the shrink after
	 * the store, by message_set_data and by message_load_spill. */
	struct message_spill *spill;
	/* Deferred spooling (KumoMTA's deferred_spool; docs/spool.md,
	 * "Deferred spooling"), loop thread only: spool_deferred is 1 while the
	 * message was accepted without a spool write and lives only in memory;
	 * spool_saving while spool_save_deferred's store is in flight;
	 * spool_gone once the message left the system (spool_discard), so a
	 * save in flight is followed by the removal and nothing saves it again. */
	unsigned char spool_deferred, spool_saving, spool_gone;
	/* Made by kumo.make_message and not yet given to kumo.inject_message:
	 * the only messages inject_message takes (any other is already owned
	 * by reception or a queue: injecting it would deliver it twice). */
	unsigned char policy_made;
	/* One meta value built only when first read (message_get_meta): the
	 * SMTP transcript of the receiving session ("smtp_session"), which
	 * only the mail catcher and the odd policy read. NULL: none pending. */
	struct message_lazy_meta *lazy;
};

/* New message with a fresh id, one reference. */
struct message *message_new(void);
/* New message with a given id (spool recovery), one reference; NULL unless
 * id is MESSAGE_ID_LEN lowercase hex characters. */
struct message *message_new_with_id(const char *id);
/* 1 when id is MESSAGE_ID_LEN lowercase hex characters. */
int message_id_valid(const char *id);
struct message *message_ref(struct message *m);
void message_unref(struct message *m);
/* Generates a time-ordered id (48-bit ms timestamp, 16-bit counter,
 * 64 random bits) into out (MESSAGE_ID_LEN + 1 bytes). */
void message_make_id(char out[MESSAGE_ID_LEN + 1]);

void message_set_sender(struct message *m, const char *sender);
void message_add_recipient(struct message *m, const char *rcpt);
/* Keeps recipient i when keep[i] (order kept); the others are freed. */
void message_retain_recipients(struct message *m, const unsigned char *keep);
void message_set_data(struct message *m, const char *data, size_t len);
/* A spill of the open file fd (taken), one reference. */
struct message_spill *message_spill_new(int fd);
struct message_spill *message_spill_ref(struct message_spill *sp);
/* NULL-safe; the last unref closes the file. */
void message_spill_unref(struct message_spill *sp);
/* Gives m the content head (its header section) followed by sp (a new
 * reference is taken); the previous content is replaced. */
void message_set_spilled_data(struct message *m, const char *head, size_t len,
			      struct message_spill *sp);
/* Makes a spilled body resident (reads the file on the calling thread:
 * recently written, so mostly from the page cache). 0, or -ENOMEM / -EIO
 * (m unchanged). A no-op returning 0 without a spill. */
int message_load_spill(struct message *m);
/* Copies the content of src into dst (sharing src's spill, if any). */
void message_copy_data(struct message *dst, const struct message *src);
/* Length of the content, resident or not. */
size_t message_data_len(const struct message *m);
/* 1 unless the body was released by message_shrink_data or is spilled. */
int message_data_resident(const struct message *m);
/* Releases the body of a message whose data is in the spool (data_stored);
 * returns 1 when released, 0 when it must stay (not stored, or shrunk). */
int message_shrink_data(struct message *m);
/* Gives a shrunk (or spilled) message its body back (b is taken; b holds
 * exactly the stored record's payload). Returns 1, or 0 and frees b when m
 * was resident (someone else loaded it first). */
int message_restore_data(struct message *m, struct buf *b);
/* Messages alive whose body is not resident (loop thread). */
size_t message_shrunk_count(void);
/* Meta: value is stolen (json reference). Returns 0. */
int message_set_meta(struct message *m, const char *key, json_t *value);
/* Borrowed reference or NULL. A lazy value (message_set_meta_lazy) is
 * built and stored on this first read (loop thread). */
json_t *message_get_meta(const struct message *m, const char *key);
/* Meta key whose value is built by build(obj) when first read; obj is
 * freed with release (after the build, when the key is set meanwhile, or
 * with the message). One lazy key per message: a second replaces it. */
void message_set_meta_lazy(struct message *m, const char *key, void *obj,
			   json_t *(*build)(const void *obj), void (*release)(void *obj));
/* Builds the pending lazy value when its key matches name (a key, or a
 * prefix ending in '*'; "*" builds any): for readers that walk m->meta
 * (log records' and hooks' meta lists, the admin views). */
void message_meta_build_for(const struct message *m, const char *name);
/* The object of the pending lazy value of key, or NULL (for a reader that
 * builds its own copy elsewhere, e.g. on another thread). */
const void *message_lazy_obj(const struct message *m, const char *key);
/* Convenience: string meta value or NULL. */
const char *message_get_meta_str(const struct message *m, const char *key);

/* Header methods (validated: -EINVAL on CR, LF or NUL in names/values or an
 * invalid name). Values are folded by the C side. */
int message_prepend_header(struct message *m, const char *name, const char *value);
/* Several fields at the top in this order, with one move of the body. */
int message_prepend_headers(struct message *m, size_t n, const char *const *names,
			    const char *const *values);
int message_append_header(struct message *m, const char *name, const char *value);
size_t message_remove_all_named_headers(struct message *m, const char *name);
/* 1 and the unfolded value appended to out, or 0. */
int message_get_first_named_header_value(const struct message *m, const char *name,
					 struct buf *out);
size_t message_get_all_named_header_values(const struct message *m, const char *name,
					   void (*cb)(const char *v, size_t n, void *ctx),
					   void *ctx);
/* Copies X-* headers into meta: "X-Foo-Bar" -> key "x_foo_bar" (KumoMTA's
 * import_x_headers; names given restricts the set). Returns count. */
size_t message_import_x_headers(struct message *m, const char *const *names, size_t nnames);

#endif
