/* SPDX-License-Identifier: MIT */
/* What one state write of the fd store mirror costs in building its text, by the size of the
 * shadow: shadow_to_json() and the JSON text, as daemon/fdstore.c does after each change, for
 * a device with 0 to 4096 IOTLB entries (the shadow's bound) and 1 to 8 memory regions.
 * Each figure is the median of SAMPLES runs of REPS writes. Not a comparison.
 * Usage: bench-state-json [SAMPLES] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "shadow-json.h"
#include "shadow.h"
#include "tests.h"

static uint64_t one(const Shadow *s, size_t *ret_len) {
        int fds[SHADOW_MAX_SAVED_FDS];
        size_t n = 0, len = 0;
        json_object *o;
        uint64_t t0 = test_now_usec();
        for (int r = 0; r < 10; r++) {
                n = 0;
                ASSERT_EQ(shadow_to_json(s, &o, fds, &n), 0);
                (void) json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
                json_object_put(o);
        }
        *ret_len = len;
        return (test_now_usec() - t0) * 100;    /* ns per write */
}

int main(int argc, char **argv) {
        static const unsigned entries[] = { 0, 100, 1000, 4096 };
        size_t samples = argc > 1 ? (size_t) atoi(argv[1]) : 21;
        uint64_t *v = calloc(samples, sizeof(uint64_t));

        ASSERT(v && samples > 0);
        printf("state text (shadow_to_json + JSON), by IOTLB entries; median / max of %zu samples of 10 writes\n", samples);
        for (size_t k = 0; k < ELEMENTSOF(entries); k++) {
                Shadow s;
                size_t len = 0;
                shadow_init(&s);
                s.iotlb.entries = calloc(entries[k] + 1, sizeof(IotlbEntry));
                ASSERT(s.iotlb.entries);
                s.iotlb.n = entries[k];
                s.iotlb.allocated = entries[k] + 1;
                for (unsigned i = 0; i < entries[k]; i++)
                        s.iotlb.entries[i] = (IotlbEntry) { 0x7f0000000000ull + i * 0x1000ull, 0x1000,
                                                            0x7f1234560000ull + i * 0x1000ull, 3 };
                for (size_t i = 0; i < samples; i++)
                        v[i] = one(&s, &len);
                qsort(v, samples, sizeof(uint64_t), test_cmp_u64);
                printf("  %4u IOTLB entries: %8.1f / %8.1f µs per state, %zu bytes\n", entries[k], v[samples / 2] / 1e3,
                       v[samples - 1] / 1e3, len);
                shadow_done(&s);
        }
        free(v);
        return 0;
}
