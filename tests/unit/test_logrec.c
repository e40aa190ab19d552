/* SPDX-License-Identifier: Apache-2.0 */
/* Log records against real segment files in a mkdtemp directory: every line
 * is KumoMTA-shaped JSON, zstd segments decompress completely with
 * ZSTD_decompressStream, size and age rolls, plain text, back-pressure with a
 * tiny queue loses nothing, injected open/write failures are counted and
 * never crash. Includes logrec_int.h for the fault injection hook. */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/task.h"
#include "spool/logrec.h"
#include "spool/logrec_int.h"
#include "spool/message.h"
#include "test.h"

static char dir[64];

/* --- fixture ------------------------------------------------------------------ */

static void setup(void)
{
	char err[256];
	/* the failures some tests provoke are expected: keep the output quiet */
	ASSERT_EQ(log_set_filter("kumod::logging=off", err, sizeof(err)), 0);
	snprintf(dir, sizeof(dir), "/tmp/kumod-logrec-test.XXXXXX");
	ASSERT(mkdtemp(dir) != NULL);
}

static void teardown(void)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup of %s failed\n", dir);
}

static void configure(int level, uint64_t max_file_size, uint64_t max_segment_ms,
		      size_t back_pressure)
{
	static const char *const headers[] = {"subject", "X-*"};
	static const char *const meta[] = {"tenant", "n", "x_*", "missing", "nullish"};
	struct logrec_config cfg = {
	    .log_dir = dir,
	    .max_segment_duration_ms = max_segment_ms,
	    .max_file_size = max_file_size,
	    .compression_level = level,
	    .headers = headers,
	    .nheaders = ARRAY_SIZE(headers),
	    .meta = meta,
	    .nmeta = ARRAY_SIZE(meta),
	    .back_pressure = back_pressure,
	};
	char err[256] = "";
	int rc = logrec_configure(&cfg, err, sizeof(err));
	if (rc != 0)
		TEST_FAIL("logrec_configure: %d %s", rc, err);
	ASSERT(logrec_enabled());
}

static struct message *make_msg(unsigned i)
{
	struct message *m = message_new();
	char s[160];
	snprintf(s, sizeof(s), "sender%u@example.com", i);
	message_set_sender(m, s);
	snprintf(s, sizeof(s), "rcpt%u@Example.NET", i);
	message_add_recipient(m, s);
	message_set_meta(m, "tenant", json_string("acme"));
	message_set_meta(m, "campaign", json_string("spring"));
	message_set_meta(m, "n", json_integer(i));
	message_set_meta(m, "x_customer", json_string("c42"));
	message_set_meta(m, "nullish", json_null());
	message_set_meta(m, "secret", json_string("not logged"));
	message_set_meta(m, "reception_protocol", json_string("ESMTP"));
	snprintf(s, sizeof(s),
		 "Subject: hello %u\r\n  folded\r\nX-Tag: a\r\nFrom: f@example.com\r\n"
		 "x-tag: b\r\nX-Mailer: t\r\n\r\nbody %u\r\n",
		 i, i);
	message_set_data(m, s, strlen(s));
	m->attempts = 2;
	return m;
}

/* One record of each kind for message i (6 records). */
static void log_all_types(unsigned i)
{
	struct message *m = make_msg(i);
	struct logrec_response ok = {250, NULL, "OK", "."};
	struct logrec_peer rx = {"client.example", "192.0.2.1"};
	logrec_log("Reception", m, NULL, &ok, &rx, NULL, NULL, NULL, NULL, "ESMTP");

	struct logrec_response dl = {250, "2.0.0", "Ok: queued as X", "."};
	struct logrec_peer mx = {"mx.example.net.", "198.51.100.7"};
	logrec_log("Delivery", m, NULL, &dl, &mx, NULL, "unspecified->mx.example.net.@smtp",
		   "pool1", "src1", NULL);

	struct logrec_response tf = {451, NULL, "4.7.1 try later", "RCPT TO"};
	logrec_log("TransientFailure", m, NULL, &tf, &mx, "q-explicit", "s->site@smtp", NULL, NULL,
		   NULL);

	struct logrec_response bo = {550, "5.1.1", "no such user", "RCPT TO"};
	logrec_log("Bounce", m, NULL, &bo, &mx, NULL, "s->site@smtp", NULL, NULL, NULL);

	struct logrec_response ex = {551, "5.4.7", "Next delivery time would be ...", NULL};
	logrec_log("Expiration", m, NULL, &ex, NULL, NULL, NULL, NULL, NULL, NULL);

	json_t *cmeta = json_pack("{s:s,s:s}", "tenant", "t0", "tls_cipher", "TLS_X");
	struct logrec_response rj = {550, NULL, "5.7.1 relaying not permitted", "RCPT TO"};
	struct logrec_event ev = {.type = "Rejection",
				  .sender = "bad@example.com",
				  .recipient = "victim@example.org",
				  .meta = cmeta,
				  .resp = &rj,
				  .peer = &rx,
				  .session_id = "0b7f1b8e-3b9a-4c1e-9d47-3f0a1c2b4d5e"};
	logrec_log_event(&ev);
	json_decref(cmeta);
	message_unref(m);
}

