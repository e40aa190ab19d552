// SPDX-License-Identifier: Apache-2.0
/* kcli logs: prints the log records of local log segments (closed and open),
 * oldest first, at any moment. The open segment's zstd frame is unfinished
 * (kumod flushes whole blocks about once a second), which zstdcat reports
 * as an error; here the records decoded so far are printed and the end of
 * an open (still writable) segment is not an error. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zstd.h>
#include "base/xalloc.h"
#include "kcli.h"

static const unsigned char ZSTD_MAGIC_LE[4] = {0x28, 0xb5, 0x2f, 0xfd};

/* Decodes one segment to stdout; 0, or -1 after naming the error. */
static int cat_zstd(FILE *in, const char *path, int open_segment)
{
	ZSTD_DStream *ds = ZSTD_createDStream();
	size_t inlen = ZSTD_DStreamInSize(), outlen = ZSTD_DStreamOutSize(), left = 0, n;
	char *ibuf = xmalloc(inlen), *obuf = xmalloc(outlen);
	int rc = 0;
	while ((n = fread(ibuf, 1, inlen, in)) > 0) {
		ZSTD_inBuffer ib = {ibuf, n, 0};
		while (ib.pos < ib.size) {
			ZSTD_outBuffer ob = {obuf, outlen, 0};
			left = ZSTD_decompressStream(ds, &ob, &ib);
			if (ZSTD_isError(left)) {
				fprintf(stderr, "kcli logs: %s: %s\n", path,
					ZSTD_getErrorName(left));
				rc = -1;
				goto out;
			}
			fwrite(obuf, 1, ob.pos, stdout);
		}
	}
	if (left != 0 && !open_segment) {
		fprintf(stderr, "kcli logs: %s: closed segment ends inside its zstd frame\n", path);
		rc = -1;
	}
out:
	free(ibuf);
	free(obuf);
	ZSTD_freeDStream(ds);
	return rc;
}

static int cat_segment(const char *path)
{
	struct stat st;
	FILE *in = fopen(path, "rb");
	if (!in || fstat(fileno(in), &st) != 0) {
		fprintf(stderr, "kcli logs: %s: %s\n", path, strerror(errno));
		if (in)
			fclose(in);
		return -1;
	}
	/* kumod marks a closed segment done by clearing its write bits */
	int open_segment = (st.st_mode & 0222) != 0;
	unsigned char magic[4];
	size_t n = fread(magic, 1, sizeof(magic), in);
	rewind(in);
	int rc = 0;
	if (n == sizeof(magic) && memcmp(magic, ZSTD_MAGIC_LE, 4) == 0) {
		rc = cat_zstd(in, path, open_segment);
	} else { /* plain-text segment (compression level 0) */
		char buf[65536];
		while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
			fwrite(buf, 1, n, stdout);
	}
	fclose(in);
	return rc;
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A directory's segments in name (= time) order, dot files skipped. */
static int cat_dir(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d) {
		fprintf(stderr, "kcli logs: %s: %s\n", dir, strerror(errno));
		return -1;
	}
	size_t n = 0, cap = 16;
	char **names = xmalloc(cap * sizeof(*names));
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		if (n == cap)
			names = xrealloc(names, (cap *= 2) * sizeof(*names));
		names[n++] = xmalloc(strlen(dir) + strlen(e->d_name) + 2);
		sprintf(names[n - 1], "%s/%s", dir, e->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(*names), cmp_name);
	int rc = 0;
	for (size_t i = 0; i < n; i++) {
		rc |= cat_segment(names[i]);
		free(names[i]);
	}
	free(names);
	return rc;
}

int kcli_logs(int argc, char **argv)
{
	int rc = 0;
	if (argc == 0)
		return cat_dir(KCLI_LOGS_DEFAULT) ? 1 : 0;
	for (int i = 0; i < argc; i++) {
		struct stat st;
		if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode))
			rc |= cat_dir(argv[i]);
		else
			rc |= cat_segment(argv[i]);
	}
	fflush(stdout);
	return rc ? 1 : 0;
}
