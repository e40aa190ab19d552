/* SPDX-License-Identifier: Apache-2.0 */
/* Scheduled-queue pure helpers: retry schedule and queue names. */
#include "queue/queue.h"
#include "test.h"

TEST_IMPL(queue_retry_delay_doubles_and_caps)
{
	struct queue_config c = {.retry_interval_ms = 20 * 60 * 1000};
	/* KumoMTA: 20m, 40m, 80m, ... */
	ASSERT_INT_OP(queue_retry_delay_ms(&c, 0), ==, 20 * 60 * 1000);
	ASSERT_INT_OP(queue_retry_delay_ms(&c, 1), ==, 40 * 60 * 1000);
	ASSERT_INT_OP(queue_retry_delay_ms(&c, 2), ==, 80 * 60 * 1000);
	c.max_retry_interval_ms = 60 * 60 * 1000;
	ASSERT_INT_OP(queue_retry_delay_ms(&c, 1), ==, 40 * 60 * 1000);
	ASSERT_INT_OP(queue_retry_delay_ms(&c, 2), ==, 60 * 60 * 1000);
	ASSERT_INT_OP(queue_retry_delay_ms(&c, 30), ==, 60 * 60 * 1000);
	/* no overflow for absurd attempt counts */
	c.max_retry_interval_ms = 0;
	ASSERT(queue_retry_delay_ms(&c, 1000) > 0);
	/* unset interval: the 20 minute default */
	struct queue_config d = {0};
	ASSERT_INT_OP(queue_retry_delay_ms(&d, 0), ==, 20 * 60 * 1000);
}

TEST_IMPL(queue_make_name_forms)
{
	char n[256];
	queue_make_name(n, sizeof(n), NULL, NULL, "example.com", NULL);
	ASSERT_STR_EQ(n, "example.com");
	queue_make_name(n, sizeof(n), "", "acme", "example.com", "");
	ASSERT_STR_EQ(n, "acme@example.com");
	queue_make_name(n, sizeof(n), "spring", "acme", "example.com", NULL);
	ASSERT_STR_EQ(n, "spring:acme@example.com");
	queue_make_name(n, sizeof(n), "spring", NULL, "example.com", NULL);
	ASSERT_STR_EQ(n, "spring:@example.com");
	queue_make_name(n, sizeof(n), NULL, "acme", "example.com", "relay.example.net");
	ASSERT_STR_EQ(n, "acme@example.com!relay.example.net");
}