/* --- reading segments ------------------------------------------------------- */

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted segment names in dir; returns how many (at most cap). */
static size_t list_segments(char **names, size_t cap)
{
	DIR *d = opendir(dir);
	ASSERT(d != NULL);
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		ASSERT_LT(n, cap);
		names[n++] = strdup(de->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(*names), name_cmp);
	return n;
}

static void free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
}

static void read_file(const char *name, struct buf *out)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "rb");
	ASSERT(f != NULL);
	char chunk[65536];
	size_t k;
	while ((k = fread(chunk, 1, sizeof(chunk), f)) > 0)
		buf_append(out, chunk, k);
	fclose(f);
}

/* Appends the decompressed segment to out; 1 when it ends with a complete
 * frame, 0 when it is truncated. */
static int unzstd(const char *name, struct buf *out)
{
	struct buf raw;
	buf_init(&raw);
	read_file(name, &raw);
	ZSTD_DCtx *dc = ZSTD_createDCtx();
	ZSTD_inBuffer in = {raw.data, raw.len, 0};
	char chunk[65536];
	size_t last = 1;
	ZSTD_outBuffer o;
	do {
		o = (ZSTD_outBuffer){chunk, sizeof(chunk), 0};
		last = ZSTD_decompressStream(dc, &o, &in);
		if (ZSTD_isError(last))
			TEST_FAIL("%s: %s", name, ZSTD_getErrorName(last));
		buf_append(out, chunk, o.pos);
	} while (in.pos < in.size || o.pos == o.size);
	ZSTD_freeDCtx(dc);
	buf_free(&raw);
	return last == 0;
}

/* Every line parses; returns them as a JSON array. */
static json_t *parse_lines(const struct buf *text)
{
	json_t *all = json_array();
	size_t start = 0;
	ASSERT(text->len == 0 || text->data[text->len - 1] == '\n');
	for (size_t i = 0; i < text->len; i++) {
		if (text->data[i] != '\n')
			continue;
		json_error_t e;
		json_t *j = json_loadb(text->data + start, i - start, 0, &e);
		if (!j)
			TEST_FAIL("line %zu: %s: %.*s", json_array_size(all), e.text,
				  (int)(i - start), text->data + start);
		ASSERT(json_is_object(j));
		json_array_append_new(all, j);
		start = i + 1;
	}
	return all;
}

/* All records of all segments, in segment order. */
static json_t *read_all(int compressed, size_t *nsegments)
{
	char *names[1024];
	size_t n = list_segments(names, ARRAY_SIZE(names));
	struct buf text;
	buf_init(&text);
	for (size_t i = 0; i < n; i++) {
		if (compressed)
			ASSERT(unzstd(names[i], &text));
		else
			read_file(names[i], &text);
	}
	json_t *recs = parse_lines(&text);
	buf_free(&text);
	free_names(names, n);
	if (nsegments)
		*nsegments = n;
	return recs;
}

static const char *sget(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	if (!json_is_string(v))
		TEST_FAIL("field %s is not a string", key);
	return json_string_value(v);
}

static json_int_t iget(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	if (!json_is_integer(v))
		TEST_FAIL("field %s is not an integer", key);
	return json_integer_value(v);
}

static json_t *find_type(json_t *recs, const char *type, size_t nth)
{
	size_t i;
	json_t *r;
	json_array_foreach(recs, i, r)
	{
		if (strcmp(sget(r, "type"), type) == 0 && nth-- == 0)
			return r;
	}
	TEST_FAIL("no record of type %s", type);
}

