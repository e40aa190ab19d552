/* SPDX-License-Identifier: Apache-2.0 */
/* traffic-gen message generation: bodies built once at start (raw, wire
 * form and JSON-escaped), per-message envelope and header block. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "proto/smtp_data.h"
#include "tg.h"

/* xorshift64*: fast, good enough for local parts and ids (not security). */
uint64_t tg_rand(struct tg *tg)
{
	uint64_t x = tg->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	tg->rng = x;
	return x * 0x2545F4914F6CDD1Dull;
}

const char *tg_pick_domain(struct tg *tg)
{
	const struct tg_opts *o = &tg->o;
	if (o->ndomains == 1)
		return o->domains[0].name;
	uint64_t r = tg_rand(tg) % o->total_weight;
	for (size_t i = 0; i < o->ndomains; i++) {
		if (r < o->domains[i].weight)
			return o->domains[i].name;
		r -= o->domains[i].weight;
	}
	return o->domains[o->ndomains - 1].name;
}

static const char *const words[] = {
    "lorem",	"ipsum",     "dolor",  "sit",	   "amet",	"consectetur", "adipiscing",
    "elit",	"sed",	     "do",     "eiusmod",  "tempor",	"incididunt",  "ut",
    "labore",	"et",	     "dolore", "magna",	   "aliqua",	"enim",	       "ad",
    "minim",	"veniam",    "quis",   "nostrud",  "ullamco",	"laboris",     "nisi",
    "aliquip",	"ex",	     "ea",     "commodo",  "duis",	"aute",	       "irure",
    "in",	"voluptate", "velit",  "esse",	   "cillum",	"fugiat",      "nulla",
    "pariatur", "excepteur", "sint",   "occaecat", "cupidatat", "non",	       "proident",
};

/* Nonsense words wrapped at 78 columns, CRLF line ends, exactly `size`
 * bytes (the last line is padded or cut to fit, always ending in CRLF
 * when size >= 2). */
static void gen_words(struct tg *tg, struct buf *b, size_t size)
{
	size_t col = 0;
	const size_t nwords = sizeof(words) / sizeof(words[0]);
	buf_reserve(b, size + 1);
	while (b->len + 2 < size) {
		const char *w = words[tg_rand(tg) % nwords];
		size_t wl = strlen(w);
		size_t need = (col ? 1 : 0) + wl;
		if (col + need > 78) {
			buf_append(b, "\r\n", 2);
			col = 0;
			continue;
		}
		if (b->len + need + 2 > size)
			break;
		if (col)
			buf_appendc(b, ' ');
		buf_append(b, w, wl);
		col += need;
	}
	while (b->len + 2 < size) { /* pad the last line */
		if (col >= 78) {
			buf_append(b, "\r\n", 2);
			col = 0;
			continue;
		}
		buf_appendc(b, 'x');
		col++;
	}
	if (size >= 2)
		buf_append(b, "\r\n", 2);
	else if (size == 1)
		buf_appendc(b, 'x');
}

static int read_body_file(struct tg *tg, char *err, size_t errlen)
{
	FILE *f = fopen(tg->o.body_file, "rb");
	if (!f) {
		snprintf(err, errlen, "--body-file %s: %s", tg->o.body_file, strerror(errno));
		return -1;
	}
	struct buf raw;
	buf_init(&raw);
	char tmp[65536];
	size_t n;
	while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
		buf_append(&raw, tmp, n);
	int rd_err = ferror(f);
	fclose(f);
	if (rd_err) {
		snprintf(err, errlen, "--body-file %s: read error", tg->o.body_file);
		buf_free(&raw);
		return -1;
	}
	/* normalise every bare CR or LF to CRLF */
	for (size_t i = 0; i < raw.len; i++) {
		char ch = raw.data[i];
		if (ch == '\r' && i + 1 < raw.len && raw.data[i + 1] == '\n') {
			buf_append(&tg->body, "\r\n", 2);
			i++;
		} else if (ch == '\r' || ch == '\n') {
			buf_append(&tg->body, "\r\n", 2);
		} else {
			buf_appendc(&tg->body, ch);
		}
	}
	if (tg->body.len && tg->body.data[tg->body.len - 1] != '\n')
		buf_append(&tg->body, "\r\n", 2);
	buf_free(&raw);
	return 0;
}

