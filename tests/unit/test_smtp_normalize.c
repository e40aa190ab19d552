/* SPDX-License-Identifier: Apache-2.0 */
/* proto/smtp_normalize: KumoMTA's normalize_smtp_response cases (its own test table), each
 * classifier's edges, the bracket and duration passes, and the word set. The dictionary is
 * a small inline word list so that the test does not depend on /usr/share/dict/words. */
#include <stdlib.h>
#include <string.h>

#include "proto/smtp_normalize.h"
#include "test.h"

/* Words of the cases below that would otherwise look like base64 or a hash. */
static const char WORDS[] =
    "account\nagain\nnext\nbeen\nduration\nnote\nthen\naligned\nauthenticated\nbulk\ndoes\neither\n"
    "email\nexist\nfrom\nhave\nhello\ninformation\nlearn\nmail\nmore\n"
    "message\nrate\nreach\nrecipient\nrecipients\nrejected\nrequirements\n"
    "retry\nsenders\nsome\nthat\nthis\nthrottled\ntried\ntypos\nuuid\n"
    "visit\nwith\nyour\n";

static const char *norm(const char *in)
{
	static char *out;
	static struct smtp_norm_dict *d;
	if (!d)
		d = smtp_norm_dict_new(WORDS, sizeof(WORDS) - 1);
	free(out);
	out = malloc(smtp_normalize_max(strlen(in)));
	size_t n = smtp_normalize(in, strlen(in), d, out);
	ASSERT_EQ(n, strlen(out));
	return out;
}

TEST_IMPL(smtp_normalize_kumomta_cases)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
	    {"retry again at 2025-11-06T17:11:34.261306612Z", "retry again at {timestamp}"},
	    {"a uuid 10aa5da5-3f3b-4176-beb9-32875830f082", "a uuid {uuid}"},
	    {"aGVsbG8uCg==", "{base64}"},
	    {"aGVsbG8K", "{base64}"},
	    {"aGVsbG8K aGVsbG8K", "{base64} {base64}"},
	    {"hello aGVsbG8uCg==", "hello {base64}"},
	    {"hello", "hello"},
	    {"421 4.1.0 10.0.0.1 throttled try later", "421 4.1.0 {ipaddr} throttled try later"},
	    {"421 4.1.0 ::1 throttled try later", "421 4.1.0 {ipaddr} throttled try later"},
	    {"Accepting connection from 42.69.10.20:25", "Accepting connection from {ipaddr}"},
	    {"duration 00:10:34", "duration 00:10:34"},
	    {"rejecting mail for some.body@gmail.com", "rejecting mail for {email}"},
	    {"550 5.1.1 The email account that you tried to reach does not exist. For more "
	     "information, go to  https://support.google.com/mail/?p=NoSuchUser "
	     "41be03b00d2f7-b93bf44f0c0si6882731a12.803 - gsmtp",
	     "550 5.1.1 The email account that you tried to reach does not exist. For more "
	     "information, go to https://support.google.com/mail/?p=NoSuchUser {hash} - gsmtp"},
	    {"Your email has been rate limited because the From: header (RFC5322) in this message",
	     "Your email has been rate limited because the From: header RFC5322 in this message"},
	    {"OK ids=8a5475ccbbc611eda12250ebf67f93bd", "OK ids={uuid}"},
	    {"550 Mail is rejected by recipients [aGVsbG8uCg== IP: 10.10.10.10]. "
	     "https://service.mail.qq.com/detail/0/92.",
	     "550 Mail is rejected by recipients {base64} IP: {ipaddr} "
	     "https://service.mail.qq.com/detail/0/92."},
	    {"Context: DispatcherDrop. Next due in 11s 999ms 990us 55ns at "
	     "2026-04-05T07:34:04.198063031Z",
	     "Context: DispatcherDrop. Next due in {duration} at {timestamp}"},
	    {"P23DT23H", "{duration}"},
	    {"P4Y", "{duration}"},
	    {"P1Y2M3DT4H5M6S", "{duration}"},
	    {"P1Y2M3DT4H5M6Shello", "{hash}"},
	    {"abc11s 999ms", "abc11s {duration}"},
	    {"2year", "{duration}"},
	    {"1month", "{duration}"},
	    {"3day", "{duration}"},
	    {"5h 30m", "{duration}"},
	    {"2yearhello", "2yearhello"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ASSERT_STR_EQ(norm(cases[i].in), cases[i].want);
}