static size_t count_type(json_t *recs, const char *type)
{
	size_t i, n = 0;
	json_t *r;
	json_array_foreach(recs, i, r) n += strcmp(sget(r, "type"), type) == 0;
	return n;
}

/* Fields every record has, with the JSON type KumoMTA gives them. */
static void check_common(json_t *r)
{
	static const char *const strs[] = {"type",   "id",	   "sender",
					   "queue",  "site",	   "bounce_classification",
					   "nodeid", "event_time", "created_time"};
	for (size_t i = 0; i < ARRAY_SIZE(strs); i++)
		sget(r, strs[i]);
	static const char *const ints[] = {"size", "timestamp", "created", "num_attempts"};
	for (size_t i = 0; i < ARRAY_SIZE(ints); i++)
		iget(r, ints[i]);
	json_t *rcpt = json_object_get(r, "recipient");
	ASSERT(json_is_string(rcpt) || json_is_array(rcpt));
	json_t *resp = json_object_get(r, "response");
	ASSERT(json_is_object(resp));
	iget(resp, "code");
	sget(resp, "content");
	json_t *enh = json_object_get(resp, "enhanced_code");
	ASSERT(json_is_null(enh) || json_is_object(enh));
	json_t *cmd = json_object_get(resp, "command");
	ASSERT(json_is_null(cmd) || json_is_string(cmd));
	ASSERT(json_is_object(json_object_get(r, "meta")));
	ASSERT(json_is_object(json_object_get(r, "headers")));
	ASSERT(json_is_null(json_object_get(r, "feedback_report")));
	ASSERT(json_object_get(r, "peer_address") != NULL);
	ASSERT(json_object_get(r, "egress_pool") != NULL);
	ASSERT(json_object_get(r, "egress_source") != NULL);
	ASSERT(json_object_get(r, "source_address") != NULL);
	ASSERT(json_object_get(r, "delivery_protocol") != NULL);
	ASSERT(json_object_get(r, "reception_protocol") != NULL);
	ASSERT_STR_EQ(sget(r, "bounce_classification"), "Uncategorized");
	ASSERT_STR_EQ(sget(r, "nodeid"), logrec_nodeid());
	ASSERT_EQ(strlen(sget(r, "event_time")), strlen("2024-01-02T03:04:05.123456789Z"));
	time_t now = time(NULL);
	ASSERT_LE(iget(r, "timestamp"), now);
	ASSERT_GE(iget(r, "timestamp"), now - 60);
}

static void check_enhanced(json_t *r, int cls, int subject, int detail)
{
	json_t *e = json_object_get(json_object_get(r, "response"), "enhanced_code");
	ASSERT(json_is_object(e));
	ASSERT_EQ(iget(e, "class"), cls);
	ASSERT_EQ(iget(e, "subject"), subject);
	ASSERT_EQ(iget(e, "detail"), detail);
}

struct find_task {
	const char *kind;
	struct task *found;
};

static void find_task_cb(struct task *t, void *ctx)
{
	struct find_task *f = ctx;
	if (strcmp(t->kind, f->kind) == 0 && t->state != TASK_DONE)
		f->found = t;
}

/* --- tests -------------------------------------------------------------------- */

