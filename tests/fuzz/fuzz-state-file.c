/* SPDX-License-Identifier: MIT */
/* The state file reader on arbitrary bytes (what a crash, or anything else, may leave in the
 * memfd): it never reads outside the buffer, and whatever it returns lies inside it; a write
 * over that file then reads back. */
#include <stdlib.h>
#include <string.h>

#include "state-file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        uint8_t *buf = malloc(size ? size : 1);
        const void *d;
        size_t len;
        uint64_t gen;

        memcpy(buf, data, size);
        /* a header the fuzzer cannot guess: the magic set on half the inputs */
        if (size >= STATE_FILE_HEADER_SIZE && (size & 1))
                ((StateFileHeader *) buf)->magic = STATE_FILE_MAGIC;
        if (state_file_read(buf, size, &d, &len, &gen) == 0) {
                if ((const uint8_t *) d < buf || (const uint8_t *) d + len > buf + size)
                        abort();
                if (gen < UINT64_MAX && state_file_write(buf, size, "x", 1, gen + 1) == 0) {
                        if (state_file_read(buf, size, &d, &len, &gen) != 0 || len != 1 || memcmp(d, "x", 1) != 0)
                                abort();
                }
        }
        /* the journal: any entry it accepts is inside the region, its names terminated */
        if (size >= STATE_JOURNAL_SIZE) {
                for (unsigned i = 0; i < STATE_JOURNAL_ENTRIES; i++) {
                        const StateJournalEntry *e;
                        const StateJournalEntry *raw = (const StateJournalEntry *) (buf + (size_t) i * STATE_JOURNAL_ENTRY_SIZE);
                        if (state_journal_read(buf, i, raw->generation, raw->seq, &e) == 0) {
                                if (e->length > STATE_JOURNAL_DATA_MAX || e->n_names > STATE_JOURNAL_MAX_FDS)
                                        abort();
                                for (unsigned k = 0; k < e->n_names; k++)
                                        if (strlen(e->names[k]) >= STATE_JOURNAL_NAME_MAX)
                                                abort();
                        }
                }
        }
        free(buf);
        return 0;
}
