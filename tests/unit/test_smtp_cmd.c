/* SPDX-License-Identifier: Apache-2.0 */
/* SMTP command parser: verbs, every error class and its reply, path forms, ESMTP parameters,
 * UTF-8, domains, canonical re-encoding. */
#include <errno.h>

#include "proto/smtp_cmd.h"
#include "test.h"

/* Table-driven tests name the failing case. */
static const char *test_case = "";
#undef TEST_FAIL
#define TEST_FAIL(...)                                                          \
	do {                                                                    \
		fprintf(stderr, "%s:%d: [%s] ", __FILE__, __LINE__, test_case); \
		fprintf(stderr, __VA_ARGS__);                                   \
		fputc('\n', stderr);                                            \
		abort();                                                        \
	} while (0)

/* A string literal with its length, so cases may hold NUL bytes. */
#define S(x) x, sizeof(x) - 1

/* Expected mailbox flags. */
enum {
	F_NULL = 1,
	F_PM = 2,
	F_QUOTED = 4,
	F_LIT = 8,
	F_UTF8 = 16,
};

struct cmd_case {
	const char *name;
	const char *in;
	size_t len;
	int code; /* 0: parses */
	const char *enh;
	enum smtp_verb verb; /* also checked on failure */
	const char *mailbox; /* smtp_mailbox_format(), NULL: not checked */
	unsigned flags;
	const char *text; /* exact error text, NULL: not checked */
};

#define OK(n, in, verb)                                            \
	{                                                          \
		n, S(in), 0, NULL, SMTP_VERB_##verb, NULL, 0, NULL \
	}
#define OKMB(n, in, verb, mb, fl)                                 \
	{                                                         \
		n, S(in), 0, NULL, SMTP_VERB_##verb, mb, fl, NULL \
	}
#define ERR(n, in, verb, code, enh)                                  \
	{                                                            \
		n, S(in), code, enh, SMTP_VERB_##verb, NULL, 0, NULL \
	}
#define ERRT(n, in, verb, code, enh, t)                           \
	{                                                         \
		n, S(in), code, enh, SMTP_VERB_##verb, NULL, 0, t \
	}