TEST_IMPL(logrec_zstd_record_shape)
{
	setup();
	configure(3, 0, 0, 0);
	struct find_task ft = {"log_writer", NULL};
	task_foreach(find_task_cb, &ft);
	ASSERT(ft.found != NULL);
	ASSERT_STR_EQ(ft.found->name, dir);

	const unsigned n = 50;
	for (unsigned i = 0; i < n; i++)
		log_all_types(i);
	logrec_shutdown();
	ASSERT(!logrec_enabled());

	size_t nseg;
	json_t *recs = read_all(1, &nseg);
	ASSERT_EQ(nseg, 1);
	ASSERT_EQ(json_array_size(recs), 6 * n);
	static const char *const types[] = {"Reception", "Delivery",   "TransientFailure",
					    "Bounce",	 "Expiration", "Rejection"};
	for (size_t t = 0; t < ARRAY_SIZE(types); t++)
		ASSERT_EQ(count_type(recs, types[t]), n);
	size_t i;
	json_t *r;
	json_array_foreach(recs, i, r) check_common(r);

	/* Reception */
	r = find_type(recs, "Reception", 3);
	ASSERT_EQ(strlen(sget(r, "id")), MESSAGE_ID_LEN);
	ASSERT_STR_EQ(sget(r, "sender"), "sender3@example.com");
	ASSERT_STR_EQ(sget(r, "recipient"), "rcpt3@Example.NET");
	ASSERT_STR_EQ(sget(r, "queue"), "spring:acme@example.net");
	ASSERT_STR_EQ(sget(r, "site"), "");
	ASSERT_GT(iget(r, "size"), 50);
	json_t *resp = json_object_get(r, "response");
	ASSERT_EQ(iget(resp, "code"), 250);
	ASSERT(json_is_null(json_object_get(resp, "enhanced_code")));
	ASSERT_STR_EQ(sget(resp, "content"), "OK");
	ASSERT_STR_EQ(sget(resp, "command"), ".");
	json_t *peer = json_object_get(r, "peer_address");
	ASSERT_STR_EQ(sget(peer, "name"), "client.example");
	ASSERT_STR_EQ(sget(peer, "addr"), "192.0.2.1");
	ASSERT_EQ(iget(r, "num_attempts"), 2);
	ASSERT_LE(iget(r, "created"), iget(r, "timestamp"));
	ASSERT(json_is_null(json_object_get(r, "egress_pool")));
	ASSERT(json_is_null(json_object_get(r, "delivery_protocol")));
	ASSERT_STR_EQ(sget(r, "reception_protocol"), "ESMTP");
	json_t *meta = json_object_get(r, "meta");
	ASSERT_EQ(json_object_size(meta), 3); /* tenant, n, x_customer */
	ASSERT_STR_EQ(sget(meta, "tenant"), "acme");
	ASSERT_EQ(iget(meta, "n"), 3);
	ASSERT_STR_EQ(sget(meta, "x_customer"), "c42");
	json_t *hdrs = json_object_get(r, "headers");
	ASSERT_EQ(json_object_size(hdrs), 3); /* Subject, X-Tag (twice), X-Mailer */
	ASSERT_STR_EQ(sget(hdrs, "Subject"),
		      "hello 3  folded"); /* RFC 5322 unfolding drops CRLF only */
	json_t *tags = json_object_get(hdrs, "X-Tag");
	ASSERT(json_is_array(tags) && json_array_size(tags) == 2);
	ASSERT_STR_EQ(json_string_value(json_array_get(tags, 1)), "b");
	ASSERT_STR_EQ(sget(hdrs, "X-Mailer"), "t");
	ASSERT(json_object_get(r, "tls_cipher") == NULL);

	/* Delivery */
	r = find_type(recs, "Delivery", 0);
	ASSERT_STR_EQ(sget(r, "site"), "unspecified->mx.example.net.@smtp");
	ASSERT_STR_EQ(sget(r, "egress_pool"), "pool1");
	ASSERT_STR_EQ(sget(r, "egress_source"), "src1");
	ASSERT_STR_EQ(sget(r, "delivery_protocol"), "ESMTP");
	ASSERT_STR_EQ(sget(r, "reception_protocol"), "ESMTP"); /* from meta */
	check_enhanced(r, 2, 0, 0);
	ASSERT_STR_EQ(sget(json_object_get(r, "response"), "content"), "Ok: queued as X");
	ASSERT_STR_EQ(sget(json_object_get(r, "peer_address"), "name"), "mx.example.net.");

	/* TransientFailure: explicit queue; enhanced code split off the text */
	r = find_type(recs, "TransientFailure", 0);
	ASSERT_STR_EQ(sget(r, "queue"), "q-explicit");
	check_enhanced(r, 4, 7, 1);
	ASSERT_STR_EQ(sget(json_object_get(r, "response"), "content"), "try later");
	ASSERT_STR_EQ(sget(json_object_get(r, "response"), "command"), "RCPT TO");

	r = find_type(recs, "Bounce", 0);
	check_enhanced(r, 5, 1, 1);

	r = find_type(recs, "Expiration", 0);
	check_enhanced(r, 5, 4, 7);
	ASSERT(json_is_null(json_object_get(r, "peer_address")));
	ASSERT(json_is_null(json_object_get(json_object_get(r, "response"), "command")));

	/* Rejection: no message */
	r = find_type(recs, "Rejection", 0);
	ASSERT_STR_EQ(sget(r, "id"), "");
	ASSERT_STR_EQ(sget(r, "sender"), "bad@example.com");
	ASSERT_STR_EQ(sget(r, "recipient"), "victim@example.org");
	ASSERT_STR_EQ(sget(r, "queue"), "");
	ASSERT_EQ(iget(r, "size"), 0);
	ASSERT_EQ(iget(r, "num_attempts"), 0);
	ASSERT_STR_EQ(sget(json_object_get(r, "meta"), "tenant"), "t0");
	ASSERT_EQ(json_object_size(json_object_get(r, "headers")), 0);
	ASSERT_STR_EQ(sget(r, "tls_cipher"), "TLS_X"); /* reception side: from meta */
	ASSERT_STR_EQ(sget(r, "session_id"), "0b7f1b8e-3b9a-4c1e-9d47-3f0a1c2b4d5e");
	check_enhanced(r, 5, 7, 1);

	/* the closed segment is marked done (no write bits), as KumoMTA does */
	char *names[4];
	ASSERT_EQ(list_segments(names, 4), 1);
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", dir, names[0]);
	struct stat st;
	ASSERT_EQ(stat(path, &st), 0);
	ASSERT_EQ(st.st_mode & 0222, 0);
	/* YYYYMMDD-HHMMSS.nnnnnnnnn */
	ASSERT_EQ(strlen(names[0]), 25);
	ASSERT_EQ(names[0][8], '-');
	ASSERT_EQ(names[0][15], '.');
	free_names(names, 1);
	json_decref(recs);
	teardown();
}

