/* SPDX-License-Identifier: Apache-2.0 */
/* DKIM tag-lists (kumod/proto/dkim_tags.c): RFC 6376 3.2's syntax in
 * signature fields and key records, and the malformed forms refused. */
#include "base/buf.h"
#include "proto/dkim_tags.h"
#include "test.h"

static const char *val(const struct dkim_tags *t, const char *name, char *out, size_t cap)
{
	const struct dkim_tag *g = dkim_tags_get(t, name);
	if (!g)
		return NULL;
	snprintf(out, cap, "%.*s", (int)g->vlen, g->val);
	return out;
}

TEST_IMPL(dkim_tags_signature_and_key)
{
	const char *sig = "v=1; a=rsa-sha256; d=example.net; s=brisbane;\r\n c=simple; q=dns/txt; "
			  "i=@eng.example.net;\r\n t=1117574938; x=1118006938;\r\n h=from:to:\r\n "
			  "subject:date;\r\n bh=MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=;\r\n "
			  "b=dzdVyOfAKCdLXdJOc9G2q8LoXSlEniSbav+yuU4zGeeruD00lszZVoG4ZHRNiYzR";
	struct dkim_tags t;
	char err[160], v[200];
	ASSERT_EQ(dkim_tags_parse(sig, strlen(sig), &t, err, sizeof(err)), 0);
	ASSERT_EQ(t.n, 12);
	ASSERT_STR_EQ(val(&t, "d", v, sizeof(v)), "example.net");
	ASSERT_STR_EQ(val(&t, "h", v, sizeof(v)), "from:to:\r\n subject:date");
	ASSERT_STR_EQ(val(&t, "i", v, sizeof(v)), "@eng.example.net");
	ASSERT(dkim_tags_get(&t, "l") == NULL);
	struct buf out;
	buf_init(&out);
	const struct dkim_tag *h = dkim_tags_get(&t, "h");
	dkim_tag_nows(h->val, h->vlen, &out);
	ASSERT_STR_EQ(buf_cstr(&out), "from:to:subject:date");
	buf_free(&out);
	const char *key = "v=DKIM1; k=rsa; p=MIGfMA0G; ";
	ASSERT_EQ(dkim_tags_parse(key, strlen(key), &t, err, sizeof(err)), 0);
	ASSERT_EQ(t.n, 3);
	ASSERT_STR_EQ(val(&t, "p", v, sizeof(v)), "MIGfMA0G");
	/* an empty value is a value (a revoked key: p=) */
	ASSERT_EQ(dkim_tags_parse("v=DKIM1; p=", 11, &t, err, sizeof(err)), 0);
	ASSERT_STR_EQ(val(&t, "p", v, sizeof(v)), "");
}

TEST_IMPL(dkim_tags_malformed)
{
	static const char *const bad[] = {"a",	      "a=1; a=2", "=1",	    "1a=x",   "a-b=1",
					  "a=1;;b=2", ";a=1",	  "a=\x01", "a=b\x7f"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct dkim_tags t;
		char err[160] = "";
		if (dkim_tags_parse(bad[i], strlen(bad[i]), &t, err, sizeof(err)) != -1)
			TEST_FAIL("accepted: %s", bad[i]);
		ASSERT(err[0]);
		ASSERT_EQ(t.n, 0);
	}
}