static const struct cmd_case cmd_cases[] = {
    /* verbs and their arguments */
    OK("helo", "HELO example.com", HELO),
    OK("helo lower", "helo example.com", HELO),
    OK("ehlo literal", "EHLO [192.0.2.1]", EHLO),
    OK("ehlo mixed case", "eHlO client", EHLO),
    OK("ehlo spaces trimmed", "EHLO   host   ", EHLO),
    OK("ehlo utf8", "EHLO h\xc3\xa9llo.example", EHLO),
    OK("ehlo underscore (as Postfix)", "EHLO my_host", EHLO),
    OK("lhlo", "LHLO lmtp.example", LHLO),
    ERRT("helo no arg", "HELO", HELO, 501, "5.5.4", "Syntax: HELO hostname"),
    ERRT("ehlo no arg", "EHLO", EHLO, 501, "5.5.4", "Syntax: EHLO hostname"),
    ERR("ehlo only spaces", "EHLO   ", EHLO, 501, "5.5.4"),
    ERR("ehlo two words", "EHLO a b", EHLO, 501, "5.5.4"),
    ERRT("lhlo no arg", "LHLO", LHLO, 501, "5.5.4", "Syntax: LHLO hostname"),
    OK("data", "DATA", DATA),
    OK("data lower", "data", DATA),
    OK("data trailing space", "DATA ", DATA),
    ERRT("data arg", "DATA now", DATA, 501, "5.5.4", "Syntax error: no arguments allowed"),
    OK("rset", "RSET", RSET),
    ERR("rset arg", "RSET x", RSET, 501, "5.5.4"),
    OK("quit", "QUIT", QUIT),
    ERR("quit arg", "QUIT now", QUIT, 501, "5.5.4"),
    OK("starttls", "STARTTLS", STARTTLS),
    ERR("starttls arg", "STARTTLS foo", STARTTLS, 501, "5.5.4"),
    OK("noop", "NOOP", NOOP),
    OK("noop arg", "NOOP anything at all", NOOP),
    OK("help", "HELP", HELP),
    OK("help arg", "HELP MAIL", HELP),
    OK("vrfy", "VRFY user", VRFY),
    ERRT("vrfy no arg", "VRFY", VRFY, 501, "5.5.4", "Syntax: VRFY address"),
    OK("expn", "EXPN list", EXPN),
    ERR("expn no arg", "EXPN", EXPN, 501, "5.5.4"),
    OK("auth", "AUTH PLAIN dGVzdAB0ZXN0AHBhc3M=", AUTH),
    ERR("auth no arg", "AUTH", AUTH, 501, "5.5.4"),
    OK("bdat", "BDAT 100 LAST", BDAT),
    ERR("bdat no arg", "BDAT", BDAT, 501, "5.5.4"),
    OK("xclient", "XCLIENT ADDR=192.0.2.1", XCLIENT),
    ERR("xclient no arg", "XCLIENT", XCLIENT, 501, "5.5.4"),

    /* line-level errors */
    ERRT("empty line", "", UNKNOWN, 500, "5.5.2", "Syntax error: empty command"),
    ERR("leading space", " NOOP", UNKNOWN, 500, "5.5.2"),
    ERRT("unknown verb", "FOO bar", UNKNOWN, 500, "5.5.1", "Command unrecognized"),
    ERR("http request", "GET / HTTP/1.1", UNKNOWN, 500, "5.5.1"),
    ERR("verb glued to arg", "MAIL:FROM:<a@b>", UNKNOWN, 500, "5.5.1"),
    ERR("verb prefix", "MAI", UNKNOWN, 500, "5.5.1"),
    ERR("verb longer", "QUITS", UNKNOWN, 500, "5.5.1"),
    ERR("verb utf8 valid", "\xc3\xa9HLO x", UNKNOWN, 500, "5.5.1"),
    ERRT("verb utf8 invalid", "\xff\xfe x", UNKNOWN, 500, "5.5.2", "Invalid UTF-8 in command"),
    ERRT("nul", "NOOP \0x", UNKNOWN, 500, "5.5.2", "Syntax error: control character in command"),
    ERR("nul in verb", "NO\0OP", UNKNOWN, 500, "5.5.2"),
    ERR("tab", "NOOP\tx", UNKNOWN, 500, "5.5.2"),
    ERR("escape", "HELP \x1b[31m", UNKNOWN, 500, "5.5.2"),
    ERR("del", "HELP \x7f", UNKNOWN, 500, "5.5.2"),
    ERR("nul in address", "MAIL FROM:<a\0b@c>", UNKNOWN, 500, "5.5.2"),
    ERRT("utf8 overlong", "NOOP \xc0\xaf", NOOP, 501, "5.5.2", "Invalid UTF-8 in command"),
    ERR("utf8 overlong 3", "NOOP \xe0\x80\xaf", NOOP, 501, "5.5.2"),
    ERR("utf8 overlong 4", "NOOP \xf0\x80\x80\xaf", NOOP, 501, "5.5.2"),
    ERR("utf8 surrogate", "HELP \xed\xa0\x80", HELP, 501, "5.5.2"),
    ERR("utf8 > U+10FFFF", "HELP \xf4\x90\x80\x80", HELP, 501, "5.5.2"),
    ERR("utf8 f5", "HELP \xf5\x80\x80\x80", HELP, 501, "5.5.2"),
    ERR("utf8 truncated", "HELP \xe2\x82", HELP, 501, "5.5.2"),
    ERR("utf8 truncated mid", "HELP \xe2\x82x", HELP, 501, "5.5.2"),
    ERR("utf8 lone continuation", "HELP \x80", HELP, 501, "5.5.2"),
    ERR("utf8 fe", "HELP \xfe", HELP, 501, "5.5.2"),
    ERR("utf8 ff", "HELP \xff", HELP, 501, "5.5.2"),
    OK("utf8 valid 2/3/4", "HELP \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", HELP),

    /* MAIL forms */
    OKMB("mail", "MAIL FROM:<a@example.com>", MAIL, "a@example.com", 0),
    OKMB("mail lower", "mail from:<a@example.com>", MAIL, "a@example.com", 0),
    OKMB("mail bare", "MAIL FROM:a@example.com", MAIL, "a@example.com", 0),
    OKMB("mail space after colon", "MAIL FROM: <a@example.com>", MAIL, "a@example.com", 0),
    OKMB("mail spaces after colon", "MAIL FROM:   <a@example.com>", MAIL, "a@example.com", 0),
    OKMB("mail double space after verb", "MAIL  FROM:<a@b>", MAIL, "a@b", 0),
    OKMB("mail trailing spaces", "MAIL FROM:<a@b>   ", MAIL, "a@b", 0),
    OKMB("mail null", "MAIL FROM:<>", MAIL, "", F_NULL),
    OKMB("mail null size", "MAIL FROM:<> SIZE=100", MAIL, "", F_NULL),
    OKMB("mail bare then param", "MAIL FROM:a@b BODY=8BITMIME", MAIL, "a@b", 0),
    ERRT("mail no arg", "MAIL", MAIL, 501, "5.5.4", "Syntax: MAIL FROM:<address>"),
    ERR("mail to:", "MAIL TO:<a@b>", MAIL, 501, "5.5.4"),
    ERR("mail from no colon", "MAIL FROM<a@b>", MAIL, 501, "5.5.4"),
    ERR("mail space before colon", "MAIL FROM :<a@b>", MAIL, 501, "5.5.4"),
    ERRT("mail empty path", "MAIL FROM:", MAIL, 501, "5.1.7", "Invalid sender address syntax"),
    ERR("mail lone <", "MAIL FROM:<", MAIL, 501, "5.1.7"),
    ERR("mail unclosed", "MAIL FROM:<a@b", MAIL, 501, "5.1.7"),
    ERR("mail unopened", "MAIL FROM:a@b>", MAIL, 501, "5.1.7"),
    ERR("mail double bracket", "MAIL FROM:<<a@b>>", MAIL, 501, "5.1.7"),
    ERRT("mail junk after path", "MAIL FROM:<a@b>x", MAIL, 501, "5.5.4",
	 "Invalid parameter syntax"),
    ERR("mail postmaster", "MAIL FROM:<Postmaster>", MAIL, 501, "5.1.7"),
    ERR("mail no domain", "MAIL FROM:<a>", MAIL, 501, "5.1.7"),
    ERR("mail space in path", "MAIL FROM:<a @b>", MAIL, 501, "5.1.7"),

    /* RCPT forms */
    OKMB("rcpt", "RCPT TO:<b@example.org>", RCPT, "b@example.org", 0),
    OKMB("rcpt bare", "rcpt to:b@example.org", RCPT, "b@example.org", 0),
    OKMB("rcpt space after colon", "RCPT TO: <b@example.org>", RCPT, "b@example.org", 0),
    ERRT("rcpt null", "RCPT TO:<>", RCPT, 501, "5.1.3",
	 "Invalid recipient address syntax: <> not allowed"),
    ERRT("rcpt no arg", "RCPT", RCPT, 501, "5.5.4", "Syntax: RCPT TO:<address>"),
    ERR("rcpt from:", "RCPT FROM:<a@b>", RCPT, 501, "5.5.4"),
    OKMB("rcpt postmaster", "RCPT TO:<Postmaster>", RCPT, "Postmaster", F_PM),
    OKMB("rcpt POSTMASTER", "RCPT TO:<POSTMASTER>", RCPT, "Postmaster", F_PM),
    OKMB("rcpt bare postmaster", "rcpt to:postmaster", RCPT, "Postmaster", F_PM),
    OKMB("rcpt postmaster@domain", "RCPT TO:<postmaster@example.com>", RCPT,
	 "postmaster@example.com", 0),
    ERR("rcpt routed postmaster", "RCPT TO:<@a.example:Postmaster>", RCPT, 501, "5.1.3"),
    ERR("rcpt quoted postmaster", "RCPT TO:<\"Postmaster\">", RCPT, 501, "5.1.3"),
    ERRT("rcpt no domain", "RCPT TO:<user>", RCPT, 501, "5.1.3",
	 "Invalid recipient address syntax"),
    ERR("rcpt postmasterx", "RCPT TO:<postmasterx>", RCPT, 501, "5.1.3"),

    /* source routes */
    OKMB("route two hops", "RCPT TO:<@a.example,@b.example:user@d.example>", RCPT, "user@d.example",
	 0),
    OKMB("route one hop", "RCPT TO:<@a.example:user@d.example>", RCPT, "user@d.example", 0),
    OKMB("route mail", "MAIL FROM:<@a:u@d>", MAIL, "u@d", 0),
    ERR("route bad domain", "RCPT TO:<@a..b:user@d>", RCPT, 501, "5.1.3"),
    ERR("route missing @", "RCPT TO:<@a,b:user@d>", RCPT, 501, "5.1.3"),
    ERR("route no colon", "RCPT TO:<@a>", RCPT, 501, "5.1.3"),
    ERR("route empty hop", "RCPT TO:<@:user@d>", RCPT, 501, "5.1.3"),
    ERR("route then null", "MAIL FROM:<@a:>", MAIL, 501, "5.1.7"),
    ERR("route bare", "RCPT TO:@a:user@d", RCPT, 501, "5.1.3"),
    ERR("route literal", "RCPT TO:<@[1.2.3.4]:user@d>", RCPT, 501, "5.1.3"),

    /* quoted local parts */
    OKMB("quoted @ and >", "RCPT TO:<\"a@b>c\"@example.com>", RCPT, "\"a@b>c\"@example.com",
	 F_QUOTED),
    OKMB("quoted space", "RCPT TO:<\"john doe\"@example.com>", RCPT, "\"john doe\"@example.com",
	 F_QUOTED),
    OKMB("quoted bare with space", "RCPT TO:\"john doe\"@example.com", RCPT,
	 "\"john doe\"@example.com", F_QUOTED),
    OKMB("quoted pair quote", "RCPT TO:<\"a\\\"b\"@example.com>", RCPT, "\"a\\\"b\"@example.com",
	 F_QUOTED),
    OKMB("quoted pair backslash", "RCPT TO:<\"a\\\\\"@example.com>", RCPT, "\"a\\\\\"@example.com",
	 F_QUOTED),
    OKMB("quoted colon", "RCPT TO:<\"a:b\"@example.com>", RCPT, "\"a:b\"@example.com", F_QUOTED),
    OKMB("quoted empty", "RCPT TO:<\"\"@example.com>", RCPT, "\"\"@example.com", F_QUOTED),
    OKMB("quoted mail", "MAIL FROM:<\"x y\"@example.com> SIZE=5", MAIL, "\"x y\"@example.com",
	 F_QUOTED),
    ERR("quoted unterminated", "RCPT TO:<\"abc@example.com>", RCPT, 501, "5.1.3"),
    ERR("quoted pair at end", "RCPT TO:<\"abc\\", RCPT, 501, "5.1.3"),
    ERR("quoted then atom", "RCPT TO:<\"a\"b@example.com>", RCPT, 501, "5.1.3"),
    ERR("atom then quoted", "RCPT TO:<a\"b\"@example.com>", RCPT, 501, "5.1.3"),
    ERR("quoted no domain", "RCPT TO:<\"a\">", RCPT, 501, "5.1.3"),

    /* dot-strings */
    OKMB("dots", "RCPT TO:<first.last@example.com>", RCPT, "first.last@example.com", 0),
    OKMB("percent hack kept", "RCPT TO:<a%b@example.com>", RCPT, "a%b@example.com", 0),
    OKMB("bang path kept", "RCPT TO:<a!b@example.com>", RCPT, "a!b@example.com", 0),
    OKMB("atext specials", "RCPT TO:<a+b=c/d{e}~'*#$&^_`|?-@x>", RCPT, "a+b=c/d{e}~'*#$&^_`|?-@x",
	 0),
    ERR("leading dot", "RCPT TO:<.a@example.com>", RCPT, 501, "5.1.3"),
    ERR("trailing dot local", "RCPT TO:<a.@example.com>", RCPT, 501, "5.1.3"),
    ERR("double dot local", "RCPT TO:<a..b@example.com>", RCPT, 501, "5.1.3"),
    ERR("double @", "RCPT TO:<a@b@example.com>", RCPT, 501, "5.1.3"),
    ERR("empty local", "RCPT TO:<@example.com>", RCPT, 501, "5.1.3"),
    ERR("bracket in local", "RCPT TO:<a[b@example.com>", RCPT, 501, "5.1.3"),
    ERR("comma in local", "RCPT TO:<a,b@example.com>", RCPT, 501, "5.1.3"),

    /* domains and literals */
    OKMB("ipv4 literal", "RCPT TO:<a@[192.0.2.1]>", RCPT, "a@[192.0.2.1]", F_LIT),
    OKMB("ipv4 literal zero", "RCPT TO:<a@[0.0.0.0]>", RCPT, "a@[0.0.0.0]", F_LIT),
    OKMB("ipv6 literal", "RCPT TO:<a@[IPv6:2001:db8::1]>", RCPT, "a@[IPv6:2001:db8::1]", F_LIT),
    OKMB("ipv6 lower tag", "RCPT TO:<a@[ipv6:::1]>", RCPT, "a@[ipv6:::1]", F_LIT),
    OKMB("ipv6 v4 tail", "RCPT TO:<a@[IPv6:::ffff:192.0.2.1]>", RCPT, "a@[IPv6:::ffff:192.0.2.1]",
	 F_LIT),
    OKMB("ipv6 full", "RCPT TO:<a@[IPv6:1:2:3:4:5:6:7:8]>", RCPT, "a@[IPv6:1:2:3:4:5:6:7:8]",
	 F_LIT),
    OKMB("bare literal", "RCPT TO:a@[192.0.2.1]", RCPT, "a@[192.0.2.1]", F_LIT),
    ERR("ipv4 octet > 255", "RCPT TO:<a@[256.1.1.1]>", RCPT, 501, "5.1.3"),
    ERR("ipv4 three parts", "RCPT TO:<a@[1.2.3]>", RCPT, 501, "5.1.3"),
    ERR("ipv4 five parts", "RCPT TO:<a@[1.2.3.4.5]>", RCPT, 501, "5.1.3"),
    ERR("ipv4 four digits", "RCPT TO:<a@[0001.2.3.4]>", RCPT, 501, "5.1.3"),
    ERR("ipv4 empty part", "RCPT TO:<a@[1..3.4]>", RCPT, 501, "5.1.3"),
    ERR("ipv4 space", "RCPT TO:<a@[ 1.2.3.4]>", RCPT, 501, "5.1.3"),
    ERR("ipv6 bad hex", "RCPT TO:<a@[IPv6:2001:db8::g]>", RCPT, 501, "5.1.3"),
    ERR("ipv6 nine groups", "RCPT TO:<a@[IPv6:1:2:3:4:5:6:7:8:9]>", RCPT, 501, "5.1.3"),
    ERR("ipv6 two ::", "RCPT TO:<a@[IPv6:1::2::3]>", RCPT, 501, "5.1.3"),
    ERR("ipv6 empty", "RCPT TO:<a@[IPv6:]>", RCPT, 501, "5.1.3"),
    ERR("ipv6 untagged", "RCPT TO:<a@[2001:db8::1]>", RCPT, 501, "5.1.3"),
    ERR("ipv6 too long", "RCPT TO:<a@[IPv6:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000]>",
	RCPT, 501, "5.1.3"),
    ERR("general literal", "RCPT TO:<a@[x400:foo]>", RCPT, 501, "5.1.3"),
    ERR("literal unclosed", "RCPT TO:<a@[1.2.3.4>", RCPT, 501, "5.1.3"),
    ERR("literal empty", "RCPT TO:<a@[]>", RCPT, 501, "5.1.3"),
    ERR("literal junk after", "RCPT TO:<a@[1.2.3.4]x>", RCPT, 501, "5.1.3"),
    ERR("host:port", "RCPT TO:<a@example.com:25>", RCPT, 501, "5.1.3"),
    ERR("host:port bare", "RCPT TO:a@example.com:25", RCPT, 501, "5.1.3"),
    ERR("host:port mail", "MAIL FROM:<a@example.com:25>", MAIL, 501, "5.1.7"),
    ERR("trailing dot domain", "RCPT TO:<a@example.com.>", RCPT, 501, "5.1.3"),
    ERR("trailing dot mail", "MAIL FROM:<a@example.com.>", MAIL, 501, "5.1.7"),
    ERR("leading dot domain", "RCPT TO:<a@.example.com>", RCPT, 501, "5.1.3"),
    ERR("empty label", "RCPT TO:<a@exa..mple>", RCPT, 501, "5.1.3"),
    ERR("leading hyphen", "RCPT TO:<a@-ex.com>", RCPT, 501, "5.1.3"),
    ERR("trailing hyphen", "RCPT TO:<a@ex-.com>", RCPT, 501, "5.1.3"),
    ERR("trailing hyphen last", "RCPT TO:<a@ex.com->", RCPT, 501, "5.1.3"),
    OKMB("inner hyphen", "RCPT TO:<a@e-x.co-m>", RCPT, "a@e-x.co-m", 0),
    OKMB("single label", "RCPT TO:<a@localhost>", RCPT, "a@localhost", 0),
    ERR("underscore domain", "RCPT TO:<a@ex_ample.com>", RCPT, 501, "5.1.3"),
    ERR("empty domain", "RCPT TO:<a@>", RCPT, 501, "5.1.3"),
    ERR("space in domain", "RCPT TO:<a@b c>", RCPT, 501, "5.1.3"),
    ERR("percent in domain", "RCPT TO:<a@b%c>", RCPT, 501, "5.1.3"),
    OKMB("label 63",
	 "RCPT TO:<a@"
	 "123456789012345678901234567890123456789012345678901234567890123.com>",
	 RCPT, "a@123456789012345678901234567890123456789012345678901234567890123.com", 0),
    ERR("label 64",
	"RCPT TO:<a@1234567890123456789012345678901234567890123456789012345678901234.com>", RCPT,
	501, "5.1.3"),

    /* UTF-8 addresses */
    OKMB("utf8 local smtputf8", "MAIL FROM:<j\xc3\xb6rg@example.com> SMTPUTF8", MAIL,
	 "j\xc3\xb6rg@example.com", F_UTF8),
    OKMB("utf8 smtputf8 lower", "MAIL FROM:<j\xc3\xb6rg@example.com> smtputf8", MAIL,
	 "j\xc3\xb6rg@example.com", F_UTF8),
    OKMB("utf8 domain smtputf8",
	 "MAIL FROM:<a@b\xc3\xbc"
	 "cher.example> SMTPUTF8",
	 MAIL,
	 "a@b\xc3\xbc"
	 "cher.example",
	 F_UTF8),
    OKMB("utf8 quoted smtputf8", "MAIL FROM:<\"j\xc3\xb6 rg\"@example.com> SMTPUTF8", MAIL,
	 "\"j\xc3\xb6 rg\"@example.com", F_UTF8 | F_QUOTED),
    OKMB("utf8 4-byte local", "MAIL FROM:<\xf0\x9f\x98\x80@example.com> SMTPUTF8", MAIL,
	 "\xf0\x9f\x98\x80@example.com", F_UTF8),
    ERRT("utf8 local no smtputf8", "MAIL FROM:<j\xc3\xb6rg@example.com>", MAIL, 553, "5.6.7",
	 "Non-ASCII address requires SMTPUTF8"),
    ERR("utf8 domain no smtputf8",
	"MAIL FROM:<a@b\xc3\xbc"
	"cher.example>",
	MAIL, 553, "5.6.7"),
    ERR("utf8 overlong in address", "MAIL FROM:<a\xc0\xaf@b> SMTPUTF8", MAIL, 501, "5.5.2"),
    ERR("utf8 surrogate in address", "MAIL FROM:<a\xed\xa0\x80@b> SMTPUTF8", MAIL, 501, "5.5.2"),
    ERR("utf8 truncated in address", "MAIL FROM:<a\xe2\x82@b> SMTPUTF8", MAIL, 501, "5.5.2"),
    ERR("utf8 overlong no smtputf8", "MAIL FROM:<a\xc0\xaf@b>", MAIL, 501, "5.5.2"),
    OKMB("utf8 rcpt parses", "RCPT TO:<j\xc3\xb6rg@example.com>", RCPT, "j\xc3\xb6rg@example.com",
	 F_UTF8),
    ERR("utf8 in param value", "MAIL FROM:<a@b> SIZE=1\xc3\xa9", MAIL, 501, "5.5.4"),

    /* parameters */
    OK("size", "MAIL FROM:<a@b> SIZE=1000", MAIL),
    OK("size zero", "MAIL FROM:<a@b> SIZE=0", MAIL),
    OK("size max", "MAIL FROM:<a@b> SIZE=18446744073709551615", MAIL),
    OK("size leading zeros", "MAIL FROM:<a@b> SIZE=000000000000000000001", MAIL),
    ERRT("size overflow", "MAIL FROM:<a@b> SIZE=18446744073709551616", MAIL, 501, "5.5.4",
	 "Invalid SIZE parameter"),
    ERR("size huge", "MAIL FROM:<a@b> SIZE=99999999999999999999999", MAIL, 501, "5.5.4"),
    ERR("size no value", "MAIL FROM:<a@b> SIZE", MAIL, 501, "5.5.4"),
    ERRT("size empty value", "MAIL FROM:<a@b> SIZE=", MAIL, 501, "5.5.4",
	 "Invalid parameter syntax"),
    ERR("size letters", "MAIL FROM:<a@b> SIZE=12a", MAIL, 501, "5.5.4"),
    ERR("size negative", "MAIL FROM:<a@b> SIZE=-1", MAIL, 501, "5.5.4"),
    ERR("size plus", "MAIL FROM:<a@b> SIZE=+1", MAIL, 501, "5.5.4"),
    OK("body 7bit", "MAIL FROM:<a@b> BODY=7BIT", MAIL),
    OK("body 8bitmime lower", "mail from:<a@b> body=8bitmime", MAIL),
    ERRT("body binarymime", "MAIL FROM:<a@b> BODY=BINARYMIME", MAIL, 501, "5.5.4",
	 "Invalid BODY parameter"),
    ERR("body no value", "MAIL FROM:<a@b> BODY", MAIL, 501, "5.5.4"),
    ERRT("smtputf8 value", "MAIL FROM:<a@b> SMTPUTF8=yes", MAIL, 501, "5.5.4",
	 "SMTPUTF8 takes no value"),
    ERRT("ret unknown", "MAIL FROM:<a@b> RET=FULL", MAIL, 555, "5.5.4", "Unsupported parameter"),
    ERR("envid unknown", "MAIL FROM:<a@b> ENVID=abc", MAIL, 555, "5.5.4"),
    ERR("auth unknown", "MAIL FROM:<a@b> AUTH=<>", MAIL, 555, "5.5.4"),
    ERR("x- unknown", "MAIL FROM:<a@b> X-FOO", MAIL, 555, "5.5.4"),
    ERRT("duplicate", "MAIL FROM:<a@b> SIZE=1 SIZE=2", MAIL, 501, "5.5.4", "Duplicate parameter"),
    ERR("duplicate any case", "MAIL FROM:<a@b> SIZE=1 size=1", MAIL, 501, "5.5.4"),
    ERR("duplicate flag", "MAIL FROM:<a@b> SMTPUTF8 SMTPUTF8", MAIL, 501, "5.5.4"),
    ERR("unknown before duplicate", "MAIL FROM:<a@b> FOO FOO", MAIL, 555, "5.5.4"),
    ERR("bad before unknown", "MAIL FROM:<a@b> SIZE=x FOO", MAIL, 501, "5.5.4"),
    ERR("unknown before bad", "MAIL FROM:<a@b> FOO SIZE=x", MAIL, 555, "5.5.4"),
    ERR("param empty key", "MAIL FROM:<a@b> =x", MAIL, 501, "5.5.4"),
    ERR("param hyphen first", "MAIL FROM:<a@b> -X", MAIL, 501, "5.5.4"),
    ERR("param double =", "MAIL FROM:<a@b> SIZE==1", MAIL, 501, "5.5.4"),
    ERR("param bad key char", "MAIL FROM:<a@b> SI_ZE=1", MAIL, 501, "5.5.4"),
    OK("params spaced", "MAIL FROM:<a@b>  SIZE=1   BODY=7BIT  SMTPUTF8 ", MAIL),
    ERRT("17 params", "MAIL FROM:<a@b> A B C D E F G H I J K L M N O P Q", MAIL, 501, "5.5.4",
	 "Too many parameters"),
    ERR("16 params all unknown", "MAIL FROM:<a@b> A B C D E F G H I J K L M N O P", MAIL, 555,
	"5.5.4"),
    ERR("rcpt notify", "RCPT TO:<a@b> NOTIFY=NEVER", RCPT, 555, "5.5.4"),
    ERR("rcpt size", "RCPT TO:<a@b> SIZE=1", RCPT, 555, "5.5.4"),
    ERR("rcpt smtputf8", "RCPT TO:<a@b> SMTPUTF8", RCPT, 555, "5.5.4"),
};

