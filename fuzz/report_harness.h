/* SPDX-License-Identifier: Apache-2.0 */
/* The one harness of the report parsers' targets (`arf`, `dsn`): each
 * fuzz_<name>.c passes its parser to report_harness_run(). Input: the
 * whole message. Invariants: the result is 0 (not a report, nothing
 * returned), 1 (an object that serialises to JSON) or -1 with a reason;
 * parsing the same input twice gives the same JSON (no hidden state); a
 * report's JSON never exceeds a bounded multiple of the input. */
#ifndef KUMOD_FUZZ_REPORT_HARNESS_H
#define KUMOD_FUZZ_REPORT_HARNESS_H

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"

static inline int report_harness_run(int (*parse)(const char *, size_t, json_t **, char *, size_t),
				     const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	json_t *a = NULL, *b = NULL;
	char err[256] = "", err2[256] = "";
	int rc = parse(in, size, &a, err, sizeof(err));
	CHECK(rc == 0 || rc == 1 || rc == -1);
	CHECK((rc == 1) == (a != NULL));
	if (rc == -1)
		CHECK(err[0] != '\0');
	int rc2 = parse(in, size, &b, err2, sizeof(err2));
	CHECK(rc2 == rc);
	if (rc == 1) {
		char *ja = json_dumps(a, JSON_COMPACT), *jb = json_dumps(b, JSON_COMPACT);
		CHECK(ja && jb && strcmp(ja, jb) == 0);
		/* every byte of output comes from the input, escaped (\\uXXXX at most 6x,
		 * U+FFFD for a lossy byte) plus fixed keys per field */
		CHECK(strlen(ja) <= 8 * size + 4096 + 400 * size / 4);
		free(ja);
		free(jb);
	} else {
		CHECK(strcmp(err, err2) == 0);
	}
	json_decref(a);
	json_decref(b);
	return 0;
}

#endif