TEST_IMPL(logrec_stats_count_records)
{
	setup();
	configure(1, 0, 0, 0);
	for (unsigned i = 0; i < 20; i++)
		log_all_types(i);
	logrec_shutdown();
	/* after shutdown the stats are gone with the logger: check through a
	 * second one that counts from zero */
	configure(1, 0, 0, 0);
	struct logrec_stats st;
	logrec_get_stats(&st);
	ASSERT_EQ(st.written, 0);
	log_all_types(0);
	for (int tries = 0; tries < 500; tries++) {
		logrec_get_stats(&st);
		if (st.queued == 0)
			break;
		usleep(2000);
	}
	ASSERT_EQ(st.queued, 0);
	ASSERT_EQ(st.segments, 1);
	ASSERT_EQ(st.dropped_never, 0);
	logrec_shutdown();
	json_t *recs = read_all(1, NULL);
	ASSERT_EQ(json_array_size(recs), 20 * 6 + 6);
	json_decref(recs);
	teardown();
}

TEST_IMPL(logrec_size_roll)
{
	setup();
	const uint64_t max = 8192;
	configure(3, max, 0, 0);
	const unsigned n = 100;
	for (unsigned i = 0; i < n; i++) {
		struct message *m = make_msg(i);
		struct logrec_response ok = {250, "2.0.0", "OK", "."};
		logrec_log("Delivery", m, NULL, &ok, NULL, NULL, "s->x@smtp", NULL, NULL, NULL);
		message_unref(m);
	}
	struct logrec_stats st;
	logrec_shutdown();

	char *names[256];
	size_t nseg = list_segments(names, ARRAY_SIZE(names));
	ASSERT_GT(nseg, 3);
	unsigned next = 0;
	for (size_t s = 0; s < nseg; s++) {
		struct buf text;
		buf_init(&text);
		ASSERT(unzstd(names[s], &text)); /* every segment is a complete frame */
		if (s + 1 < nseg)
			ASSERT_GE(text.len, max); /* rolled only once past max ... */
		ASSERT_LT(text.len, max + 2048);  /* ... by at most one record */
		json_t *recs = parse_lines(&text);
		size_t i;
		json_t *r;
		json_array_foreach(recs, i, r)
		{
			/* names sort in write order */
			ASSERT_EQ(iget(json_object_get(r, "meta"), "n"), next);
			next++;
		}
		json_decref(recs);
		buf_free(&text);
	}
	ASSERT_EQ(next, n);
	free_names(names, nseg);
	(void)st;
	teardown();
}

