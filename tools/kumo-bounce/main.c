/* SPDX-License-Identifier: Apache-2.0 */
/* kumo-bounce: classify SMTP responses with bounce rules files, as kumod's
 * kumo.configure_bounce_classifier does, to try rules before deploying
 * them; --bench measures the cost per classification (uncached and
 * cached). Input: one response per line, "<code> [x.y.z] text". */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/fsutil.h"
#include "proto/bounce.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: kumo-bounce [--bench ROUNDS] RULES.toml|RULES.json... < responses\n"
		   "Prints <label><TAB><response> for each input line (\"550 5.1.1 text\").\n"
		   "--bench ROUNDS: classify every line ROUNDS times, uncached and cached,\n"
		   "and print the mean cost per classification.\n");
}

/* "550 5.1.1 text" into code, enhanced ("" when none) and text. */
static void split_response(char *line, int *code, const char **enhanced, const char **text)
{
	*code = atoi(line);
	char *p = line;
	while (*p >= '0' && *p <= '9')
		p++;
	while (*p == ' ' || *p == '-')
		p++;
	*enhanced = "";
	if ((p[0] == '2' || p[0] == '4' || p[0] == '5') && p[1] == '.') {
		char *sp = strchr(p, ' ');
		*enhanced = p;
		if (sp) {
			*sp = 0;
			p = sp + 1;
		} else {
			p += strlen(p);
		}
	}
	*text = p;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"bench", required_argument, NULL, 'b'}, {"help", no_argument, NULL, 'h'}, {0}};
	long rounds = 0;
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == 'b') {
			rounds = strtol(optarg, NULL, 10);
			if (rounds < 1) {
				fprintf(stderr, "kumo-bounce: --bench needs a positive count\n");
				return 2;
			}
		} else if (c == 'h') {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	struct bounce_classifier *bc = bounce_classifier_new(0, 0);
	for (int i = optind; i < argc; i++) {
		struct buf b;
		buf_init(&b);
		int rc = fs_read_file(argv[i], &b);
		char err[600];
		if (rc < 0) {
			fprintf(stderr, "kumo-bounce: %s: %s\n", argv[i], strerror(-rc));
			return 1;
		}
		if (bounce_classifier_load(bc, argv[i], b.data ? b.data : "", b.len, err,
					   sizeof(err)) != 0) {
			fprintf(stderr, "kumo-bounce: %s\n", err);
			return 1;
		}
		buf_free(&b);
	}
	char **lines = NULL;
	size_t n = 0;
	char line[2048];
	while (fgets(line, sizeof(line), stdin)) {
		line[strcspn(line, "\r\n")] = 0;
		if (!line[0])
			continue;
		lines = realloc(lines, (n + 1) * sizeof(*lines));
		lines[n++] = strdup(line);
	}
	if (!rounds) {
		for (size_t i = 0; i < n; i++) {
			char copy[2048];
			snprintf(copy, sizeof(copy), "%s", lines[i]);
			int code;
			const char *enh, *text;
			split_response(copy, &code, &enh, &text);
			printf("%s\t%s\n", bounce_classify(bc, code, enh, text), lines[i]);
		}
	} else if (n) {
		/* uncached: a fresh classifier per round would time compilation,
		 * so every line is made unique with a round counter instead */
		uint64_t t0 = clock_mono_ns();
		char copy[2200];
		for (long r = 0; r < rounds; r++)
			for (size_t i = 0; i < n; i++) {
				int code;
				const char *enh, *text;
				snprintf(copy, sizeof(copy), "%s #%ld", lines[i], r);
				split_response(copy, &code, &enh, &text);
				bounce_classify(bc, code, enh, text);
			}
		uint64_t t1 = clock_mono_ns();
		for (long r = 0; r < rounds; r++)
			for (size_t i = 0; i < n; i++) {
				int code;
				const char *enh, *text;
				snprintf(copy, sizeof(copy), "%s", lines[i]);
				split_response(copy, &code, &enh, &text);
				bounce_classify(bc, code, enh, text);
			}
		uint64_t t2 = clock_mono_ns();
		double total = (double)rounds * (double)n;
		printf("rules=%zu responses=%zu rounds=%ld uncached_us=%.3f cached_us=%.3f\n",
		       bounce_classifier_rules(bc), n, rounds, (double)(t1 - t0) / total / 1000.0,
		       (double)(t2 - t1) / total / 1000.0);
	}
	for (size_t i = 0; i < n; i++)
		free(lines[i]);
	free(lines);
	bounce_classifier_free(bc);
	return 0;
}
