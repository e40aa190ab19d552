/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `mime8`: the 8-bit to 7-bit MIME converter of the outbound client.
 * Invariants: a converted message holds no 8-bit octet and at least one part was re-encoded;
 * a 7-bit input is copied unchanged; a refusal always says why. Input: the message. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "base/buf.h"
#include "proto/mime8.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	struct buf out;
	struct mime8_result res;
	buf_init(&out);
	int rc = mime8_to_7bit(in, size, &out, &res);
	if (rc == 0) {
		CHECK(!mime8_has_8bit(out.data, out.len));
		if (mime8_has_8bit(in, size))
			CHECK(res.converted > 0);
		else
			CHECK(res.converted == 0 && out.len == size &&
			      (!size || !memcmp(out.data, in, size)));
	} else {
		CHECK(rc == -EINVAL && res.why && *res.why);
		CHECK(mime8_has_8bit(in, size));
	}
	buf_free(&out);
	return 0;
}