static void cmd_check_case(const struct cmd_case *c)
{
	struct smtp_cmd cmd;
	struct smtp_reply_err err = {0, NULL, NULL};
	char mb[512];
	int rc = smtp_cmd_parse(c->in, c->len, &cmd, &err);

	test_case = c->name;
	ASSERT_EQ(cmd.verb, c->verb);
	if (c->code == 0) {
		if (rc != 0)
			TEST_FAIL("%s: unexpected %d %s %s", c->name, err.code, err.enhanced,
				  err.text);
	} else {
		ASSERT_EQ(rc, -EINVAL);
		ASSERT_EQ(err.code, c->code);
		ASSERT_STR_EQ(err.enhanced, c->enh);
		ASSERT(err.text != NULL);
		if (c->text)
			ASSERT_STR_EQ(err.text, c->text);
		return;
	}
	if (c->mailbox) {
		smtp_mailbox_format(&cmd.path, mb, sizeof(mb));
		ASSERT_STR_EQ(mb, c->mailbox);
	}
	if (c->verb == SMTP_VERB_MAIL || c->verb == SMTP_VERB_RCPT) {
		ASSERT_EQ(cmd.path.null_path, !!(c->flags & F_NULL));
		ASSERT_EQ(cmd.path.postmaster, !!(c->flags & F_PM));
		ASSERT_EQ(cmd.path.quoted, !!(c->flags & F_QUOTED));
		ASSERT_EQ(cmd.path.literal, !!(c->flags & F_LIT));
		ASSERT_EQ(cmd.path.utf8, !!(c->flags & F_UTF8));
	}
}

