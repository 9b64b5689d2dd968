/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>

#include "state-file.h"
#include "tests.h"

#define CAP 256u

static size_t size_of(void) {
        return state_file_size(CAP);
}

static void fill(char *buf, size_t n, char c) {
        for (size_t i = 0; i < n; i++)
                buf[i] = (char) (c + i % 23);
}

static void expect(const void *file, const char *data, size_t len, uint64_t gen) {
        const void *d;
        size_t l;
        uint64_t g;
        ASSERT_EQ(state_file_read(file, size_of(), &d, &l, &g), 0);
        ASSERT_EQ(g, gen);
        ASSERT_EQ(l, len);
        ASSERT(memcmp(d, data, len) == 0);
}

static void test_roundtrip(void) {
        size_t size = size_of();
        uint8_t *f = malloc(size);
        char a[100], b[CAP], c[7];
        const void *d;
        size_t l;
        uint64_t g;

        ASSERT(state_file_capacity(size) >= CAP);
        ASSERT_EQ(state_file_init(f, size), 0);
        ASSERT_EQ(state_file_read(f, size, &d, &l, &g), -ENODATA);
        fill(a, sizeof(a), 'a');
        fill(b, sizeof(b), 'B');
        fill(c, sizeof(c), 'x');
        ASSERT_EQ(state_file_write(f, size, a, sizeof(a), 1), 0);
        expect(f, a, sizeof(a), 1);
        ASSERT_EQ(state_file_write(f, size, b, sizeof(b), 2), 0);
        expect(f, b, sizeof(b), 2);
        ASSERT_EQ(state_file_write(f, size, c, sizeof(c), 3), 0);
        expect(f, c, sizeof(c), 3);
        /* an empty state is a state */
        ASSERT_EQ(state_file_write(f, size, "", 0, 4), 0);
        expect(f, "", 0, 4);
        /* generations only grow; too big does not fit and changes nothing */
        ASSERT_EQ(state_file_write(f, size, a, sizeof(a), 4), -EINVAL);
        char *big = calloc(1, state_file_capacity(size) + 1);
        ASSERT_EQ(state_file_write(f, size, big, state_file_capacity(size) + 1, 5), -ENOSPC);
        expect(f, "", 0, 4);
        free(big);
        /* not a state file */
        f[0] ^= 1;
        ASSERT_EQ(state_file_read(f, size, &d, &l, &g), -EBADMSG);
        ASSERT_EQ(state_file_write(f, size, a, 1, 9), -EINVAL);
        ASSERT_EQ(state_file_read(f, 10, &d, &l, &g), -EBADMSG);
        free(f);
}

/* One slot damaged (a bit flipped anywhere in it): the other is read. */
static void test_damaged_slot(void) {
        size_t size = size_of();
        uint8_t *f = malloc(size), *g = malloc(size);
        char a[60], b[80];

        fill(a, sizeof(a), 'a');
        fill(b, sizeof(b), 'b');
        ASSERT_EQ(state_file_init(f, size), 0);
        ASSERT_EQ(state_file_write(f, size, a, sizeof(a), 1), 0);
        ASSERT_EQ(state_file_write(f, size, b, sizeof(b), 2), 0);
        size_t slot = (size - STATE_FILE_HEADER_SIZE) / 2;
        /* b (generation 2) is in slot 1 */
        for (size_t i = 0; i < STATE_SLOT_HEADER_SIZE + sizeof(b); i++) {
                if (i >= 20 && i < 24)
                        continue;       /* the reserved word is not covered */
                memcpy(g, f, size);
                g[STATE_FILE_HEADER_SIZE + slot + i] ^= 0x10;
                const void *d;
                size_t l;
                uint64_t gen;
                ASSERT_EQ(state_file_read(g, size, &d, &l, &gen), 0);
                /* a flipped generation bit may only make it older or invalid */
                ASSERT_EQ(gen, 1);
                ASSERT_EQ(l, sizeof(a));
        }
        free(f);
        free(g);
}

/* The write, one byte at a time in the order state_file_write() stores (data, length,
 * checksum, generation last), cut after every byte; and the bytes of each field in any
 * order. Before the last byte of the generation the old state is read, whole; after it the
 * new one. */
