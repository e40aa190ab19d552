/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `redis_url`: redis_url_parse() behind
 * kumo.configure_redis_throttles{ node = ... }. Invariants: a result has a
 * non-empty host without blanks, '@' or brackets, a port 1..65535 and a db
 * 0..1000000, every field NUL-terminated within its buffer; a canonical
 * rewrite ("redis://user:password@host:port/db", IPv6 hosts bracketed)
 * parses back to the same fields when the credentials hold no ':' in the
 * user, no '/', '?' or '@' beyond what the parser takes as the last '@'.
 * Input: a NUL-free text of at most 600 bytes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/redis_url.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 600 || memchr(data, 0, size))
		return 0;
	char *text = strndup((const char *)data, size);
	struct redis_url u;
	int rc = redis_url_parse(text, &u);
	CHECK(rc == 0 || rc == -1);
	if (rc == 0) {
		CHECK(memchr(u.host, 0, sizeof(u.host)) && memchr(u.user, 0, sizeof(u.user)) &&
		      memchr(u.password, 0, sizeof(u.password)));
		CHECK(u.host[0] != '\0');
		CHECK(!strpbrk(u.host, " \t\r\n@[]/?"));
		CHECK(u.port >= 1 && u.port <= 65535 && u.db >= 0 && u.db <= 1000000);
		if (!strpbrk(u.user, ":/?@") && !strpbrk(u.password, "/?")) {
			char canon[800], hostpart[300];
			if (strchr(u.host, ':'))
				snprintf(hostpart, sizeof(hostpart), "[%s]", u.host);
			else
				snprintf(hostpart, sizeof(hostpart), "%s", u.host);
			snprintf(canon, sizeof(canon), "redis://%s%s%s%s%s:%d/%d", u.user,
				 u.password[0] ? ":" : "", u.password,
				 u.user[0] || u.password[0] ? "@" : "", hostpart, u.port, u.db);
			struct redis_url b;
			CHECK(redis_url_parse(canon, &b) == 0);
			CHECK(strcmp(b.host, u.host) == 0 && strcmp(b.user, u.user) == 0 &&
			      strcmp(b.password, u.password) == 0 && b.port == u.port &&
			      b.db == u.db);
		}
	}
	free(text);
	return 0;
}