TEST_IMPL(smtp_cmd_table)
{
	for (size_t i = 0; i < ARRAY_SIZE(cmd_cases); i++)
		cmd_check_case(&cmd_cases[i]);
}

/* Every successful case re-encodes to a line that parses to the same command. */
TEST_IMPL(smtp_cmd_table_roundtrip)
{
	for (size_t i = 0; i < ARRAY_SIZE(cmd_cases); i++) {
		const struct cmd_case *c = &cmd_cases[i];
		struct smtp_cmd a, b;
		struct smtp_reply_err err;
		char line[1024];
		if (c->code)
			continue;
		ASSERT_EQ(smtp_cmd_parse(c->in, c->len, &a, &err), 0);
		size_t n = smtp_cmd_format(&a, line, sizeof(line));
		ASSERT_LT(n, sizeof(line));
		if (smtp_cmd_parse(line, n, &b, &err) != 0)
			TEST_FAIL("%s: \"%s\" -> %d %s", c->name, line, err.code, err.text);
		ASSERT_EQ(a.verb, b.verb);
		ASSERT_MEM_EQ(a.path.local.p, a.path.local.len, b.path.local.p, b.path.local.len);
		ASSERT_MEM_EQ(a.path.domain.p, a.path.domain.len, b.path.domain.p,
			      b.path.domain.len);
		ASSERT_EQ(a.nparams, b.nparams);
		ASSERT_EQ(a.size, b.size);
		ASSERT_EQ(a.body, b.body);
		ASSERT_EQ(a.smtputf8, b.smtputf8);
	}
}

