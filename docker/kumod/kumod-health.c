// SPDX-License-Identifier: Apache-2.0
/*
 * The image's HEALTHCHECK probe (the runtime image has no shell or curl):
 * GET /api/check-liveness/v1 on KUMO_HEALTH_HTTP (default 127.0.0.1:8000)
 * must answer 200; when nothing listens there (a policy without an HTTP
 * listener, such as the sink), the SMTP listener on KUMO_HEALTH_SMTP
 * (default 127.0.0.1:25) must greet with 220. Exit 0 healthy, 1 not.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* Connects to IPv4 "a.b.c.d:port"; -1 with errno set on failure. */
static int dial(const char *hostport)
{
	char host[64];
	const char *colon = strrchr(hostport, ':');
	if (!colon || (size_t)(colon - hostport) >= sizeof(host)) {
		errno = EINVAL;
		return -1;
	}
	memcpy(host, hostport, (size_t)(colon - hostport));
	host[colon - hostport] = 0;
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons((uint16_t)atoi(colon + 1))};
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		errno = EINVAL;
		return -1;
	}
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	struct timeval tv = {.tv_sec = 4};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

/* Reads the start of the reply and checks it begins with PREFIX. */
static int reply_starts(int fd, const char *prefix)
{
	char buf[128];
	size_t got = 0, want = strlen(prefix);
	while (got < want) {
		ssize_t n = read(fd, buf + got, sizeof(buf) - 1 - got);
		if (n <= 0)
			return 0;
		got += (size_t)n;
	}
	return memcmp(buf, prefix, want) == 0;
}

static const char *env_or(const char *name, const char *def)
{
	const char *v = getenv(name);
	return v && *v ? v : def;
}

int main(void)
{
	const char *http = env_or("KUMO_HEALTH_HTTP", "127.0.0.1:8000");
	const char *smtp = env_or("KUMO_HEALTH_SMTP", "127.0.0.1:25");
	int fd = dial(http);
	if (fd >= 0) {
		static const char req[] =
		    "GET /api/check-liveness/v1 HTTP/1.1\r\nHost: localhost\r\n"
		    "Connection: close\r\n\r\n";
		int ok = write(fd, req, sizeof(req) - 1) == (ssize_t)(sizeof(req) - 1) &&
			 (reply_starts(fd, "HTTP/1.1 200") || reply_starts(fd, "HTTP/1.0 200"));
		close(fd);
		if (!ok)
			fprintf(stderr, "kumod-health: %s liveness is not 200\n", http);
		return ok ? 0 : 1;
	}
	if (errno != ECONNREFUSED) {
		fprintf(stderr, "kumod-health: %s: %s\n", http, strerror(errno));
		return 1;
	}
	fd = dial(smtp);
	if (fd < 0) {
		fprintf(stderr, "kumod-health: neither %s nor %s answers: %s\n", http, smtp,
			strerror(errno));
		return 1;
	}
	int ok = reply_starts(fd, "220");
	if (write(fd, "QUIT\r\n", 6) < 0) { /* best effort */
	}
	close(fd);
	if (!ok)
		fprintf(stderr, "kumod-health: %s did not greet with 220\n", smtp);
	return ok ? 0 : 1;
}
