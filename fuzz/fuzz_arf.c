/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `arf`: kumod/proto/arf.c (RFC 5965 feedback reports) over kumod/proto/report.c.
 * Input and invariants: report_harness.h, shared with `dsn`. */
#include "proto/arf.h"
#include "report_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return report_harness_run(arf_parse, data, size);
}