TEST_IMPL(smtp_cmd_fields)
{
	struct smtp_cmd cmd;
	struct smtp_reply_err err;
	const char *l = "MAIL FROM:<@r.example:\"x y\"@[IPv6:::1]> size=42 BODY=8BITMIME SMTPUTF8";

	ASSERT_EQ(smtp_cmd_parse(l, strlen(l), &cmd, &err), 0);
	ASSERT_MEM_EQ(cmd.path.local.p, cmd.path.local.len, "\"x y\"", 5);
	ASSERT_MEM_EQ(cmd.path.domain.p, cmd.path.domain.len, "[IPv6:::1]", 10);
	ASSERT_EQ(cmd.nparams, 3);
	ASSERT_MEM_EQ(cmd.params[0].key.p, cmd.params[0].key.len, "size", 4);
	ASSERT_MEM_EQ(cmd.params[0].value.p, cmd.params[0].value.len, "42", 2);
	ASSERT_EQ(cmd.params[0].has_value, 1);
	ASSERT_EQ(cmd.params[2].has_value, 0);
	ASSERT_EQ(cmd.params[2].value.len, 0);
	ASSERT_EQ(cmd.has_size, 1);
	ASSERT_EQ(cmd.size, 42);
	ASSERT_EQ(cmd.body, SMTP_BODY_8BITMIME);
	ASSERT_EQ(cmd.smtputf8, 1);
	/* Slices point into the caller's line. */
	ASSERT(cmd.path.local.p > l && cmd.path.local.p < l + strlen(l));

	l = "EHLO   client.example  ";
	ASSERT_EQ(smtp_cmd_parse(l, strlen(l), &cmd, &err), 0);
	ASSERT_MEM_EQ(cmd.arg.p, cmd.arg.len, "client.example", 14);
	ASSERT_EQ(cmd.has_size, 0);
	ASSERT_EQ(cmd.body, SMTP_BODY_NONE);

	l = "MAIL FROM:<> SIZE=18446744073709551615";
	ASSERT_EQ(smtp_cmd_parse(l, strlen(l), &cmd, &err), 0);
	ASSERT(cmd.size == UINT64_MAX);
	l = "MAIL FROM:<a@b> BODY=7bit";
	ASSERT_EQ(smtp_cmd_parse(l, strlen(l), &cmd, &err), 0);
	ASSERT_EQ(cmd.body, SMTP_BODY_7BIT);

	/* The parser reads only line[0..len): the rest of the buffer is not part of it. */
	l = "QUIT now";
	ASSERT_EQ(smtp_cmd_parse(l, 4, &cmd, &err), 0);
	ASSERT_EQ(cmd.verb, SMTP_VERB_QUIT);
}

