/* SPDX-License-Identifier: MIT */
#pragma once

/* Moving vhost-user messages over a non-blocking unix stream socket: an incremental reader
 * that copes with partial reads and SCM_RIGHTS fds, and a writer with a bounded queue. */

#include <stddef.h>

#include "vhost-user.h"

typedef struct VuReader {
        VuMsg msg;
        size_t have;            /* bytes of header + payload received so far */
} VuReader;

void vu_reader_init(VuReader *r);
void vu_reader_reset(VuReader *r);       /* closes any fds of a partial message */
/* 1: a whole message was moved into *ret (its fds are the caller's); 0: wait for more data;
 * -ECONNRESET: orderly EOF between messages; other negative errno: the stream is unusable
 * (*ret_reason says why for protocol errors). */
int vu_reader_read(VuReader *r, int fd, VuMsg *ret, const char **ret_reason);

/* Reading a message without taking it off the socket first (for the fd store's journal:
 * a crash before it is taken off leaves it on the socket for the next process).
 * vu_reader_peek: 1: the whole next message is in *ret, with its fds (copies: the socket
 * still holds the message) and its length on the wire in *ret_len; 0: nothing to read;
 * -EAGAIN: only part of it has arrived, or it came in pieces that a peek cannot take
 * together (read it with vu_reader_read); -ECONNRESET: EOF; other negative errno as
 * vu_reader_read. Only for a reader holding no partial message. */
int vu_reader_peek(int fd, VuMsg *ret, size_t *ret_len, const char **ret_reason);
/* Takes the peeked message of `len` bytes off the socket, dropping the kernel's copies of its
 * fds. 0, or negative errno. */
int vu_reader_consume(int fd, size_t len);

typedef struct VuOutBuf VuOutBuf;

typedef struct VuWriter {
        VuOutBuf *head, *tail;
        size_t queued;          /* bytes waiting */
        size_t max_queued;      /* 0: no limit */
        bool corked;            /* queue only: vu_writer_uncork sends it all together */
} VuWriter;

void vu_writer_init(VuWriter *w, size_t max_queued);
void vu_writer_clear(VuWriter *w);
static inline int vu_writer_pending(const VuWriter *w) {
        return w->head != NULL;
}
/* Sends now what the socket takes and queues the rest (duplicating fds not yet sent).
 * 0 on success (sent or queued), -ENOBUFS past the queue limit, other errno on failure. */
int vu_writer_send(VuWriter *w, int fd, const VuMsg *m);
/* 1: queue empty; 0: the socket is full again; negative errno on failure. Messages go out
 * in as few sendmsg calls as their fds allow: a call carries the fds of its first message
 * only, so a message with fds starts a new call (a reader that takes the header first
 * then gets exactly that message's fds). */
int vu_writer_flush(VuWriter *w, int fd);
/* While corked, vu_writer_send only queues; uncorking flushes (same returns as the flush).
 * For a burst of messages built at once, such as a replay: the peer wakes once for all. */
void vu_writer_cork(VuWriter *w);
int vu_writer_uncork(VuWriter *w, int fd);

/* Blocking helpers for the test peers and vhostctl-like tools: whole messages, with a
 * timeout in ms (-1: none). */
int vu_send_blocking(int fd, const VuMsg *m);
int vu_recv_blocking(int fd, VuMsg *ret, int timeout_ms, const char **ret_reason);
