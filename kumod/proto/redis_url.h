/* SPDX-License-Identifier: Apache-2.0 */
/* Redis URLs as KumoMTA's redis.open takes them:
 * redis://[user][:password@]host[:port][/[db][?protocol=resp2]]
 * host may be a name, an IPv4 address or a bracketed IPv6 address; the
 * port defaults to 6379, the database to 0. Other schemes (rediss://,
 * redis+unix://) and other query parameters are refused (kumod's client
 * speaks RESP2 over plain TCP). Pure. Callers: kumod/io/redis.c. */
#ifndef KUMOD_PROTO_REDIS_URL_H
#define KUMOD_PROTO_REDIS_URL_H

struct redis_url {
	char host[256];
	char user[128];
	char password[256];
	int port; /* 1..65535 */
	int db;	  /* 0..1000000 */
};

/* 0 and *out, or -1 (out is then undefined). */
int redis_url_parse(const char *url, struct redis_url *out);

#endif