struct fmt_case {
	const char *name, *in, *want;
};

static const struct fmt_case fmt_cases[] = {
    {"mail lenient", "mail from: <a@b>   size=10 ", "MAIL FROM:<a@b> size=10"},
    {"mail bare", "mail from:a@b", "MAIL FROM:<a@b>"},
    {"mail null", "MAIL FROM:<>", "MAIL FROM:<>"},
    {"route dropped", "rcpt to:<@x,@y:u@d>", "RCPT TO:<u@d>"},
    {"postmaster as written", "RCPT TO:<postmaster>", "RCPT TO:<postmaster>"},
    {"quoted kept", "RCPT TO:\"a b\"@c", "RCPT TO:<\"a b\"@c>"},
    {"ehlo trimmed", "ehlo   x  ", "EHLO x"},
    {"data", "data", "DATA"},
    {"noop arg", "noop  hi there ", "NOOP hi there"},
    {"flag param", "MAIL FROM:<a@b> SMTPUTF8 BODY=7BIT", "MAIL FROM:<a@b> SMTPUTF8 BODY=7BIT"},
};

TEST_IMPL(smtp_cmd_format)
{
	for (size_t i = 0; i < ARRAY_SIZE(fmt_cases); i++) {
		struct smtp_cmd cmd;
		struct smtp_reply_err err;
		char out[256];
		const struct fmt_case *c = &fmt_cases[i];
		test_case = c->name;
		ASSERT_EQ(smtp_cmd_parse(c->in, strlen(c->in), &cmd, &err), 0);
		ASSERT_EQ(smtp_cmd_format(&cmd, out, sizeof(out)), strlen(c->want));
		ASSERT_STR_EQ(out, c->want);
	}
}

TEST_IMPL(smtp_cmd_format_truncates)
{
	struct smtp_cmd cmd;
	struct smtp_reply_err err;
	char out[8];
	const char *l = "RCPT TO:<user@example.com>";

	ASSERT_EQ(smtp_cmd_parse(l, strlen(l), &cmd, &err), 0);
	memset(out, 'X', sizeof(out));
	ASSERT_EQ(smtp_cmd_format(&cmd, out, sizeof(out)), strlen(l));
	ASSERT_STR_EQ(out, "RCPT TO");
	ASSERT_EQ(smtp_cmd_format(&cmd, NULL, 0), strlen(l));
	ASSERT_EQ(smtp_mailbox_format(&cmd.path, NULL, 0), 16);
	ASSERT_EQ(smtp_mailbox_format(&cmd.path, out, 5), 16);
	ASSERT_STR_EQ(out, "user");
	ASSERT_EQ(smtp_mailbox_format(&cmd.path, out, 1), 16);
	ASSERT_STR_EQ(out, "");
}

