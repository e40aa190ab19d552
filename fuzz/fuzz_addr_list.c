/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `addr_list`: addr_list_parse() (msg:from_header(), msg:to_header(),
 * msg:get_address_header()). Input: any bytes as an unfolded header value. Invariants:
 *  - parsing returns 0, or -1 with a non-empty reason and an empty list;
 *  - an accepted list has at most 1000 entries; each has a local part and a domain, or
 *    neither (an empty group, which has a group name); no more groups than entries;
 *  - parsing is deterministic (a second parse gives the same entries). */
#include <stdint.h>
#include <string.h>

#include "proto/addr_list.h"
#include "fuzz_check.h"

static int same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct addr_list l, m;
	char err[200] = "";
	if (addr_list_parse((const char *)data, size, &l, err, sizeof(err)) != 0) {
		CHECK(err[0] != 0);
		CHECK(l.n == 0 && l.v == NULL);
		return 0;
	}
	CHECK(l.n <= 1000);
	CHECK((size_t)l.groups <= l.n);
	for (size_t i = 0; i < l.n; i++) {
		CHECK(!l.v[i].local == !l.v[i].domain);
		CHECK(l.v[i].local || l.v[i].group);
	}
	CHECK(addr_list_parse((const char *)data, size, &m, err, sizeof(err)) == 0);
	CHECK(m.n == l.n);
	for (size_t i = 0; i < l.n; i++)
		CHECK(same_str(l.v[i].name, m.v[i].name) && same_str(l.v[i].local, m.v[i].local) &&
		      same_str(l.v[i].domain, m.v[i].domain) &&
		      same_str(l.v[i].group, m.v[i].group));
	addr_list_free(&l);
	addr_list_free(&m);
	return 0;
}
