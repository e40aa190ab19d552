/* SPDX-License-Identifier: Apache-2.0 */
/* Redis URLs of kumo.configure_redis_throttles (proto/redis_url). */
#include "proto/redis_url.h"
#include "test.h"

TEST_IMPL(redis_url_table)
{
	static const struct {
		const char *in;
		int ok;
		const char *host, *user, *password;
		int port, db;
	} cases[] = {
	    {"redis://127.0.0.1/", 1, "127.0.0.1", "", "", 6379, 0},
	    {"redis://127.0.0.1", 1, "127.0.0.1", "", "", 6379, 0},
	    {"redis://redis.example:7000/", 1, "redis.example", "", "", 7000, 0},
	    {"redis://h:1/3", 1, "h", "", "", 1, 3},
	    {"redis://h/12?protocol=resp2", 1, "h", "", "", 6379, 12},
	    {"redis://h/?protocol=2", 1, "h", "", "", 6379, 0},
	    {"redis://user:pw@h:6380/", 1, "h", "user", "pw", 6380, 0},
	    {"redis://:pw@h/", 1, "h", "", "pw", 6379, 0},
	    {"redis://user@h/", 1, "h", "user", "", 6379, 0},
	    {"redis://u:p@ss@h/", 1, "h", "u", "p@ss", 6379, 0},
	    {"redis://[::1]:6390/", 1, "::1", "", "", 6390, 0},
	    {"redis://[::1]/", 1, "::1", "", "", 6379, 0},
	    {"rediss://h/", 0, NULL, NULL, NULL, 0, 0},
	    {"redis+unix:///tmp/r.sock", 0, NULL, NULL, NULL, 0, 0},
	    {"http://h/", 0, NULL, NULL, NULL, 0, 0},
	    {"redis://", 0, NULL, NULL, NULL, 0, 0},
	    {"redis:///", 0, NULL, NULL, NULL, 0, 0},
	    {"redis://h:0/", 0, NULL, NULL, NULL, 0, 0},
	    {"redis://h:65536/", 0, NULL, NULL, NULL, 0, 0},
	    {"redis://h:/", 0, NULL, NULL, NULL, 0, 0},
	    {"redis://h:12x/", 0, NULL, NULL, NULL, 0, 0},
	    {"redis://h/x", 0, NULL, NULL, NULL, 0, 0},
	    {"redis://h/1?protocol=resp3", 0, NULL, NULL, NULL, 0, 0},
	    {"redis://h?protocol=resp2", 0, NULL, NULL, NULL, 0, 0},
	    {"redis://[h]/", 0, NULL, NULL, NULL, 0, 0},
	    {"redis://[::1/", 0, NULL, NULL, NULL, 0, 0},
	    {"redis://a b/", 0, NULL, NULL, NULL, 0, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct redis_url u;
		int rc = redis_url_parse(cases[i].in, &u);
		if ((rc == 0) != cases[i].ok)
			TEST_FAIL("%s: rc %d", cases[i].in, rc);
		if (!cases[i].ok)
			continue;
		ASSERT_STR_EQ(u.host, cases[i].host);
		ASSERT_STR_EQ(u.user, cases[i].user);
		ASSERT_STR_EQ(u.password, cases[i].password);
		ASSERT_EQ(u.port, cases[i].port);
		ASSERT_EQ(u.db, cases[i].db);
	}
}