TEST_IMPL(smtp_cmd_check_utf8)
{
	struct smtp_cmd cmd;
	struct smtp_reply_err err = {0, NULL, NULL};
	const char *l = "RCPT TO:<j\xc3\xb6rg@example.com>";

	ASSERT_EQ(smtp_cmd_parse(l, strlen(l), &cmd, &err), 0);
	ASSERT_EQ(smtp_cmd_check_utf8(&cmd, 1, &err), 0);
	ASSERT_EQ(smtp_cmd_check_utf8(&cmd, 0, &err), -EINVAL);
	ASSERT_EQ(err.code, 553);
	ASSERT_STR_EQ(err.enhanced, "5.6.7");
	l = "RCPT TO:<jorg@example.com>";
	ASSERT_EQ(smtp_cmd_parse(l, strlen(l), &cmd, &err), 0);
	ASSERT_EQ(smtp_cmd_check_utf8(&cmd, 0, &err), 0);
}

TEST_IMPL(smtp_verb_name)
{
	static const char *const names[] = {"UNKNOWN", "HELO",	   "EHLO", "LHLO", "MAIL",   "RCPT",
					    "DATA",    "RSET",	   "NOOP", "QUIT", "VRFY",   "EXPN",
					    "HELP",    "STARTTLS", "AUTH", "BDAT", "XCLIENT"};
	ASSERT_EQ(ARRAY_SIZE(names), SMTP_VERB__COUNT);
	for (int v = 0; v < SMTP_VERB__COUNT; v++)
		ASSERT_STR_EQ(smtp_verb_name((enum smtp_verb)v), names[v]);
	ASSERT_STR_EQ(smtp_verb_name(SMTP_VERB__COUNT), "UNKNOWN");
	ASSERT_STR_EQ(smtp_verb_name((enum smtp_verb) - 1), "UNKNOWN");
}

/* smtp_path_parse() on its own, as the Lua envelope setters use it. */
struct path_case {
	const char *name;
	const char *in;
	size_t len;
	int is_sender, smtputf8;
	int code; /* 0: parses */
	const char *enh;
	size_t consumed;
	const char *local, *domain;
};

#define PATH_OK(n, in, snd, u8, used, lp, dom)            \
	{                                                 \
		n, S(in), snd, u8, 0, NULL, used, lp, dom \
	}
#define PATH_ERR(n, in, snd, u8, code, enh)                 \
	{                                                   \
		n, S(in), snd, u8, code, enh, 0, NULL, NULL \
	}

static const struct path_case path_cases[] = {
    PATH_OK("bracketed", "<a@b>", 1, 0, 5, "a", "b"),
    PATH_OK("bracketed then params", "<a@b> SIZE=1", 1, 0, 5, "a", "b"),
    PATH_OK("bare", "a@b", 0, 0, 3, "a", "b"),
    PATH_OK("bare then space", "a@b SIZE=1", 1, 0, 3, "a", "b"),
    PATH_OK("null sender", "<>", 1, 0, 2, "", ""),
    PATH_OK("null then rest", "<>x", 1, 0, 2, "", ""),
    PATH_OK("postmaster", "<postMaster>", 0, 0, 12, "postMaster", ""),
    PATH_OK("route", "<@a,@b:c@d>", 0, 0, 11, "c", "d"),
    PATH_OK("quoted", "<\"a>b\"@c>", 0, 0, 9, "\"a>b\"", "c"),
    PATH_OK("literal", "<x@[127.0.0.1]>", 0, 0, 15, "x", "[127.0.0.1]"),
    PATH_OK("utf8 allowed", "<j\xc3\xb6@b>", 0, 1, 7, "j\xc3\xb6", "b"),
    PATH_ERR("empty", "", 1, 0, 501, "5.1.7"),
    PATH_ERR("empty rcpt", "", 0, 0, 501, "5.1.3"),
    PATH_ERR("null recipient", "<>", 0, 0, 501, "5.1.3"),
    PATH_ERR("postmaster sender", "<postmaster>", 1, 0, 501, "5.1.7"),
    PATH_ERR("utf8 not allowed", "<j\xc3\xb6@b>", 0, 0, 553, "5.6.7"),
    PATH_ERR("utf8 domain not allowed", "<j@\xc3\xb6>", 0, 0, 553, "5.6.7"),
    PATH_ERR("utf8 route not allowed", "<@\xc3\xb6:j@b>", 0, 0, 553, "5.6.7"),
    PATH_ERR("utf8 quoted not allowed", "<\"\xc3\xb6\"@b>", 0, 0, 553, "5.6.7"),
    PATH_ERR("bad utf8 not allowed", "<\xc0\xaf@b>", 0, 0, 553, "5.6.7"),
    PATH_ERR("bad utf8 allowed", "<\xc0\xaf@b>", 0, 1, 501, "5.5.2"),
    PATH_ERR("bad utf8 domain", "<a@b\xed\xa0\x80>", 0, 1, 501, "5.5.2"),
    PATH_ERR("bad utf8 quoted", "<\"\xff\"@b>", 0, 1, 501, "5.5.2"),
    PATH_ERR("bad utf8 route", "<@\xe2\x82:a@b>", 0, 1, 501, "5.5.2"),
    PATH_ERR("truncated utf8 at end", "<a\xe2", 0, 1, 501, "5.5.2"),
    PATH_ERR("quoted pair utf8", "<\"\\\xc3\xb6\"@b>", 0, 1, 501, "5.1.3"),
    PATH_ERR("crlf", "<a\r\n@b>", 0, 0, 500, "5.5.2"),
    PATH_ERR("cr in quoted", "<\"a\rb\"@c>", 0, 0, 500, "5.5.2"),
    PATH_ERR("nul after path", "<a@b>\0", 0, 0, 500, "5.5.2"),
    PATH_ERR("bare route", "@a:b@c", 0, 0, 501, "5.1.3"),
    PATH_ERR("bare ends at >", "a@b>", 0, 0, 501, "5.1.3"),
};

