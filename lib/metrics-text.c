/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "metrics-text.h"

void metrics_histogram_observe(MetricsHistogram *h, const MetricsBuckets *b, uint64_t usec) {
        unsigned i = 0;

        while (i < b->n && usec > b->bounds_usec[i])
                i++;
        h->counts[i]++;         /* i == b->n: only in +Inf */
        h->sum_usec += usec;
        h->count++;
}

static const char *const type_table[_METRICS_TYPE_MAX] = {
        [METRICS_COUNTER] = "counter",
        [METRICS_GAUGE] = "gauge",
        [METRICS_HISTOGRAM] = "histogram",
        [METRICS_INFO] = "info",
};

static void put_help(JsonBuf *b, const char *help) {
        /* HELP escapes \ and newline (both formats) */
        for (const char *s = help; *s; s++)
                if (*s == '\\')
                        json_buf_puts(b, "\\\\");
                else if (*s == '\n')
                        json_buf_puts(b, "\\n");
                else
                        json_buf_put(b, s, 1);
}

void metrics_text_family(JsonBuf *b, bool openmetrics, const char *name, MetricsType type, const char *help) {
        const char *suffix = "";
        const char *t = type_table[type];

        if (!openmetrics && type == METRICS_COUNTER)
                suffix = "_total";
        if (!openmetrics && type == METRICS_INFO) {
                suffix = "_info";
                t = "gauge";
        }
        json_buf_puts(b, "# HELP ");
        json_buf_puts(b, name);
        json_buf_puts(b, suffix);
        json_buf_puts(b, " ");
        put_help(b, help);
        json_buf_puts(b, "\n# TYPE ");
        json_buf_puts(b, name);
        json_buf_puts(b, suffix);
        json_buf_puts(b, " ");
        json_buf_puts(b, t);
        json_buf_puts(b, "\n");
}

void metrics_text_put_label_value(JsonBuf *b, const char *s) {
        const char *run = s;

        for (; *s; s++) {
                const char *esc = *s == '\\' ? "\\\\" : *s == '"' ? "\\\"" : *s == '\n' ? "\\n" : NULL;
                if (!esc)
                        continue;
                json_buf_put(b, run, s - run);
                json_buf_puts(b, esc);
                run = s + 1;
        }
        json_buf_put(b, run, s - run);
}

static void put_labels(JsonBuf *b, const MetricsLabel *labels, size_t n, const char *le) {
        if (n == 0 && !le)
                return;
        json_buf_puts(b, "{");
        for (size_t i = 0; i < n; i++) {
                if (i)
                        json_buf_puts(b, ",");
                json_buf_puts(b, labels[i].name);
                json_buf_puts(b, "=\"");
                metrics_text_put_label_value(b, labels[i].value);
                json_buf_puts(b, "\"");
        }
        if (le) {
                if (n)
                        json_buf_puts(b, ",");
                json_buf_puts(b, "le=\"");
                json_buf_puts(b, le);
                json_buf_puts(b, "\"");
        }
        json_buf_puts(b, "}");
}

static void put_name(JsonBuf *b, const char *name, const char *suffix) {
        json_buf_puts(b, name);
        if (suffix)
                json_buf_puts(b, suffix);
}

void metrics_text_sample_u64(JsonBuf *b, const char *name, const char *suffix, const MetricsLabel *labels,
                             size_t n_labels, uint64_t value) {
        put_name(b, name, suffix);
        put_labels(b, labels, n_labels, NULL);
        json_buf_puts(b, " ");
        json_buf_put_u64(b, value);
        json_buf_puts(b, "\n");
}

static void put_double(JsonBuf *b, double v) {
        char buf[32];

        if (isnan(v))
                json_buf_puts(b, "NaN");
        else if (isinf(v))
                json_buf_puts(b, v > 0 ? "+Inf" : "-Inf");
        else {
                snprintf(buf, sizeof(buf), "%.17g", v);
                /* the shortest form that reads back the same */
                for (int prec = 1; prec < 17; prec++) {
                        char t[32];
                        snprintf(t, sizeof(t), "%.*g", prec, v);
                        if (strtod(t, NULL) == v) {
                                memcpy(buf, t, sizeof(t));
                                break;
                        }
                }
                json_buf_puts(b, buf);
        }
}