void tg_json_escape(struct buf *b, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	buf_reserve(b, len + len / 8 + 8);
	const char *run = s;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch >= 0x20 && ch != '"' && ch != '\\')
			continue;
		buf_append(b, run, (size_t)(s + i - run));
		run = s + i + 1;
		switch (ch) {
		case '"':
			buf_append(b, "\\\"", 2);
			break;
		case '\\':
			buf_append(b, "\\\\", 2);
			break;
		case '\r':
			buf_append(b, "\\r", 2);
			break;
		case '\n':
			buf_append(b, "\\n", 2);
			break;
		case '\t':
			buf_append(b, "\\t", 2);
			break;
		default: {
			char u[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
			buf_append(b, u, 6);
		}
		}
	}
	buf_append(b, run, (size_t)(s + len - run));
}

int tg_build_bodies(struct tg *tg, char *err, size_t errlen)
{
	buf_reset(&tg->body);
	if (tg->o.body_file) {
		if (read_body_file(tg, err, errlen) < 0)
			return -1;
	} else {
		gen_words(tg, &tg->body, tg->o.body_size);
	}
	buf_reset(&tg->body_wire);
	smtp_data_stuff(&tg->body_wire, tg->body.data, tg->body.len);
	buf_reset(&tg->body_json);
	tg_json_escape(&tg->body_json, tg->body.data, tg->body.len);
	buf_reset(&tg->extra_headers);
	for (size_t i = 0; i < tg->o.nheaders; i++) {
		/* a header line starting with "." is stuffed here: the header
		 * block is sent in wire form */
		if (tg->o.headers[i][0] == '.')
			buf_appendc(&tg->extra_headers, '.');
		buf_printf(&tg->extra_headers, "%s\r\n", tg->o.headers[i]);
	}
	return 0;
}

void tg_refresh_date(struct tg *tg)
{
	time_t now = time(NULL);
	if ((uint64_t)now == tg->date_sec && tg->date[0])
		return;
	tg->date_sec = (uint64_t)now;
	struct tm tm;
	gmtime_r(&now, &tm);
	static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	snprintf(tg->date, sizeof(tg->date), "%s, %d %s %d %02d:%02d:%02d +0000", days[tm.tm_wday],
		 tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
		 tm.tm_sec);
}

void tg_make_sender(struct tg *tg, char *sender, size_t slen)
{
	snprintf(sender, slen, "noreply@%s", tg_pick_domain(tg));
}

void tg_make_recipient(struct tg *tg, char *rcpt, size_t rlen)
{
	const char *dom = tg_pick_domain(tg);
	if (tg->o.recipient_local)
		snprintf(rcpt, rlen, "%s@%s", tg->o.recipient_local, dom);
	else
		snprintf(rcpt, rlen, "user-%llu@%s", (unsigned long long)tg_rand(tg), dom);
}

void tg_make_message(struct tg *tg, char *sender, size_t slen, char *rcpt, size_t rlen,
		     struct buf *hdr)
{
	tg_make_sender(tg, sender, slen);
	tg_make_recipient(tg, rcpt, rlen);
	tg_refresh_date(tg);
	uint64_t a = tg_rand(tg), b = tg_rand(tg);
	/* uuid v4 layout, printed in its "simple" 32-hex-digit form */
	a = (a & ~0xf000ull) | 0x4000ull;
	b = (b & 0x3fffffffffffffffull) | 0x8000000000000000ull;
	const char *dom = strchr(sender, '@') + 1;
	buf_reset(hdr);
	buf_printf(hdr,
		   "From: <%s>\r\nTo: <%s>\r\nSubject: test %s\r\n"
		   "Message-Id: <%016llx%016llx@%s>\r\nX-Mailer: KumoMta traffic-gen\r\n",
		   sender, rcpt, tg->date, (unsigned long long)a, (unsigned long long)b, dom);
	buf_append(hdr, tg->extra_headers.data, tg->extra_headers.len);
	buf_append(hdr, "\r\n", 2);
}

const char *tg_commas(uint64_t n, char *out, size_t cap)
{
	char digits[32];
	int len = snprintf(digits, sizeof(digits), "%llu", (unsigned long long)n);
	size_t o = 0;
	for (int i = 0; i < len && o + 2 < cap; i++) {
		if (i && (len - i) % 3 == 0)
			out[o++] = ',';
		out[o++] = digits[i];
	}
	out[o] = '\0';
	return out;
}
