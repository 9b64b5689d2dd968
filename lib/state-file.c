/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#include "state-file.h"

_Static_assert(sizeof(StateFileHeader) == STATE_FILE_HEADER_SIZE, "state file header size");
_Static_assert(sizeof(StateSlot) == STATE_SLOT_HEADER_SIZE, "state slot header size");

#define FNV_PRIME UINT64_C(0x100000001b3)

static uint64_t mix(uint64_t h, uint64_t w) {
        h ^= w;
        h *= FNV_PRIME;
        return h ^ (h >> 29);
}

/* FNV-1a over 64-bit words (bytes for the tail): a torn write changes it, and it costs
 * about one multiply per 8 bytes. Not a defence against a forger: only the daemon writes. */
uint64_t state_checksum(uint64_t generation, uint32_t length, const void *data) {
        const uint8_t *p = data;
        uint64_t h = UINT64_C(0xcbf29ce484222325);
        size_t i = 0;

        h = mix(h, generation);
        h = mix(h, length);
        for (; i + 8 <= length; i += 8) {
                uint64_t w;
                memcpy(&w, p + i, 8);
                h = mix(h, w);
        }
        for (; i < length; i++)
                h = mix(h, p[i] | UINT64_C(0x100));
        return h;
}

size_t state_file_size(size_t capacity) {
        size_t slot = (STATE_SLOT_HEADER_SIZE + capacity + 63) & ~(size_t) 63;
        return STATE_FILE_HEADER_SIZE + 2 * slot;
}

size_t state_file_capacity(size_t size) {
        if (size < STATE_FILE_HEADER_SIZE + 2 * STATE_SLOT_HEADER_SIZE)
                return 0;
        return (size - STATE_FILE_HEADER_SIZE) / 2 - STATE_SLOT_HEADER_SIZE;
}

int state_file_init(void *buf, size_t size) {
        StateFileHeader *h = buf;

        if (state_file_capacity(size) == 0 || (size - STATE_FILE_HEADER_SIZE) % 16 != 0 ||
            (size - STATE_FILE_HEADER_SIZE) / 2 > UINT32_MAX)
                return -EINVAL;
        memset(buf, 0, size);
        h->magic = STATE_FILE_MAGIC;
        h->slot_size = (uint32_t) ((size - STATE_FILE_HEADER_SIZE) / 2);
        return 0;
}

static bool header_valid(const StateFileHeader *h, size_t size) {
        /* slot_size a multiple of 8: the second slot's header must be aligned (a file written
         * by anything else than state_file_init() is not trusted for that). */
        return size >= STATE_FILE_HEADER_SIZE && h->magic == STATE_FILE_MAGIC &&
               h->slot_size >= STATE_SLOT_HEADER_SIZE && h->slot_size % 8 == 0 &&
               (size_t) h->slot_size * 2 + STATE_FILE_HEADER_SIZE <= size;
}

static const StateSlot *slot_at(const void *buf, unsigned i) {
        const StateFileHeader *h = buf;
        return (const StateSlot *) ((const uint8_t *) buf + STATE_FILE_HEADER_SIZE + (size_t) i * h->slot_size);
}

/* Copied out once: the reader must judge the same bytes it checked. */
static bool slot_valid(const StateFileHeader *h, const StateSlot *s, uint64_t *ret_generation, uint32_t *ret_length) {
        uint64_t gen = s->generation, sum = s->checksum;
        uint32_t len = s->length;

        if (gen == 0 || len > h->slot_size - STATE_SLOT_HEADER_SIZE)
                return false;
        if (state_checksum(gen, len, s->data) != sum)
                return false;
        *ret_generation = gen;
        *ret_length = len;
        return true;
}

static int newest(const void *buf, size_t size, int *ret_index, uint64_t *ret_generation, uint32_t *ret_length) {
        const StateFileHeader *h = buf;
        int best = -1;
        uint64_t best_gen = 0;
        uint32_t best_len = 0;

        if (!header_valid(h, size))
                return -EBADMSG;
        for (unsigned i = 0; i < 2; i++) {
                uint64_t g;
                uint32_t l;
                if (slot_valid(h, slot_at(buf, i), &g, &l) && g > best_gen) {
                        best = (int) i;
                        best_gen = g;
                        best_len = l;
                }
        }
        *ret_index = best;
        *ret_generation = best_gen;
        *ret_length = best_len;
        return 0;
}