static void torn_case(size_t old_len, size_t new_len, bool reverse_fields) {
        size_t size = size_of();
        uint8_t *before = malloc(size), *after = malloc(size), *t = malloc(size);
        char older[CAP], old[CAP], neu[CAP];

        fill(older, sizeof(older), 'o');
        fill(old, sizeof(old), 'O');
        fill(neu, sizeof(neu), 'N');
        /* the slot written over holds something else first (generation 1) */
        ASSERT_EQ(state_file_init(before, size), 0);
        ASSERT_EQ(state_file_write(before, size, older, 33, 1), 0);
        ASSERT_EQ(state_file_write(before, size, old, old_len, 2), 0);
        memcpy(after, before, size);
        ASSERT_EQ(state_file_write(after, size, neu, new_len, 3), 0);

        /* the slot being written: slot 0 (generation 1 was there) */
        size_t base = STATE_FILE_HEADER_SIZE;
        size_t order[CAP + STATE_SLOT_HEADER_SIZE], n = 0;
        size_t fields[4][2] = {
                { offsetof(StateSlot, data), new_len },
                { offsetof(StateSlot, length), 4 },
                { offsetof(StateSlot, checksum), 8 },
                { offsetof(StateSlot, generation), 8 },
        };
        for (int f = 0; f < 4; f++)
                for (size_t k = 0; k < fields[f][1]; k++)
                        order[n++] = base + fields[f][0] + (reverse_fields ? fields[f][1] - 1 - k : k);
        /* nothing else changes */
        memcpy(t, before, size);
        for (size_t i = 0; i < n; i++)
                t[order[i]] = after[order[i]];
        ASSERT(memcmp(t, after, size) == 0);

        for (size_t cut = 0; cut <= n; cut++) {
                memcpy(t, before, size);
                for (size_t i = 0; i < cut; i++)
                        t[order[i]] = after[order[i]];
                bool complete = true;
                /* whole once every byte of the generation that differs is written */
                for (size_t i = cut; i < n; i++)
                        if (before[order[i]] != after[order[i]])
                                complete = false;
                if (complete)
                        expect(t, neu, new_len, 3);
                else
                        expect(t, old, old_len, 2);
        }
        free(before);
        free(after);
        free(t);
}

static void test_torn_write(void) {
        static const size_t lens[][2] = { { 100, 100 }, { 10, 200 }, { 200, 10 }, { 0, 1 }, { CAP, CAP }, { 7, 0 } };
        for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
                torn_case(lens[i][0], lens[i][1], false);
                torn_case(lens[i][0], lens[i][1], true);
        }
}

/* Random subsets of the data, length and checksum bytes, and of the generation's bytes
 * short of all of them: never anything but the whole old state. */
static void test_torn_any_order(void) {
        size_t size = size_of();
        uint8_t *before = malloc(size), *after = malloc(size), *t = malloc(size);
        char old[CAP], neu[CAP];
        unsigned seed = 12345;

        fill(old, sizeof(old), '0');
        fill(neu, sizeof(neu), '#');
        ASSERT_EQ(state_file_init(before, size), 0);
        ASSERT_EQ(state_file_write(before, size, old, 120, 1), 0);
        ASSERT_EQ(state_file_write(before, size, old + 1, 90, 2), 0);
        memcpy(after, before, size);
        ASSERT_EQ(state_file_write(after, size, neu, 150, 3), 0);
        for (int round = 0; round < 20000; round++) {
                memcpy(t, before, size);
                size_t slot0 = STATE_FILE_HEADER_SIZE;
                for (size_t i = 8; i < STATE_SLOT_HEADER_SIZE + 150; i++)
                        if (rand_r(&seed) & 1)
                                t[slot0 + i] = after[slot0 + i];
                bool all = true;
                for (size_t i = 0; i < 8; i++) {
                        if (rand_r(&seed) & 1)
                                t[slot0 + i] = after[slot0 + i];
                        if (t[slot0 + i] != after[slot0 + i])
                                all = false;
                }
                if (!all)
                        expect(t, old + 1, 90, 2);
        }
        free(before);
        free(after);
        free(t);
}