TEST_IMPL(smtp_normalize_classifier_edges)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
	    /* timestamps: real dates and offsets only */
	    {"2024-02-29T00:00:00+01:00", "{timestamp}"},
	    {"2023-02-29T00:00:00Z", "2023-02-29T00:00:00Z"}, /* not a date */
	    {"2023-01-01T24:00:00Z", "2023-01-01T24:00:00Z"},
	    /* UUID forms */
	    /* braced: the bracket pass eats the closing brace first, as in KumoMTA */
	    {"{10aa5da5-3f3b-4176-beb9-32875830f082}", "{10aa5da5-3f3b-4176-beb9-32875830f082"},
	    {"urn:uuid:10aa5da5-3f3b-4176-beb9-32875830f082", "{uuid}"},
	    {"10aa5da5-3f3b-4176-beb9-32875830f08", "{hash}"},
	    /* hash needs more than 2 letters and more than 2 digits, 8 characters */
	    {"ab12cd34", "{hash}"}, /* tried before base64 */
	    {"abcd1234", "{hash}"},
	    {"abcdefgh", "{base64}"},
	    {"ab1-2cd3", "{hash}"},
	    {"ab-1-2-c", "{base64}"}, /* two digits: not a hash; base64url */
	    {"ab-1-2-c.", "ab-1-2-c."},
	    /* IP forms */
	    {"[::1]:25", "[::1 25"}, /* the bracket pass ate "]:" */
	    {"fe80::1%eth0", "{ipaddr}"},
	    {"1.2.3.4::25", "{ipaddr}"},
	    {"1.2.3.4:123456", "1.2.3.4:123456"},
	    /* base64 padding needs a full group before it */
	    {"ab==", "ab=="},
	    {"abcdef==", "{base64}"},
	    {"abcdefg=", "{base64}"},
	    {"abcdefgh=", "abcdefgh="},
	    /* email: lower case, two labels */
	    {"user@example", "user@example"},
	    {"a.b+c@mx.example.com", "{email}"},
	    {"User@Example.com", "User@Example.com"},
	    {"\"a b\"@example.com", "\"a b\"@example.com"}, /* split at the space */
	    {"\"a.b\"@example.com", "{email}"},
	    {"x@[192.0.2.1]", "x@[192.0.2.1"}, /* the bracket pass ate "]" */
	    /* compound: the right-hand side classified, recursively */
	    {"id=a=b=10.0.0.1", "id=a=b={ipaddr}"},
	    {"x=hello", "x=hello"},
	    {"x=y", "x=y"},
	    /* durations need a word boundary before and after */
	    {"x=1s", "x={duration}"},
	    {"10.5s", "10.__DURATION__"}, /* KumoMTA leaves its placeholder in a word */
	    {"5msx", "{base64}"},	  /* no boundary after the unit: not a duration */
	    {"5msx.", "5msx."},
	    /* whitespace collapses to single spaces, none at the ends */
	    {"  a \t b\r\n", "a b"},
	    {"", ""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ASSERT_STR_EQ(norm(cases[i].in), cases[i].want);
}

TEST_IMPL(smtp_normalize_bracket_pass)
{
	/* KumoMTA drops the first character when an opening bracket follows it, and the
	 * character after a closing bracket when it is punctuation or space */
	ASSERT_STR_EQ(norm("x(abc) def"), "abc def");
	ASSERT_STR_EQ(norm("see (note), then"), "see note then");
	ASSERT_STR_EQ(norm("f(x)y"), "x)y");
	/* without an opening bracket, closing brackets stay */
	ASSERT_STR_EQ(norm("done) now"), "done) now");
}

TEST_IMPL(smtp_norm_dict_words)
{
	static const char list[] = "hello\r\nWorld\n\nrate\n";
	struct smtp_norm_dict *d = smtp_norm_dict_new(list, sizeof(list) - 1);
	ASSERT(smtp_norm_dict_has(d, "hello", 5));
	ASSERT(smtp_norm_dict_has(d, "Hello", 5));
	ASSERT(smtp_norm_dict_has(d, "World", 5));
	ASSERT(!smtp_norm_dict_has(d, "world", 5));
	ASSERT(smtp_norm_dict_has(d, "DKIM", 4) && smtp_norm_dict_has(d, "dkim", 4));
	ASSERT(smtp_norm_dict_has(d, "Rcpt", 4));
	ASSERT(!smtp_norm_dict_has(d, "hell", 4));
	ASSERT(!smtp_norm_dict_has(d, "", 0));
	/* hello Hello World rate Rate + 6 extras x2 (SpamCop once) + 11 acronyms x2 */
	ASSERT_EQ(smtp_norm_dict_size(d), 5 + 11 + 22);
	smtp_norm_dict_free(d);
	ASSERT(!smtp_norm_dict_has(NULL, "hello", 5));
}