TEST_IMPL(logrec_plain_text)
{
	setup();
	configure(0, 4096, 0, 0);
	for (unsigned i = 0; i < 30; i++)
		log_all_types(i);
	logrec_shutdown();
	size_t nseg;
	json_t *recs = read_all(0, &nseg);
	ASSERT_EQ(json_array_size(recs), 180);
	ASSERT_GT(nseg, 1);
	char *names[256];
	size_t n = list_segments(names, ARRAY_SIZE(names));
	struct buf raw;
	buf_init(&raw);
	read_file(names[0], &raw);
	ASSERT(raw.len > 0 && raw.data[0] == '{'); /* not a zstd frame */
	buf_free(&raw);
	free_names(names, n);
	json_decref(recs);
	teardown();
}

TEST_IMPL(logrec_backpressure_loses_nothing)
{
	setup();
	/* a tiny queue and a roll after every record keep the writer behind */
	configure(1, 1, 0, 2);
	const unsigned n = 600;
	struct logrec_stats st;
	for (unsigned i = 0; i < n; i++) {
		struct message *m = make_msg(i);
		struct logrec_response ok = {250, NULL, "OK", NULL};
		logrec_log("Reception", m, NULL, &ok, NULL, NULL, NULL, NULL, NULL, NULL);
		message_unref(m);
		logrec_get_stats(&st);
		ASSERT_LE(st.queued, 2);
	}
	logrec_get_stats(&st);
	ASSERT_GT(st.waits, 0);
	ASSERT_GT(st.wait_ns, 0);
	logrec_shutdown();
	size_t nseg;
	json_t *recs = read_all(1, &nseg);
	ASSERT_EQ(json_array_size(recs), n);
	ASSERT_EQ(nseg, n);
	size_t i;
	json_t *r;
	json_array_foreach(recs, i, r) ASSERT_EQ(iget(json_object_get(r, "meta"), "n"), i);
	json_decref(recs);
	teardown();
}

static int segment_done(const char *name)
{
	char path[256];
	struct stat st;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return stat(path, &st) == 0 && (st.st_mode & 0222) == 0;
}

TEST_IMPL(logrec_age_roll_closes_idle_segment)
{
	setup();
	configure(3, 0, 150, 0);
	for (unsigned i = 0; i < 3; i++)
		log_all_types(i);
	/* nothing more is logged: the writer closes the segment on its own */
	char *names[8];
	size_t n = 0;
	for (int tries = 0; tries < 200; tries++) {
		usleep(10000);
		n = list_segments(names, ARRAY_SIZE(names));
		int done = n == 1 && segment_done(names[0]);
		if (done)
			break;
		free_names(names, n);
		n = 0;
	}
	ASSERT_EQ(n, 1);
	struct buf text;
	buf_init(&text);
	ASSERT(unzstd(names[0], &text)); /* complete before shutdown */
	json_t *recs = parse_lines(&text);
	ASSERT_EQ(json_array_size(recs), 18);
	json_decref(recs);
	buf_free(&text);
	free_names(names, n);

	log_all_types(9); /* opens a second segment */
	logrec_shutdown();
	size_t nseg;
	recs = read_all(1, &nseg);
	ASSERT_EQ(nseg, 2);
	ASSERT_EQ(json_array_size(recs), 24);
	json_decref(recs);
	teardown();
}

TEST_IMPL(logrec_open_failure_is_counted)
{
	setup();
	configure(3, 0, 0, 0);
	logrec__inject_fault("open", 1, 1, EACCES);
	log_all_types(0); /* the open fails: these are lost, the retry waits 1 s */
	struct logrec_stats st;
	for (int tries = 0; tries < 500; tries++) {
		logrec_get_stats(&st);
		if (st.queued == 0)
			break;
		usleep(2000);
	}
	ASSERT_EQ(st.errors, 1);
	ASSERT_EQ(st.lost, 6);
	ASSERT_EQ(st.segments, 0);
	usleep(1100000);
	log_all_types(1);
	logrec_shutdown();
	json_t *recs = read_all(1, NULL);
	ASSERT_EQ(json_array_size(recs), 6);
	ASSERT_EQ(iget(json_object_get(json_array_get(recs, 0), "meta"), "n"), 1);
	json_decref(recs);
	teardown();
}

