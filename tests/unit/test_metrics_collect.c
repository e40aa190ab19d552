/* SPDX-License-Identifier: Apache-2.0 */
/* Every family kumod serves is declared: after a scrape with every
 * collector, no family lacks its meaning (docs/metrics.md is generated
 * from the declarations, so an undeclared family would be undocumented). */
#include "base/metrics.h"
#include "ctl/metrics_collect.h"
#include "test.h"

TEST_IMPL(metrics_collect_every_family_declared)
{
	metrics_collect_register();
	/* the http_listener counters are updated from kumod/ctl/http*.c */
	metrics_counter_add("total_messages_received", "service", "http_listener", 1);
	metrics_counter_add("total_connection_count", "service", "http_listener", 1);
	metrics_counter_add("total_connections_denied", "service", "http_listener", 1);
	struct buf b;
	buf_init(&b);
	metrics_render_text(&b);
	const char *missing = metrics_first_undeclared();
	if (missing)
		TEST_FAIL("metric %s is emitted but not declared (metrics_declare)", missing);
	ASSERT(strstr(buf_cstr(&b), "suspension_count{kind=\"scheduled\"} 0") != NULL);
	buf_free(&b);
	metrics_reset();
}
