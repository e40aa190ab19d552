/* SPDX-License-Identifier: Apache-2.0 */
/* kumo-toml: checks TOML files with kumod's parser (kumod/proto/toml.c).
 *   kumo-toml FILE...            exit 0 when every file parses; errors as FILE:LINE:COL: msg
 *   kumo-toml --tagged FILE      print the document as toml-test tagged JSON
 *                                ({"type": "integer", "value": "1"} leaves), for the
 *                                differential test against Python's tomllib
 *   kumo-toml --encode FILE      parse, then print kumod's TOML encoding
 *   kumo-toml --bench N FILE     parse FILE N times, print the mean CPU milliseconds
 * "-" reads standard input. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/buf.h"
#include "base/fsutil.h"
#include "proto/toml.h"

static void json_str(const char *s, size_t n)
{
	putchar('"');
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20 || c == 0x7F)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static void tagged(const struct toml_value *v)
{
	static const char *const dt[] = {
	    [TOML_DATETIME] = "datetime",
	    [TOML_DATETIME_LOCAL] = "datetime-local",
	    [TOML_DATE_LOCAL] = "date-local",
	    [TOML_TIME_LOCAL] = "time-local",
	};
	switch (v->type) {
	case TOML_TABLE:
		putchar('{');
		for (size_t i = 0; i < v->u.tab.n; i++) {
			if (i)
				putchar(',');
			json_str(v->u.tab.kv[i].key, v->u.tab.kv[i].keylen);
			putchar(':');
			tagged(v->u.tab.kv[i].val);
		}
		putchar('}');
		return;
	case TOML_ARRAY:
		putchar('[');
		for (size_t i = 0; i < v->u.arr.n; i++) {
			if (i)
				putchar(',');
			tagged(v->u.arr.items[i]);
		}
		putchar(']');
		return;
	case TOML_STRING:
		printf("{\"type\":\"string\",\"value\":");
		json_str(v->u.str.ptr, v->u.str.len);
		putchar('}');
		return;
	case TOML_INTEGER:
		printf("{\"type\":\"integer\",\"value\":\"%lld\"}", (long long)v->u.i);
		return;
	case TOML_FLOAT:
		if (isnan(v->u.f))
			printf("{\"type\":\"float\",\"value\":\"nan\"}");
		else if (isinf(v->u.f))
			printf("{\"type\":\"float\",\"value\":\"%sinf\"}", v->u.f < 0 ? "-" : "+");
		else
			printf("{\"type\":\"float\",\"value\":\"%.17g\"}", v->u.f);
		return;
	case TOML_BOOL:
		printf("{\"type\":\"bool\",\"value\":\"%s\"}", v->u.b ? "true" : "false");
		return;
	default:
		printf("{\"type\":\"%s\",\"value\":", dt[v->type]);
		json_str(v->u.str.ptr, v->u.str.len);
		putchar('}');
	}
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
	const char *mode = "check";
	long reps = 1;
	int i = 1;
	if (i < argc && (!strcmp(argv[i], "--tagged") || !strcmp(argv[i], "--encode")))
		mode = argv[i++] + 2;
	else if (i + 1 < argc && !strcmp(argv[i], "--bench")) {
		mode = "bench";
		reps = strtol(argv[i + 1], NULL, 10);
		i += 2;
		if (reps < 1)
			reps = 1;
	}
	if (i >= argc || (argv[i][0] == '-' && argv[i][1])) {
		fprintf(stderr, "usage: kumo-toml [--tagged|--encode|--bench N] FILE...\n");
		return 2;
	}
	int rc = 0;
	for (; i < argc; i++) {
		struct buf b;
		buf_init(&b);
		int rerr = fs_read_file(argv[i], &b);
		if (rerr != 0) {
			fprintf(stderr, "kumo-toml: %s: %s\n", argv[i], strerror(-rerr));
			buf_free(&b);
			rc = 1;
			continue;
		}
		struct toml_error err;
		double t0 = now_ms();
		struct toml_value *root = NULL;
		for (long r = 0; r < reps; r++) {
			toml_free(root);
			root = toml_parse(b.data ? b.data : "", b.len, &err);
		}
		double ms = (now_ms() - t0) / (double)reps;
		if (!root) {
			fprintf(stderr, "%s:%d:%d: %s\n", argv[i], err.line, err.column, err.msg);
			rc = 1;
		} else if (!strcmp(mode, "tagged")) {
			tagged(root);
			putchar('\n');
		} else if (!strcmp(mode, "encode")) {
			struct buf out;
			char e[200];
			buf_init(&out);
			if (toml_encode(root, 0, &out, e, sizeof(e)) != 0) {
				fprintf(stderr, "%s: encode: %s\n", argv[i], e);
				rc = 1;
			} else {
				fwrite(out.data, 1, out.len, stdout);
			}
			buf_free(&out);
		} else if (!strcmp(mode, "bench")) {
			printf("%s: %zu bytes, %.3f ms CPU per parse (%ld runs)\n", argv[i], b.len,
			       ms, reps);
		}
		toml_free(root);
		buf_free(&b);
	}
	return rc;
}