TEST_IMPL(logrec_write_failure_is_counted)
{
	setup();
	configure(0, 0, 0, 0);
	logrec__inject_fault("write", 1, 1, ENOSPC);
	log_all_types(0);
	struct logrec_stats st;
	for (int tries = 0; tries < 500; tries++) {
		logrec_get_stats(&st);
		if (st.queued == 0)
			break;
		usleep(2000);
	}
	ASSERT_EQ(st.errors, 1);
	ASSERT_GT(st.lost, 0);
	uint64_t lost = st.lost;
	usleep(1100000);
	log_all_types(1);
	logrec_shutdown();
	size_t nseg;
	json_t *recs = read_all(0, &nseg);
	/* the failed segment is empty; what was not lost is in the second one */
	ASSERT_EQ(nseg, 2);
	ASSERT_EQ(json_array_size(recs) + lost, 12);
	json_decref(recs);
	teardown();
}

TEST_IMPL(logrec_odd_input)
{
	setenv("KUMO_NODE_ID", "0B7F1B8E-3B9A-4C1E-9D47-3F0A1C2B4D5E", 1);
	setup();
	configure(3, 0, 0, 0);
	struct message *m = message_new();
	message_set_sender(m, "bad\xff\xfe@example.com");
	message_add_recipient(m, "a@example.com");
	message_add_recipient(m, "b@example.com");
	const char data[] = "Subject: caf\xc3\xa9 \xe9t\xe9\r\n\r\nx\r\n";
	message_set_data(m, data, sizeof(data) - 1);
	message_set_meta(m, "queue", json_string("explicit-q"));
	message_set_meta(m, "num_attempts", json_integer(7));
	message_set_meta(m, "tls_cipher", json_string("TLS_AES_128_GCM_SHA256"));
	message_set_meta(m, "tls_peer_subject_name", json_string("CN=client"));
	logrec_log("Reception", m, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
	/* outbound TLS is only what the caller says, never the inbound meta */
	const char *subj[] = {"CN=mx", "O=Example"};
	struct logrec_tls tls = {"TLS_AES_256_GCM_SHA384", "TLSv1.3", subj, 2};
	struct logrec_event ev = {.type = "Delivery",
				  .m = m,
				  .recipient = "b@example.com",
				  .site = "s->mx@smtp",
				  .tls = &tls,
				  .source_address = "10.0.0.1:40000",
				  .provider_name = "example"};
	logrec_log_event(&ev);
	logrec_log("TransientFailure", m, NULL, NULL, NULL, NULL, "s->mx@smtp", NULL, NULL, NULL);
	message_unref(m);
	logrec_shutdown();

	json_t *recs = read_all(1, NULL);
	ASSERT_EQ(json_array_size(recs), 3);
	json_t *r = json_array_get(recs, 0);
	check_common(r);
	ASSERT_STR_EQ(sget(r, "nodeid"), "0b7f1b8e-3b9a-4c1e-9d47-3f0a1c2b4d5e");
	ASSERT_STR_EQ(sget(r, "sender"), "bad\xef\xbf\xbd\xef\xbf\xbd@example.com");
	json_t *rcpt = json_object_get(r, "recipient");
	ASSERT(json_is_array(rcpt) && json_array_size(rcpt) == 2);
	ASSERT_STR_EQ(sget(r, "queue"), "explicit-q");
	ASSERT_EQ(iget(r, "num_attempts"), 7);
	ASSERT_EQ(iget(json_object_get(r, "response"), "code"), 0);
	ASSERT(json_is_null(json_object_get(r, "peer_address")));
	ASSERT_STR_EQ(sget(json_object_get(r, "headers"), "Subject"),
		      "caf\xc3\xa9 \xef\xbf\xbdt\xef\xbf\xbd");
	ASSERT_STR_EQ(sget(r, "tls_cipher"), "TLS_AES_128_GCM_SHA256");
	ASSERT_STR_EQ(
	    json_string_value(json_array_get(json_object_get(r, "tls_peer_subject_name"), 0)),
	    "CN=client");

	r = json_array_get(recs, 1);
	check_common(r);
	ASSERT_STR_EQ(sget(r, "recipient"), "b@example.com");
	ASSERT_STR_EQ(sget(r, "tls_cipher"), "TLS_AES_256_GCM_SHA384");
	ASSERT_STR_EQ(sget(r, "tls_protocol_version"), "TLSv1.3");
	ASSERT_EQ(json_array_size(json_object_get(r, "tls_peer_subject_name")), 2);
	ASSERT_STR_EQ(sget(json_object_get(r, "source_address"), "address"), "10.0.0.1:40000");
	ASSERT_STR_EQ(sget(r, "provider_name"), "example");

	r = json_array_get(recs, 2);
	ASSERT(json_object_get(r, "tls_cipher") == NULL);
	json_decref(recs);
	teardown();
}

TEST_IMPL(logrec_configure_errors)
{
	setup();
	char err[256];
	struct logrec_config cfg = {0};
	ASSERT_EQ(logrec_configure(&cfg, err, sizeof(err)), -EINVAL);
	ASSERT(strstr(err, "log_dir") != NULL);

	cfg.log_dir = dir;
	cfg.compression_level = 99;
	ASSERT_EQ(logrec_configure(&cfg, err, sizeof(err)), -EINVAL);
	ASSERT(strstr(err, "compression_level") != NULL);

	char file[128];
	snprintf(file, sizeof(file), "%s/plainfile", dir);
	FILE *f = fopen(file, "w");
	ASSERT(f != NULL);
	fclose(f);
	cfg.compression_level = 0;
	cfg.log_dir = file;
	ASSERT_LT(logrec_configure(&cfg, err, sizeof(err)), 0);
	ASSERT(strstr(err, file) != NULL);
	ASSERT(!logrec_enabled());

	/* a nested directory is created; a leftover file is marked done */
	char nested[128];
	snprintf(nested, sizeof(nested), "%s/a/b/logs", dir);
	cfg.log_dir = nested;
	ASSERT_EQ(logrec_configure(&cfg, err, sizeof(err)), 0);
	/* a second logger: not in a directory the first writes to */
	ASSERT_EQ(logrec_configure(&cfg, err, sizeof(err)), -EEXIST);
	ASSERT(strstr(err, "already written by the logger of") != NULL);
	/* per_record: unknown types and template errors refused at configure time */
	struct logrec_per_record pr[2] = {
	    {.type = "Bounce", .enable = 1, .tmpl = "id={{ id | nosuch }}"},
	    {.type = "Bogus", .enable = 1},
	};
	char other[160];
	snprintf(other, sizeof(other), "%s/other", dir);
	cfg.log_dir = other;
	cfg.per_record = pr;
	cfg.nper_record = 1;
	ASSERT_EQ(logrec_configure(&cfg, err, sizeof(err)), -EINVAL);
	ASSERT_STR_EQ(err, "per_record.Bounce.template: line 1 column 12: unknown filter 'nosuch'");
	cfg.per_record = pr + 1;
	ASSERT_EQ(logrec_configure(&cfg, err, sizeof(err)), -EINVAL);
	ASSERT_STR_EQ(err, "per_record: unknown record type 'Bogus'");
	cfg.per_record = NULL;
	cfg.nper_record = 0;
	cfg.log_dir = nested;
	logrec_shutdown();
	logrec_shutdown(); /* idempotent */
	logrec_log("Reception", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL); /* no-op */

	struct stat st;
	ASSERT_EQ(stat(file, &st), 0);
	ASSERT(st.st_mode & 0200);
	cfg.log_dir = dir;
	ASSERT_EQ(logrec_configure(&cfg, err, sizeof(err)), 0);
	logrec_shutdown();
	ASSERT_EQ(stat(file, &st), 0);
	ASSERT_EQ(st.st_mode & 0222, 0);
	teardown();
}

TEST_IMPL(logrec_open_segment_is_flushed)
{
	setup();
	configure(3, 0, 0, 0);
	for (unsigned i = 0; i < 4; i++)
		log_all_types(i);
	/* within about a second the writer flushes a block: the records can be
	 * read from the open segment, whose frame is not finished yet */
	usleep(1300000);
	char *names[4];
	ASSERT_EQ(list_segments(names, 4), 1);
	ASSERT(!segment_done(names[0]));
	struct buf text;
	buf_init(&text);
	ASSERT(!unzstd(names[0], &text));
	json_t *recs = parse_lines(&text);
	ASSERT_EQ(json_array_size(recs), 24);
	struct logrec_stats st;
	logrec_get_stats(&st);
	ASSERT_EQ(st.written, 24);
	json_decref(recs);
	buf_free(&text);
	free_names(names, 1);
	logrec_shutdown();
	teardown();
}
