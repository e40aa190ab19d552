/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `dsn`: kumod/proto/dsn.c (RFC 3464 delivery status notifications) over
 * kumod/proto/report.c. Input and invariants: report_harness.h, shared with `arf`. */
#include "proto/dsn.h"
#include "report_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return report_harness_run(dsn_parse, data, size);
}