void metrics_text_sample_double(JsonBuf *b, const char *name, const char *suffix, const MetricsLabel *labels,
                                size_t n_labels, double value) {
        put_name(b, name, suffix);
        put_labels(b, labels, n_labels, NULL);
        json_buf_puts(b, " ");
        put_double(b, value);
        json_buf_puts(b, "\n");
}

/* µs as seconds, exactly ("0.0005", "1.5", "3"): no float rounding in the le labels */
static void usec_to_seconds(uint64_t usec, char *buf, size_t size) {
        uint64_t frac = usec % 1000000;
        int n = snprintf(buf, size, "%llu", (unsigned long long) (usec / 1000000));

        if (frac) {
                char f[8];
                snprintf(f, sizeof(f), "%06llu", (unsigned long long) frac);
                for (int i = 5; i > 0 && f[i] == '0'; i--)
                        f[i] = 0;
                snprintf(buf + n, size - n, ".%s", f);
        } else
                snprintf(buf + n, size - n, ".0");
}

void metrics_text_histogram(JsonBuf *b, const char *name, const MetricsLabel *labels, size_t n_labels,
                            const MetricsBuckets *buckets, const MetricsHistogram *h) {
        uint64_t cumulative = 0;
        char le[32];

        for (unsigned i = 0; i < buckets->n; i++) {
                cumulative += h->counts[i];
                usec_to_seconds(buckets->bounds_usec[i], le, sizeof(le));
                put_name(b, name, "_bucket");
                put_labels(b, labels, n_labels, le);
                json_buf_puts(b, " ");
                json_buf_put_u64(b, cumulative);
                json_buf_puts(b, "\n");
        }
        put_name(b, name, "_bucket");
        put_labels(b, labels, n_labels, "+Inf");
        json_buf_puts(b, " ");
        json_buf_put_u64(b, h->count);
        json_buf_puts(b, "\n");
        usec_to_seconds(h->sum_usec, le, sizeof(le));
        put_name(b, name, "_sum");
        put_labels(b, labels, n_labels, NULL);
        json_buf_puts(b, " ");
        json_buf_puts(b, le);
        json_buf_puts(b, "\n");
        metrics_text_sample_u64(b, name, "_count", labels, n_labels, h->count);
}

void metrics_text_end(JsonBuf *b, bool openmetrics) {
        if (openmetrics)
                json_buf_puts(b, "# EOF\n");
}

/* q of one media range's parameters ("; q=0.5; charset=..."): 1 when absent, -1 when bad */
static double parse_q(const char *p, const char *end) {
        double q = 1;

        while (p < end) {
                const char *semi = memchr(p, ';', end - p);
                const char *e = semi ? semi : end;
                while (p < e && isspace((unsigned char) *p))
                        p++;
                if (e - p >= 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=') {
                        char num[16];
                        size_t n = e - p - 2;
                        while (n > 0 && isspace((unsigned char) p[2 + n - 1]))
                                n--;
                        if (n == 0 || n >= sizeof(num))
                                return -1;
                        memcpy(num, p + 2, n);
                        num[n] = 0;
                        char *endp;
                        q = strtod(num, &endp);
                        if (*endp || !(q >= 0 && q <= 1))
                                return -1;
                }
                p = semi ? semi + 1 : end;
        }
        return q;
}

static bool range_is(const char *p, size_t n, const char *type) {
        return n == strlen(type) && strncasecmp(p, type, n) == 0;
}

bool metrics_accept_openmetrics(const char *accept) {
        double q_om = 0, q_text = 0;

        if (!accept)
                return false;
        for (const char *p = accept; *p;) {
                const char *comma = strchr(p, ',');
                const char *end = comma ? comma : p + strlen(p);
                const char *semi = memchr(p, ';', end - p);
                const char *type_end = semi ? semi : end;

                while (p < type_end && isspace((unsigned char) *p))
                        p++;
                while (type_end > p && isspace((unsigned char) type_end[-1]))
                        type_end--;
                double q = parse_q(semi ? semi + 1 : end, end);
                size_t n = type_end - p;
                if (q > 0) {
                        if (range_is(p, n, "application/openmetrics-text"))
                                q_om = q > q_om ? q : q_om;
                        else if (range_is(p, n, "text/plain") || range_is(p, n, "text/*") || range_is(p, n, "*/*"))
                                q_text = q > q_text ? q : q_text;
                }
                p = comma ? comma + 1 : end;
        }
        return q_om > 0 && q_om >= q_text;
}
