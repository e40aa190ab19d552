/* SPDX-License-Identifier: Apache-2.0 */
/* Unit-test runner: one forked process per test, optional name filter.
 * Usage: unit-tests [-l] [NAME_SUBSTRING...] */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

struct test_entry {
	const char *name;
	void (*fn)(void);
};

static struct test_entry *tests;
static size_t ntests, captests;

void test__register(const char *name, void (*fn)(void))
{
	if (ntests == captests) {
		captests = captests ? captests * 2 : 64;
		tests = realloc(tests, captests * sizeof(*tests));
		if (!tests)
			abort();
	}
	tests[ntests++] = (struct test_entry){name, fn};
}

static int cmp_test(const void *a, const void *b)
{
	return strcmp(((const struct test_entry *)a)->name, ((const struct test_entry *)b)->name);
}

static int selected(const char *name, int argc, char **argv)
{
	if (argc == 0)
		return 1;
	for (int i = 0; i < argc; i++)
		if (strstr(name, argv[i]))
			return 1;
	return 0;
}

static int run_one(const struct test_entry *t)
{
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		perror("fork");
		return 1;
	}
	if (pid == 0) {
		alarm(30);
		t->fn();
		fflush(NULL);
		/* exit(), not _exit(): under ASan, LeakSanitizer runs at exit and a
		 * leak fails the test */
		exit(0);
	}
	/* The child's alarm cannot end a hang in a library's exit code that
	 * blocks or catches SIGALRM (seen once: LTTng-UST's destructor waiting on
	 * another process's session daemon); the parent's SIGKILL can. */
	int status;
	long waited_ms = 0, limit_ms = getenv("KUMOD_SPOOL_BENCH") ? 900000 : 120000;
	pid_t w;
	while ((w = waitpid(pid, &status, WNOHANG)) == 0 || (w < 0 && errno == EINTR)) {
		if (waited_ms >= limit_ms) {
			fprintf(stderr, "  %s: no exit within %ld s: killed\n", t->name,
				limit_ms / 1000);
			kill(pid, SIGKILL);
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			return 1;
		}
		struct timespec ts = {0, 2000000};
		nanosleep(&ts, NULL);
		waited_ms += 2;
	}
	if (w < 0) {
		perror("waitpid");
		return 1;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFSIGNALED(status))
		fprintf(stderr, "  %s: killed by signal %d\n", t->name, WTERMSIG(status));
	else
		fprintf(stderr, "  %s: exit status %d\n", t->name, WEXITSTATUS(status));
	return 1;
}

int main(int argc, char **argv)
{
	int list = argc > 1 && strcmp(argv[1], "-l") == 0;
	if (list) {
		argc--;
		argv++;
	}
	qsort(tests, ntests, sizeof(*tests), cmp_test);
	size_t run = 0, failed = 0;
	for (size_t i = 0; i < ntests; i++) {
		if (!selected(tests[i].name, argc - 1, argv + 1))
			continue;
		if (list) {
			puts(tests[i].name);
			continue;
		}
		run++;
		int rc = run_one(&tests[i]);
		printf("%s %zu - %s\n", rc ? "not ok" : "ok", run, tests[i].name);
		failed += rc != 0;
	}
	if (!list)
		printf("# %zu tests, %zu failed\n", run, failed);
	return failed ? 1 : 0;
}
