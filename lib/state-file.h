/* SPDX-License-Identifier: MIT */
#pragma once

/* The state file of a port: a memfd in the fd store, mapped shared, that always holds a
 * whole state however the daemon dies. Two slots, each with a generation and a checksum over
 * generation, length and data. A write goes to the slot that does not hold the newest state,
 * in this order: data, length, checksum, and the generation last; a reader takes the valid
 * slot with the highest generation. A write cut anywhere (even inside one field) leaves the
 * slot it was writing invalid or older, so the other slot, untouched, is read: the whole old
 * state; once the generation is whole, the whole new one.
 *
 * The header also holds one "doubt" byte per protocol stream (front-end, back-end): set
 * before the daemon reads or writes that stream, cleared once a state written after the I/O
 * says where the stream stands. After a crash, a set byte means the stream may be past what
 * the newest state says, so that connection cannot be trusted.
 *
 * Pure functions on a buffer; the daemon maps the memfd, tests use plain memory. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STATE_FILE_MAGIC UINT64_C(0x3174737276686f76)  /* "vohvrst1" little-endian */
#define STATE_FILE_HEADER_SIZE 64u
#define STATE_SLOT_HEADER_SIZE 24u

typedef enum StateStream {
        STATE_STREAM_FRONTEND,
        STATE_STREAM_BACKEND,
        STATE_STREAM_FRONTEND_REPLY,    /* a reply being sent to the front-end (see replies) */
        STATE_STREAM_FRONTEND_READ,     /* a request being read, until it is in the journal */
        _STATE_STREAM_MAX,
        _STATE_STREAM_INVALID = -22,
} StateStream;

typedef struct StateFileHeader {
        uint64_t magic;
        uint32_t slot_size;             /* bytes per slot, its own header included */
        uint32_t reserved;
        uint8_t doubt[8];               /* indexed by StateStream */
        /* Replies sent whole to the front-end, counted by the daemon; stored right after each
         * one, so that a state written before it can tell which of the requests it lists as
         * unanswered were answered since. */
        uint64_t frontend_replies;
        /* The sequence number of the last request taken off the front-end's socket: a
         * request is read by peeking, written to the journal, then taken off. A journal entry
         * past this one may still be on the socket (STATE_HEADER_READ_SEQ says it is kept). */
        uint64_t frontend_read_seq;
        /* A front-end connection accepted and stored before any state named it: the store
         * name "vr.f.<tag>.<id>" of its fd (pending_frontend_id 0: none). */
        uint64_t pending_frontend_id;
        uint32_t pending_frontend_tag;
        uint8_t reply_partial;          /* the reply in doubt went out in part, or after one still queued */
        uint8_t pad[3];
        /* The reply count the reply in doubt makes once counted: frontend_replies at or past
         * it means it was counted (a crash between the count and the doubt byte). */
        uint64_t reply_seq;
} StateFileHeader;

/* StateFileHeader.reserved: what this header's writer keeps (an older one kept neither). */
#define STATE_HEADER_READ_SEQ 1u

typedef struct StateSlot {
        uint64_t generation;            /* 0: never written */
        uint64_t checksum;              /* over generation, length, data */
        uint32_t length;
        uint32_t reserved;
        uint8_t data[];
} StateSlot;

/* The size of a state file whose slots hold up to `capacity` bytes of data each. */
size_t state_file_size(size_t capacity);
/* The data capacity of each slot in a file of `size` bytes. */
size_t state_file_capacity(size_t size);
/* Formats buf (size bytes, from state_file_size()) as an empty state file. */
int state_file_init(void *buf, size_t size);
/* Writes data as `generation` (above every generation in the file) into the slot not holding
 * the newest state. -ENOSPC when it does not fit, -EINVAL on a bad file or generation. */
int state_file_write(void *buf, size_t size, const void *data, size_t len, uint64_t generation);
/* The newest whole state: 0 and *ret_data, *ret_len, *ret_generation (data points into buf), or
 * -ENODATA when no slot is whole, -EBADMSG when buf is not a state file. */
int state_file_read(const void *buf, size_t size, const void **ret_data, size_t *ret_len,
                    uint64_t *ret_generation);
/* The checksum used by the slots (exposed for tests). */
uint64_t state_checksum(uint64_t generation, uint32_t length, const void *data);

/* The journal: the front-end's requests as they are read, each written right after it comes
 * off the socket, so that a crash before the next state is written does not lose it. A
 * region of STATE_JOURNAL_ENTRIES fixed-size entries after the state file, restarted at
 * index 0 after each state. An entry is the raw request (header and payload) and the store
 * names of its fds (stored before the entry is written), the generation of the state it
 * follows, and a sequence number (the front-end request sequence) written last, with a
 * checksum over all of it: a torn entry is not valid, and entries left from earlier rounds
 * follow an older state. */
#define STATE_JOURNAL_ENTRIES 32u
#define STATE_JOURNAL_ENTRY_SIZE 1024u
#define STATE_JOURNAL_NAME_MAX 48u
#define STATE_JOURNAL_MAX_FDS 8u
#define STATE_JOURNAL_DATA_MAX \
        (STATE_JOURNAL_ENTRY_SIZE - 32u - STATE_JOURNAL_MAX_FDS * STATE_JOURNAL_NAME_MAX)
#define STATE_JOURNAL_SIZE (STATE_JOURNAL_ENTRIES * STATE_JOURNAL_ENTRY_SIZE)

typedef struct StateJournalEntry {
        uint64_t seq;                   /* 0: never written */
        uint64_t checksum;              /* over seq, generation, length, names, data */
        uint64_t generation;            /* of the state this entry follows */
        uint32_t length;
        uint32_t n_names;
        char names[STATE_JOURNAL_MAX_FDS][STATE_JOURNAL_NAME_MAX];
        uint8_t data[];
} StateJournalEntry;

/* Writes entry `index` of the journal at buf (STATE_JOURNAL_SIZE bytes). -ENOSPC: index past
 * the end, data too long or too many names. */
int state_journal_write(void *buf, unsigned index, uint64_t generation, uint64_t seq, const void *data,
                        size_t len, const char *const *names, unsigned n_names);
/* Entry `index` if it is whole, follows state `generation` and has sequence number seq: 0
 * and a pointer into buf; else -ENODATA. */
int state_journal_read(const void *buf, unsigned index, uint64_t generation, uint64_t seq,
                       const StateJournalEntry **ret);