int state_file_write(void *buf, size_t size, const void *data, size_t len, uint64_t generation) {
        const StateFileHeader *h = buf;
        uint64_t gen;
        uint32_t l;
        int best, r;

        r = newest(buf, size, &best, &gen, &l);
        if (r < 0)
                return -EINVAL;
        if (generation <= gen)
                return -EINVAL;
        if (len > h->slot_size - STATE_SLOT_HEADER_SIZE)
                return -ENOSPC;
        /* The other slot: the newest stays whole until this one is. A slot that is not valid
         * may be either one. */
        StateSlot *s = (StateSlot *) slot_at(buf, best == 0 ? 1 : 0);

        memcpy(s->data, data, len);
        s->length = (uint32_t) len;
        s->checksum = state_checksum(generation, (uint32_t) len, data);
        /* The compiler must not move the data stores after the generation. The process dies
         * between instructions, so the stores before this point are in the file. */
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        __atomic_store_n(&s->generation, generation, __ATOMIC_RELEASE);
        return 0;
}

int state_file_read(const void *buf, size_t size, const void **ret_data, size_t *ret_len,
                    uint64_t *ret_generation) {
        uint64_t gen;
        uint32_t len;
        int best, r;

        r = newest(buf, size, &best, &gen, &len);
        if (r < 0)
                return r;
        if (best < 0)
                return -ENODATA;
        *ret_data = slot_at(buf, best)->data;
        *ret_len = len;
        *ret_generation = gen;
        return 0;
}

_Static_assert(sizeof(StateJournalEntry) == 32u + STATE_JOURNAL_MAX_FDS * STATE_JOURNAL_NAME_MAX, "journal entry size");

static uint64_t entry_checksum(uint64_t seq, uint64_t generation, const StateJournalEntry *e, uint32_t length,
                               uint32_t n_names) {
        uint64_t h = state_checksum(seq ^ ((uint64_t) n_names << 56), length, e->data);
        h = state_checksum(h ^ generation, sizeof(e->names), e->names);
        return h;
}

static StateJournalEntry *journal_entry(const void *buf, unsigned index) {
        return (StateJournalEntry *) ((uint8_t *) buf + (size_t) index * STATE_JOURNAL_ENTRY_SIZE);
}

int state_journal_write(void *buf, unsigned index, uint64_t generation, uint64_t seq, const void *data,
                        size_t len, const char *const *names, unsigned n_names) {
        if (index >= STATE_JOURNAL_ENTRIES || len > STATE_JOURNAL_DATA_MAX || n_names > STATE_JOURNAL_MAX_FDS || seq == 0)
                return -ENOSPC;
        StateJournalEntry *e = journal_entry(buf, index);
        for (unsigned i = 0; i < n_names; i++)
                if (strlen(names[i]) >= STATE_JOURNAL_NAME_MAX)
                        return -ENOSPC;
        /* invalid first: an older entry here must not look whole with the new body */
        __atomic_store_n(&e->seq, 0, __ATOMIC_RELAXED);
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        memset(e->names, 0, sizeof(e->names));
        for (unsigned i = 0; i < n_names; i++)
                memcpy(e->names[i], names[i], strlen(names[i]));
        memcpy(e->data, data, len);
        e->length = (uint32_t) len;
        e->n_names = n_names;
        e->generation = generation;
        e->checksum = entry_checksum(seq, generation, e, (uint32_t) len, n_names);
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        __atomic_store_n(&e->seq, seq, __ATOMIC_RELEASE);
        return 0;
}

int state_journal_read(const void *buf, unsigned index, uint64_t generation, uint64_t seq,
                       const StateJournalEntry **ret) {
        if (index >= STATE_JOURNAL_ENTRIES || seq == 0)
                return -ENODATA;
        const StateJournalEntry *e = journal_entry(buf, index);
        uint32_t len = e->length, n = e->n_names;
        if (e->seq != seq || e->generation != generation || len > STATE_JOURNAL_DATA_MAX || n > STATE_JOURNAL_MAX_FDS)
                return -ENODATA;
        if (entry_checksum(seq, generation, e, len, n) != e->checksum)
                return -ENODATA;
        for (unsigned i = 0; i < n; i++)
                if (!memchr(e->names[i], 0, STATE_JOURNAL_NAME_MAX))
                        return -ENODATA;
        *ret = e;
        return 0;
}
