/* SPDX-License-Identifier: Apache-2.0 */
/* Unit-test runner API: TEST_IMPL bodies register themselves; the runner
 * (runner.c) forks one process per test. Asserts print both sides. */
#ifndef KUMOD_TEST_H
#define KUMOD_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void test__register(const char *name, void (*fn)(void));

#define TEST_IMPL(name)                                                     \
	static void test_##name(void);                                      \
	__attribute__((constructor)) static void test_register_##name(void) \
	{                                                                   \
		test__register(#name, test_##name);                         \
	}                                                                   \
	static void test_##name(void)

#define TEST_FAIL(...)                                          \
	do {                                                    \
		fprintf(stderr, "%s:%d: ", __FILE__, __LINE__); \
		fprintf(stderr, __VA_ARGS__);                   \
		fputc('\n', stderr);                            \
		abort();                                        \
	} while (0)

#define ASSERT(expr)                                              \
	do {                                                      \
		if (!(expr))                                      \
			TEST_FAIL("assertion failed: %s", #expr); \
	} while (0)

#define ASSERT_INT_OP(a, op, b)                                                 \
	do {                                                                    \
		intmax_t a_ = (intmax_t)(a), b_ = (intmax_t)(b);                \
		if (!(a_ op b_))                                                \
			TEST_FAIL("%s %s %s: %jd vs %jd", #a, #op, #b, a_, b_); \
	} while (0)

#define ASSERT_EQ(a, b) ASSERT_INT_OP(a, ==, b)
#define ASSERT_NE(a, b) ASSERT_INT_OP(a, !=, b)
#define ASSERT_GT(a, b) ASSERT_INT_OP(a, >, b)
#define ASSERT_GE(a, b) ASSERT_INT_OP(a, >=, b)
#define ASSERT_LT(a, b) ASSERT_INT_OP(a, <, b)
#define ASSERT_LE(a, b) ASSERT_INT_OP(a, <=, b)

#define ASSERT_STR_EQ(a, b)                                                                 \
	do {                                                                                \
		const char *a_ = (a), *b_ = (b);                                            \
		if (!a_ || !b_ || strcmp(a_, b_) != 0)                                      \
			TEST_FAIL("%s == %s: \"%s\" vs \"%s\"", #a, #b, a_ ? a_ : "(null)", \
				  b_ ? b_ : "(null)");                                      \
	} while (0)

#define ASSERT_MEM_EQ(a, alen, b, blen)                                                           \
	do {                                                                                      \
		size_t al_ = (alen), bl_ = (blen);                                                \
		if (al_ != bl_ || memcmp((a), (b), al_) != 0)                                     \
			TEST_FAIL("%s == %s: \"%.*s\" (%zu) vs \"%.*s\" (%zu)", #a, #b, (int)al_, \
				  (const char *)(a), al_, (int)bl_, (const char *)(b), bl_);      \
	} while (0)

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
