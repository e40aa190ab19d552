/* SPDX-License-Identifier: Apache-2.0 */
/* The Message object: ids, reference counting, envelope, meta and the
 * validated header methods. */
#include <jansson.h>
#include <string.h>
#include <time.h>

#include "spool/message.h"
#include "test.h"

static int is_lower_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return s[n] == 0;
}

TEST_IMPL(message_ids_unique_and_time_ordered)
{
	enum {
		N = 20000
	};
	static char ids[N][MESSAGE_ID_LEN + 1];
	for (size_t i = 0; i < N; i++) {
		message_make_id(ids[i]);
		if (!is_lower_hex(ids[i], MESSAGE_ID_LEN))
			TEST_FAIL("id %zu '%s' is not 32 lowercase hex chars", i, ids[i]);
		if (i && strcmp(ids[i - 1], ids[i]) >= 0)
			TEST_FAIL("ids not increasing: %s then %s", ids[i - 1], ids[i]);
	}
	/* the leading 48 bits are a millisecond timestamp close to now */
	char head[13];
	memcpy(head, ids[N - 1], 12);
	head[12] = 0;
	unsigned long long ms = strtoull(head, NULL, 16);
	unsigned long long now = (unsigned long long)time(NULL) * 1000ull;
	ASSERT_LE(ms, now + 60000);
	ASSERT_GE(ms + 60000, now);
	/* a message gets a fresh id */
	struct message *a = message_new(), *b = message_new();
	ASSERT(strcmp(a->id, b->id) < 0);
	message_unref(a);
	message_unref(b);
}

TEST_IMPL(message_refcount_and_envelope)
{
	struct message *m = message_new();
	ASSERT_EQ(m->refs, 1);
	ASSERT_STR_EQ(m->sender, "");
	ASSERT(message_ref(m) == m);
	ASSERT_EQ(m->refs, 2);
	message_unref(m);
	message_set_sender(m, "a@example.com");
	message_set_sender(m, "b@example.com");
	ASSERT_STR_EQ(m->sender, "b@example.com");
	message_add_recipient(m, "r1@example.com");
	message_add_recipient(m, "r2@example.com");
	ASSERT_EQ(m->nrecipients, 2);
	ASSERT_STR_EQ(m->recipients[1], "r2@example.com");
	message_set_data(m, "abc", 3);
	message_set_data(m, m->data.data + 1, 2); /* from its own buffer */
	ASSERT_MEM_EQ(m->data.data, m->data.len, "bc", 2);
	message_unref(m);
	message_unref(NULL);
}

TEST_IMPL(message_meta)
{
	struct message *m = message_new();
	ASSERT(message_get_meta(m, "queue") == NULL);
	ASSERT(message_get_meta_str(m, "queue") == NULL);
	ASSERT_EQ(message_set_meta(m, "queue", json_string("null")), 0);
	ASSERT_STR_EQ(message_get_meta_str(m, "queue"), "null");
	ASSERT_EQ(message_set_meta(m, "n", json_integer(5)), 0);
	ASSERT(message_get_meta_str(m, "n") == NULL);
	ASSERT_EQ(json_integer_value(message_get_meta(m, "n")), 5);
	ASSERT_EQ(message_set_meta(m, "queue", json_string("q2")), 0);
	ASSERT_STR_EQ(message_get_meta_str(m, "queue"), "q2");
	ASSERT_NE(message_set_meta(m, "bad\xff", json_true()), 0);
	message_unref(m);
}

static void collect(const char *v, size_t n, void *ctx)
{
	struct buf *b = ctx;
	buf_append(b, v, n);
	buf_appendc(b, '|');
}

TEST_IMPL(message_headers)
{
	struct message *m = message_new();
	const char *data = "Subject: hi\r\nX-Tag: a\r\nx-tag: b\r\nTo: c@d\r\n\r\nbody\r\n";
	message_set_data(m, data, strlen(data));
	struct buf out;
	buf_init(&out);
	ASSERT_EQ(message_get_first_named_header_value(m, "SUBJECT", &out), 1);
	ASSERT_STR_EQ(buf_cstr(&out), "hi");
	buf_reset(&out);
	ASSERT_EQ(message_get_first_named_header_value(m, "Missing", &out), 0);
	ASSERT_EQ(message_get_all_named_header_values(m, "X-Tag", collect, &out), 2);
	ASSERT_STR_EQ(buf_cstr(&out), "a|b|");
	buf_reset(&out);

	ASSERT_EQ(message_prepend_header(m, "Received", "from x by y"), 0);
	ASSERT_EQ(message_append_header(m, "X-Last", "z"), 0);
	ASSERT_EQ(message_remove_all_named_headers(m, "x-tag"), 2);
	const char *want = "Received: from x by y\r\nSubject: hi\r\nTo: c@d\r\nX-Last: z\r\n"
			   "\r\nbody\r\n";
	ASSERT_MEM_EQ(m->data.data, m->data.len, want, strlen(want));

	static const struct {
		const char *name, *value;
	} bad[] = {
	    {"X-A", "v\r\nBcc: evil@example.com"},
	    {"X-A", "v\nx"},
	    {"X-A", "v\rx"},
	    {"X A", "v"},
	    {"X:A", "v"},
	    {"", "v"},
	    {"X-\x7f", "v"},
	    {"X-\xc3\xa9", "v"},
	    {"X-A\r\n", "v"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		if (message_prepend_header(m, bad[i].name, bad[i].value) == 0)
			TEST_FAIL("prepend accepted bad header %zu", i);
		if (message_append_header(m, bad[i].name, bad[i].value) == 0)
			TEST_FAIL("append accepted bad header %zu", i);
	}
	ASSERT_MEM_EQ(m->data.data, m->data.len, want, strlen(want));
	buf_free(&out);
	message_unref(m);
}

TEST_IMPL(message_import_x_headers)
{
	struct message *m = message_new();
	const char *data = "X-Tenant: acme\r\nSubject: s\r\nX-Campaign-Id: c1\r\nX-Tenant: "
			   "later\r\n\r\nbody\r\n";
	message_set_data(m, data, strlen(data));
	ASSERT_EQ(message_import_x_headers(m, NULL, 0), 3);
	ASSERT_STR_EQ(message_get_meta_str(m, "x_tenant"), "later"); /* the last wins */
	ASSERT_STR_EQ(message_get_meta_str(m, "x_campaign_id"), "c1");
	ASSERT(message_get_meta(m, "subject") == NULL);
	message_unref(m);

	m = message_new();
	message_set_data(m, data, strlen(data));
	const char *names[] = {"subject", "x-campaign-id"};
	ASSERT_EQ(message_import_x_headers(m, names, 2), 2);
	ASSERT_STR_EQ(message_get_meta_str(m, "subject"), "s");
	ASSERT_STR_EQ(message_get_meta_str(m, "x_campaign_id"), "c1");
	ASSERT(message_get_meta(m, "x_tenant") == NULL);
	message_unref(m);
}