static void test_checksum(void) {
        uint8_t d[64] = {};
        uint64_t h = state_checksum(1, 64, d);
        ASSERT(h != state_checksum(2, 64, d));
        ASSERT(h != state_checksum(1, 63, d));
        for (size_t i = 0; i < sizeof(d); i++)
                for (int bit = 0; bit < 8; bit++) {
                        d[i] ^= 1u << bit;
                        ASSERT(state_checksum(1, 64, d) != h);
                        d[i] ^= 1u << bit;
                }
}


/* A journal entry cut after every byte of its write: not valid until its sequence number is
 * whole; an entry from an older state, or with another sequence number, is not taken. */
static void test_journal(void) {
        uint8_t *j = calloc(1, STATE_JOURNAL_SIZE), *before = malloc(STATE_JOURNAL_SIZE), *after = malloc(STATE_JOURNAL_SIZE);
        uint8_t data[200];
        const char *names[2] = { "vr.f.1234abcd.7", "vr.f.1234abcd.8" };
        const StateJournalEntry *e;

        for (size_t i = 0; i < sizeof(data); i++)
                data[i] = (uint8_t) (i * 7);
        ASSERT_EQ(state_journal_read(j, 0, 5, 1, &e), -ENODATA);
        ASSERT_EQ(state_journal_write(j, 0, 5, 10, data, sizeof(data), names, 2), 0);
        ASSERT_EQ(state_journal_read(j, 0, 5, 10, &e), 0);
        ASSERT_EQ(e->length, sizeof(data));
        ASSERT(memcmp(e->data, data, sizeof(data)) == 0);
        ASSERT_STREQ(e->names[1], names[1]);
        ASSERT_EQ(state_journal_read(j, 0, 6, 10, &e), -ENODATA);      /* another state's */
        ASSERT_EQ(state_journal_read(j, 0, 5, 11, &e), -ENODATA);      /* another request */
        ASSERT_EQ(state_journal_read(j, 1, 5, 11, &e), -ENODATA);
        ASSERT_EQ(state_journal_write(j, STATE_JOURNAL_ENTRIES, 5, 1, data, 1, NULL, 0), -ENOSPC);
        ASSERT_EQ(state_journal_write(j, 1, 5, 1, data, STATE_JOURNAL_DATA_MAX + 1, NULL, 0), -ENOSPC);

        /* entry 0 rewritten (state 6, request 1) over the old one, cut after every byte in the
         * order of the write: the body, then the sequence number */
        memcpy(before, j, STATE_JOURNAL_SIZE);
        ASSERT_EQ(state_journal_write(j, 0, 6, 1, data + 1, 150, names, 1), 0);
        memcpy(after, j, STATE_JOURNAL_SIZE);
        size_t seq_off = offsetof(StateJournalEntry, seq);
        size_t order[STATE_JOURNAL_ENTRY_SIZE], n = 0;
        for (size_t i = 8; i < STATE_JOURNAL_ENTRY_SIZE; i++)
                order[n++] = i;
        for (size_t i = 0; i < 8; i++)
                order[n++] = seq_off + i;
        for (size_t cut = 0; cut <= n; cut++) {
                memcpy(j, before, STATE_JOURNAL_SIZE);
                /* the writer zeroes the sequence number first */
                memset(j + seq_off, 0, 8);
                for (size_t i = 0; i < cut; i++)
                        j[order[i]] = after[order[i]];
                bool complete = true;   /* every byte that differs is written */
                for (size_t i = cut; i < n; i++)
                        if (j[order[i]] != after[order[i]])
                                complete = false;
                int r = state_journal_read(j, 0, 6, 1, &e);
                ASSERT_EQ(r, complete ? 0 : -ENODATA);
                ASSERT_EQ(state_journal_read(j, 0, 5, 10, &e), -ENODATA);   /* the old one is gone */
        }
        free(j);
        free(before);
        free(after);
}

RUN_TESTS(TEST_CASE(test_roundtrip), TEST_CASE(test_damaged_slot), TEST_CASE(test_torn_write),
          TEST_CASE(test_torn_any_order), TEST_CASE(test_checksum),
          TEST_CASE(test_journal))
