/* SPDX-License-Identifier: Apache-2.0 */
/* CHECK(c): a harness invariant; a failure prints it and aborts, which
 * libFuzzer (and the replay driver under ASan) reports as a finding. */
#ifndef KUMOD_FUZZ_CHECK_H
#define KUMOD_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(c)                                                                           \
	do {                                                                               \
		if (!(c)) {                                                                \
			fprintf(stderr, "invariant failed: %s (line %d)\n", #c, __LINE__); \
			abort();                                                           \
		}                                                                          \
	} while (0)

#endif