TEST_IMPL(smtp_path_parse_table)
{
	for (size_t i = 0; i < ARRAY_SIZE(path_cases); i++) {
		const struct path_case *c = &path_cases[i];
		struct smtp_mailbox mb;
		struct smtp_reply_err err = {0, NULL, NULL};
		size_t used = 99;
		int rc =
		    smtp_path_parse(c->in, c->len, c->is_sender, c->smtputf8, &mb, &used, &err);
		test_case = c->name;
		if (c->code) {
			ASSERT_EQ(rc, -EINVAL);
			ASSERT_EQ(err.code, c->code);
			ASSERT_STR_EQ(err.enhanced, c->enh);
			ASSERT_EQ(used, 0);
			continue;
		}
		if (rc)
			TEST_FAIL("%s: %d %s", c->name, err.code, err.text);
		ASSERT_EQ(used, c->consumed);
		ASSERT_MEM_EQ(mb.local.p, mb.local.len, c->local, strlen(c->local));
		ASSERT_MEM_EQ(mb.domain.p, mb.domain.len, c->domain, strlen(c->domain));
	}
}

struct valid_case {
	const char *name;
	const char *in;
	size_t len;
	int want;
};

static const struct valid_case utf8_cases[] = {
    {"empty", S(""), 1},
    {"ascii", S("hello"), 1},
    {"nul is ascii", S("a\0b"), 1},
    {"2-byte", S("\xc3\xa9"), 1},
    {"3-byte", S("\xe2\x82\xac"), 1},
    {"4-byte", S("\xf0\x9f\x98\x80"), 1},
    {"max U+10FFFF", S("\xf4\x8f\xbf\xbf"), 1},
    {"U+FFFF", S("\xef\xbf\xbf"), 1},
    {"last before surrogates", S("\xed\x9f\xbf"), 1},
    {"first after surrogates", S("\xee\x80\x80"), 1},
    {"overlong c0", S("\xc0\x80"), 0},
    {"overlong c1", S("\xc1\xbf"), 0},
    {"overlong e0", S("\xe0\x9f\xbf"), 0},
    {"overlong f0", S("\xf0\x8f\xbf\xbf"), 0},
    {"surrogate high", S("\xed\xa0\x80"), 0},
    {"surrogate low", S("\xed\xbf\xbf"), 0},
    {"above max", S("\xf4\x90\x80\x80"), 0},
    {"f5", S("\xf5\x80\x80\x80"), 0},
    {"fe", S("\xfe"), 0},
    {"ff", S("\xff"), 0},
    {"lone continuation", S("\x80"), 0},
    {"truncated 2", S("\xc3"), 0},
    {"truncated 3", S("\xe2\x82"), 0},
    {"truncated 4", S("\xf0\x9f\x98"), 0},
    {"bad continuation", S("\xc3\x28"), 0},
    {"bad third", S("\xe2\x82\x28"), 0},
    {"bad fourth", S("\xf0\x9f\x98\x28"), 0},
};

TEST_IMPL(smtp_utf8_valid)
{
	for (size_t i = 0; i < ARRAY_SIZE(utf8_cases); i++) {
		test_case = utf8_cases[i].name;
		ASSERT_EQ(smtp_utf8_valid(utf8_cases[i].in, utf8_cases[i].len), utf8_cases[i].want);
	}
}

static const struct valid_case domain_cases[] = {
    {"simple", S("example.com"), 1},
    {"single label", S("localhost"), 1},
    {"digits", S("123.example"), 1},
    {"hyphen inside", S("a-b.c-d"), 1},
    {"upper", S("EXAMPLE.COM"), 1},
    {"empty", S(""), 0},
    {"trailing dot", S("example.com."), 0},
    {"leading dot", S(".example.com"), 0},
    {"dot only", S("."), 0},
    {"empty label", S("a..b"), 0},
    {"leading hyphen", S("-a.b"), 0},
    {"trailing hyphen", S("a-.b"), 0},
    {"trailing hyphen end", S("a.b-"), 0},
    {"underscore", S("a_b.c"), 0},
    {"space", S("a b"), 0},
    {"colon", S("a:25"), 0},
    {"utf8",
     S("b\xc3\xbc"
       "cher.example"),
     0},
    {"label 63", S("123456789012345678901234567890123456789012345678901234567890123"), 1},
    {"label 64", S("1234567890123456789012345678901234567890123456789012345678901234"), 0},
    {"255 total",
     S("123456789.123456789.123456789.123456789.123456789.123456789.123456789."
       "123456789.123456789.123456789.123456789.123456789.123456789.123456789."
       "123456789.123456789.123456789.123456789.123456789.123456789.123456789."
       "123456789.123456789.123456789.123456789.12345"),
     1},
    {"256 total",
     S("123456789.123456789.123456789.123456789.123456789.123456789.123456789."
       "123456789.123456789.123456789.123456789.123456789.123456789.123456789."
       "123456789.123456789.123456789.123456789.123456789.123456789.123456789."
       "123456789.123456789.123456789.123456789.123456"),
     0},
    {"ipv4 literal", S("[10.0.0.1]"), 1},
    {"ipv4 max", S("[255.255.255.255]"), 1},
    {"ipv4 leading zero", S("[010.0.0.1]"), 1},
    {"ipv4 256", S("[10.0.0.256]"), 0},
    {"ipv4 sign", S("[+1.0.0.1]"), 0},
    {"ipv4 trailing dot", S("[1.2.3.4.]"), 0},
    {"ipv6", S("[IPv6:fe80::1]"), 1},
    {"ipv6 all zero", S("[IPv6:::]"), 1},
    {"ipv6 zone", S("[IPv6:fe80::1%eth0]"), 0},
    {"ipv6 nul", S("[IPv6:::\0]"), 0},
    {"ipv6 bad", S("[IPv6:12345::]"), 0},
    {"no close", S("[1.2.3.4"), 0},
    {"open only", S("["), 0},
    {"brackets only", S("[]"), 0},
};

TEST_IMPL(smtp_domain_valid)
{
	for (size_t i = 0; i < ARRAY_SIZE(domain_cases); i++) {
		test_case = domain_cases[i].name;
		ASSERT_EQ(smtp_domain_valid(domain_cases[i].in, domain_cases[i].len),
			  domain_cases[i].want);
	}
	ASSERT_EQ(smtp_domain_valid_utf8(S("b\xc3\xbc"
					   "cher.example")),
		  1);
	ASSERT_EQ(smtp_domain_valid_utf8(S("\xc3\xbc-\xc3\xbc")), 1);
	ASSERT_EQ(smtp_domain_valid_utf8(S("b\xc3.example")), 0);
	ASSERT_EQ(smtp_domain_valid_utf8(S("b\xc3\xbc.")), 0);
	ASSERT_EQ(smtp_domain_valid_utf8(S("[1.2.3.4]")), 1);
	ASSERT_EQ(smtp_domain_valid_utf8(S("a_b")), 0);
}
