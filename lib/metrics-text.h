/* SPDX-License-Identifier: MIT */
#pragma once

/* The Prometheus text exposition format 0.0.4, and OpenMetrics 1.0 for a scraper whose
 * Accept header asks for it. Pure: writes into a JsonBuf, never allocates otherwise. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "varlink.h"

#define METRICS_CONTENT_TYPE_TEXT "text/plain; version=0.0.4; charset=utf-8"
#define METRICS_CONTENT_TYPE_OPENMETRICS "application/openmetrics-text; version=1.0.0; charset=utf-8"

typedef enum MetricsType {
        METRICS_COUNTER,
        METRICS_GAUGE,
        METRICS_HISTOGRAM,
        METRICS_INFO,           /* a gauge of 1 in text 0.0.4; "info" in OpenMetrics */
        _METRICS_TYPE_MAX,
        _METRICS_TYPE_INVALID = -22,
} MetricsType;

typedef struct MetricsLabel {
        const char *name, *value;
} MetricsLabel;

#define METRICS_HISTOGRAM_MAX_BUCKETS 16

/* Bounds in µs (ascending); the +Inf bucket is implied. */
typedef struct MetricsBuckets {
        const uint64_t *bounds_usec;
        unsigned n;
} MetricsBuckets;

/* Non-cumulative counts; cumulated when written. */
typedef struct MetricsHistogram {
        uint32_t counts[METRICS_HISTOGRAM_MAX_BUCKETS + 1];
        uint64_t sum_usec;
        uint64_t count;
} MetricsHistogram;

void metrics_histogram_observe(MetricsHistogram *h, const MetricsBuckets *b, uint64_t usec);

/* "# HELP" and "# TYPE" of a family. name is without "_total" (it is added for a counter's
 * samples, and in text 0.0.4 also to its HELP and TYPE lines). */
void metrics_text_family(JsonBuf *b, bool openmetrics, const char *name, MetricsType type, const char *help);
/* One sample: name + suffix (may be NULL), labels, an integer value. */
void metrics_text_sample_u64(JsonBuf *b, const char *name, const char *suffix, const MetricsLabel *labels,
                             size_t n_labels, uint64_t value);
void metrics_text_sample_double(JsonBuf *b, const char *name, const char *suffix, const MetricsLabel *labels,
                                size_t n_labels, double value);
/* _bucket{le=...}, _sum (seconds) and _count; labels come before le. */
void metrics_text_histogram(JsonBuf *b, const char *name, const MetricsLabel *labels, size_t n_labels,
                            const MetricsBuckets *buckets, const MetricsHistogram *h);
/* OpenMetrics ends with "# EOF"; text 0.0.4 has no end marker. */
void metrics_text_end(JsonBuf *b, bool openmetrics);

/* A label value escaped as the format says (\\, \", \n). */
void metrics_text_put_label_value(JsonBuf *b, const char *s);

/* Whether an HTTP Accept header prefers OpenMetrics over the text format (q values
 * honoured; NULL or unparsable parts: the text format). */
bool metrics_accept_openmetrics(const char *accept);
