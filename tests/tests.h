/* SPDX-License-Identifier: MIT */
#pragma once

/* Minimal test support: assertions that say where and what, and a runner that counts. */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ASSERT(expr)                                                                    \
        do {                                                                            \
                if (!(expr)) {                                                          \
                        fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__,      \
                                __LINE__, #expr);                                       \
                        abort();                                                        \
                }                                                                       \
        } while (0)

#define ASSERT_EQ(a, b)                                                                 \
        do {                                                                            \
                long long _a = (long long) (a), _b = (long long) (b);                   \
                if (_a != _b) {                                                         \
                        fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n",       \
                                __FILE__, __LINE__, #a, #b, _a, _b);                    \
                        abort();                                                        \
                }                                                                       \
        } while (0)

#define ASSERT_STREQ(a, b)                                                              \
        do {                                                                            \
                const char *_a = (a), *_b = (b);                                        \
                if (!_a || !_b || strcmp(_a, _b) != 0) {                                \
                        fprintf(stderr, "%s:%d: \"%s\" != \"%s\"\n", __FILE__, __LINE__,\
                                _a ? _a : "(null)", _b ? _b : "(null)");                \
                        abort();                                                        \
                }                                                                       \
        } while (0)

#define ASSERT_CONTAINS(haystack, needle)                                               \
        do {                                                                            \
                const char *_h = (haystack), *_n = (needle);                            \
                if (!_h || !strstr(_h, _n)) {                                           \
                        fprintf(stderr, "%s:%d: \"%s\" does not contain \"%s\"\n",      \
                                __FILE__, __LINE__, _h ? _h : "(null)", _n);            \
                        abort();                                                        \
                }                                                                       \
        } while (0)

/* CLOCK_MONOTONIC in µs, for timing in tests and the benchmark. */
static inline uint64_t test_now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* qsort() order for uint64_t */
static inline int test_cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

typedef struct TestCase {
        const char *name;
        void (*fn)(void);
} TestCase;

#define TEST_CASE(f) { #f, f }

/* Cases that could not run here. A test with any is reported skipped (exit 77), not passed:
 * tests/run.sh then names the reason, and under CI=true counts it as a failure. */
static unsigned test_skipped_cases;
static const char *test_skip_reason;

/* Called by a case that cannot run; the case then returns. */
static inline void test_skip(const char *reason) {
        fprintf(stderr, "   skipped: %s\n", reason);
        test_skipped_cases++;
        test_skip_reason = reason;
}

static inline int run_tests(const TestCase *cases, size_t n) {
        for (size_t i = 0; i < n; i++) {
                fprintf(stderr, "== %s\n", cases[i].name);
                cases[i].fn();
        }
        if (test_skipped_cases > 0) {
                printf("%zu passed, 0 failed; SKIP: %u case(s) could not run: %s\n", n - test_skipped_cases,
                       test_skipped_cases, test_skip_reason);
                return 77;
        }
        printf("%zu passed, 0 failed\n", n);
        return 0;
}

#define RUN_TESTS(...)                                                                  \
        int main(void) {                                                                \
                static const TestCase cases[] = { __VA_ARGS__ };                        \
                return run_tests(cases, sizeof(cases) / sizeof(cases[0]));              \
        }
