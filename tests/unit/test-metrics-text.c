/* SPDX-License-Identifier: MIT */
#include "metrics-text.h"
#include "tests.h"

static const uint64_t bounds[] = { 500, 1000, 100000, 1500000 };
static const MetricsBuckets buckets = { bounds, 4 };

static char *text(JsonBuf *b) {
        size_t n;
        return json_buf_steal(b, &n);
}

static void test_family(void) {
        JsonBuf b = {};
        metrics_text_family(&b, false, "vr_losses", METRICS_COUNTER, "Lost back-ends.\nBy reason \\.");
        metrics_text_family(&b, false, "vr_link_up", METRICS_GAUGE, "Link.");
        metrics_text_family(&b, false, "vr_build", METRICS_INFO, "Build.");
        char *s = text(&b);
        ASSERT_STREQ(s, "# HELP vr_losses_total Lost back-ends.\\nBy reason \\\\.\n# TYPE vr_losses_total counter\n"
                        "# HELP vr_link_up Link.\n# TYPE vr_link_up gauge\n"
                        "# HELP vr_build_info Build.\n# TYPE vr_build_info gauge\n");
        free(s);

        metrics_text_family(&b, true, "vr_losses", METRICS_COUNTER, "Lost.");
        metrics_text_family(&b, true, "vr_build", METRICS_INFO, "Build.");
        metrics_text_end(&b, true);
        s = text(&b);
        ASSERT_STREQ(s, "# HELP vr_losses Lost.\n# TYPE vr_losses counter\n# HELP vr_build Build.\n# TYPE vr_build info\n# EOF\n");
        free(s);
        metrics_text_end(&b, false);
        ASSERT_EQ(b.len, 0);
}

static void test_samples_and_escaping(void) {
        JsonBuf b = {};
        MetricsLabel l[] = { { "port", "a\"b\\c\nd" }, { "side", "backend" } };
        metrics_text_sample_u64(&b, "vr_losses", "_total", l, 2, 18446744073709551615ull);
        metrics_text_sample_u64(&b, "vr_ports", NULL, NULL, 0, 3);
        metrics_text_sample_double(&b, "vr_x", NULL, l + 1, 1, 0.25);
        metrics_text_sample_double(&b, "vr_y", NULL, NULL, 0, 1e-7);
        char *s = text(&b);
        ASSERT_STREQ(s, "vr_losses_total{port=\"a\\\"b\\\\c\\nd\",side=\"backend\"} 18446744073709551615\n"
                        "vr_ports 3\nvr_x{side=\"backend\"} 0.25\nvr_y 1e-07\n");
        free(s);
}

static void test_histogram(void) {
        MetricsHistogram h = {};
        JsonBuf b = {};
        MetricsLabel l[] = { { "port", "p0" } };

        metrics_histogram_observe(&h, &buckets, 500);           /* on a bound: that bucket */
        metrics_histogram_observe(&h, &buckets, 501);
        metrics_histogram_observe(&h, &buckets, 284000);
        metrics_histogram_observe(&h, &buckets, 9000000);       /* +Inf only */
        ASSERT_EQ(h.count, 4);
        ASSERT_EQ(h.sum_usec, 9285001);
        metrics_text_histogram(&b, "vr_outage_seconds", l, 1, &buckets, &h);
        char *s = text(&b);
        ASSERT_STREQ(s, "vr_outage_seconds_bucket{port=\"p0\",le=\"0.0005\"} 1\n"
                        "vr_outage_seconds_bucket{port=\"p0\",le=\"0.001\"} 2\n"
                        "vr_outage_seconds_bucket{port=\"p0\",le=\"0.1\"} 2\n"
                        "vr_outage_seconds_bucket{port=\"p0\",le=\"1.5\"} 3\n"
                        "vr_outage_seconds_bucket{port=\"p0\",le=\"+Inf\"} 4\n"
                        "vr_outage_seconds_sum{port=\"p0\"} 9.285001\n"
                        "vr_outage_seconds_count{port=\"p0\"} 4\n");
        free(s);

        MetricsHistogram empty = {};
        metrics_text_histogram(&b, "h", NULL, 0, &buckets, &empty);
        s = text(&b);
        ASSERT_CONTAINS(s, "h_bucket{le=\"+Inf\"} 0\nh_sum 0.0\nh_count 0\n");
        free(s);
}

static void test_accept(void) {
        ASSERT(!metrics_accept_openmetrics(NULL));
        ASSERT(!metrics_accept_openmetrics(""));
        ASSERT(!metrics_accept_openmetrics("text/plain"));
        ASSERT(!metrics_accept_openmetrics("*/*"));
        ASSERT(metrics_accept_openmetrics("application/openmetrics-text"));
        /* what Prometheus 2.42 sends */
        ASSERT(metrics_accept_openmetrics("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                                          "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"));
        ASSERT(!metrics_accept_openmetrics("application/openmetrics-text;q=0.2, text/plain;q=0.9"));
        ASSERT(!metrics_accept_openmetrics("application/openmetrics-text;q=0"));
        ASSERT(!metrics_accept_openmetrics("application/openmetrics-text;q=abc"));
        ASSERT(!metrics_accept_openmetrics("application/openmetrics-text;q=2"));
        ASSERT(metrics_accept_openmetrics(" Application/OpenMetrics-Text ; q=0.5 , text/plain;q=0.4"));
        ASSERT(!metrics_accept_openmetrics(";;,,;q=,q="));
}

RUN_TESTS(TEST_CASE(test_family),
          TEST_CASE(test_samples_and_escaping),
          TEST_CASE(test_histogram),
          TEST_CASE(test_accept))
