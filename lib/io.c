/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "io.h"
#include "macro.h"

struct VuOutBuf {
        VuOutBuf *next;
        size_t len, off;
        int fds[VU_MAX_FDS];
        unsigned n_fds;
        uint8_t data[];
};

void vu_reader_init(VuReader *r) {
        r->have = 0;
        r->msg.n_fds = 0;
}

void vu_reader_reset(VuReader *r) {
        vu_msg_close_fds(&r->msg);
        r->have = 0;
}

static int take_fds(VuMsg *m, struct msghdr *mh) {
        int r = 0;

        for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                        continue;
                size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                int *fds = (int *) CMSG_DATA(c);
                for (size_t i = 0; i < n; i++) {
                        if (m->n_fds < VU_MAX_FDS)
                                m->fds[m->n_fds++] = fds[i];
                        else {
                                safe_close(fds[i]);
                                r = -E2BIG;
                        }
                }
        }
        if (mh->msg_flags & MSG_CTRUNC)
                r = -E2BIG;
        return r;
}

int vu_reader_read(VuReader *r, int fd, VuMsg *ret, const char **ret_reason) {
        for (;;) {
                struct iovec iov;
                size_t want;

                /* Refused once, refused for good: reading on would overrun the payload buffer. */
                if (r->have >= VU_HDR_SIZE && r->msg.hdr.size > VU_MAX_PAYLOAD) {
                        if (ret_reason)
                                *ret_reason = "payload size in header too large";
                        return -EBADMSG;
                }

                if (r->have < VU_HDR_SIZE) {
                        iov.iov_base = (uint8_t *) &r->msg.hdr + r->have;
                        want = VU_HDR_SIZE - r->have;
                } else {
                        size_t got = r->have - VU_HDR_SIZE;
                        iov.iov_base = r->msg.payload.raw + got;
                        want = r->msg.hdr.size - got;
                }
                iov.iov_len = want;

                if (want > 0) {
                        /* Room for more fds than allowed, so that a peer sending too many is
                         * detected rather than silently truncated. */
                        union {
                                struct cmsghdr align;
                                uint8_t buf[CMSG_SPACE(sizeof(int) * VU_MAX_FDS * 2)];
                        } control;
                        struct msghdr mh = {
                                .msg_iov = &iov,
                                .msg_iovlen = 1,
                                .msg_control = &control,
                                .msg_controllen = sizeof(control),
                        };
                        ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
                        if (n < 0) {
                                if (errno == EAGAIN || errno == EINTR)
                                        return 0;
                                return -errno;
                        }
                        if (take_fds(&r->msg, &mh) < 0) {
                                if (ret_reason)
                                        *ret_reason = "more fds than a message may carry";
                                return -EBADMSG;
                        }
                        if (n == 0) {
                                if (r->have == 0 && r->msg.n_fds == 0)
                                        return -ECONNRESET;
                                if (ret_reason)
                                        *ret_reason = "peer closed in the middle of a message";
                                return -EPIPE;
                        }
                        r->have += n;
                        continue;       /* the checks at the top, then the rest */
                }

                if (r->have >= VU_HDR_SIZE && r->have == VU_HDR_SIZE + r->msg.hdr.size) {
                        ret->hdr = r->msg.hdr;
                        memcpy(ret->payload.raw, r->msg.payload.raw, r->msg.hdr.size);
                        memcpy(ret->fds, r->msg.fds, sizeof(int) * r->msg.n_fds);
                        ret->n_fds = r->msg.n_fds;
                        r->msg.n_fds = 0;
                        r->have = 0;
                        return 1;
                }
        }
}

int vu_reader_peek(int fd, VuMsg *ret, size_t *ret_len, const char **ret_reason) {
        /* One peek of up to a whole message of the largest size, and a byte more. A peek
         * stops after the first skb carrying fds, and each sendmsg makes skbs of its own: so
         * fds that come with more bytes than the message holds belong to a later message
         * (which has them, and this one has none). A peek that fills its buffer still looks
         * at the next skb and takes its fds: the byte more makes "exactly the message's
         * bytes" mean that nothing followed, so the fds are its own. (A sender putting two
         * messages with fds in one sendmsg is not told apart: the fds are dropped, and the
         * second message fails its check without them.) */
        uint8_t buf[VU_HDR_SIZE + VU_MAX_PAYLOAD + 1];
        union {
                struct cmsghdr align;
                uint8_t buf[CMSG_SPACE(sizeof(int) * VU_MAX_FDS * 2)];
        } control;
        struct iovec iov = { buf, sizeof(buf) };
        struct msghdr mh = {
                .msg_iov = &iov,
                .msg_iovlen = 1,
                .msg_control = &control,
                .msg_controllen = sizeof(control),
        };
        VuMsg m = { .n_fds = 0 };
        int r;

        ssize_t n = recvmsg(fd, &mh, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0)
                return errno == EAGAIN || errno == EINTR ? 0 : -errno;
        r = take_fds(&m, &mh);
        if (n == 0) {
                vu_msg_close_fds(&m);
                return -ECONNRESET;
        }
        if ((size_t) n < VU_HDR_SIZE) {
                vu_msg_close_fds(&m);
                return -EAGAIN;
        }
        memcpy(&m.hdr, buf, VU_HDR_SIZE);
        if (m.hdr.size > VU_MAX_PAYLOAD) {
                vu_msg_close_fds(&m);
                if (ret_reason)
                        *ret_reason = "payload size in header too large";
                return -EBADMSG;
        }
        size_t len = VU_HDR_SIZE + m.hdr.size;
        if ((size_t) n < len) {
                vu_msg_close_fds(&m);
                return -EAGAIN;
        }
        if ((size_t) n > len)
                vu_msg_close_fds(&m);   /* a later message's */
        else if (r < 0) {
                vu_msg_close_fds(&m);
                if (ret_reason)
                        *ret_reason = "more fds than a message may carry";
                return -EBADMSG;
        }
        memcpy(m.payload.raw, buf + VU_HDR_SIZE, m.hdr.size);
        *ret = m;
        *ret_len = len;
        return 1;
}

int vu_reader_consume(int fd, size_t len) {
        uint8_t buf[VU_HDR_SIZE + VU_MAX_PAYLOAD];

        if (len > sizeof(buf))
                return -EINVAL;
        while (len > 0) {
                /* no room for fds: the kernel drops its references, the peeked copies stay */
                ssize_t n = recv(fd, buf, len, MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -EPIPE;
                len -= (size_t) n;
        }
        return 0;
}

void vu_writer_init(VuWriter *w, size_t max_queued) {
        *w = (VuWriter) { .max_queued = max_queued };
}

static void outbuf_free(VuOutBuf *b) {
        for (unsigned i = 0; i < b->n_fds; i++)
                safe_close(b->fds[i]);
        free(b);
}

void vu_writer_clear(VuWriter *w) {
        while (w->head) {
                VuOutBuf *b = w->head;
                w->head = b->next;
                outbuf_free(b);
        }
        w->tail = NULL;
        w->queued = 0;
}

/* One sendmsg; fds go with the first byte. Returns bytes sent, 0 on EAGAIN, or -errno. */
static ssize_t send_some(int fd, const struct iovec *iov, int iovcnt, const int *fds, unsigned n_fds) {
        union {
                struct cmsghdr align;
                uint8_t buf[CMSG_SPACE(sizeof(int) * VU_MAX_FDS)];
        } control;
        struct msghdr mh = {
                .msg_iov = (struct iovec *) iov,
                .msg_iovlen = iovcnt,
        };

        if (n_fds > 0) {
                memset(&control, 0, sizeof(control));
                mh.msg_control = &control;
                mh.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
                struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
                memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);
        }

        for (;;) {
                ssize_t n = sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (n >= 0)
                        return n;
                if (errno == EINTR)
                        continue;
                if (errno == EAGAIN)
                        return 0;
                return -errno;
        }
}

static int queue_rest(VuWriter *w, const VuMsg *m, size_t sent) {
        size_t len = VU_HDR_SIZE + m->hdr.size;

        if (w->max_queued && w->queued + len - sent > w->max_queued)
                return -ENOBUFS;

        VuOutBuf *b = malloc(sizeof(VuOutBuf) + len);
        if (!b)
                return -ENOMEM;
        b->next = NULL;
        b->len = len;
        b->off = sent;
        b->n_fds = 0;
        memcpy(b->data, &m->hdr, VU_HDR_SIZE);
        memcpy(b->data + VU_HDR_SIZE, m->payload.raw, m->hdr.size);
        if (sent == 0)
                for (unsigned i = 0; i < m->n_fds; i++) {
                        int copy = fcntl(m->fds[i], F_DUPFD_CLOEXEC, 3);
                        if (copy < 0) {
                                int r = -errno;
                                outbuf_free(b);
                                return r;
                        }
                        b->fds[b->n_fds++] = copy;
                }

        if (w->tail)
                w->tail->next = b;
        else
                w->head = b;
        w->tail = b;
        w->queued += len - sent;
        return 0;
}

int vu_writer_send(VuWriter *w, int fd, const VuMsg *m) {
        size_t sent = 0;

        if (!w->head && !w->corked) {
                struct iovec iov[2] = {
                        { (void *) &m->hdr, VU_HDR_SIZE },
                        { (void *) m->payload.raw, m->hdr.size },
                };
                ssize_t n = send_some(fd, iov, m->hdr.size ? 2 : 1, m->fds, m->n_fds);
                if (n < 0)
                        return (int) n;
                sent = n;
                if (sent == VU_HDR_SIZE + m->hdr.size)
                        return 0;
        }
        return queue_rest(w, m, sent);
}

/* iovecs per sendmsg when flushing: enough for a whole replay's run of fd-less messages */
#define FLUSH_IOV 64

int vu_writer_flush(VuWriter *w, int fd) {
        while (w->head) {
                struct iovec iov[FLUSH_IOV];
                VuOutBuf *b = w->head;
                int n_iov = 0;

                for (VuOutBuf *x = b; x && n_iov < FLUSH_IOV && (x == b || x->n_fds == 0); x = x->next)
                        iov[n_iov++] = (struct iovec) { x->data + x->off, x->len - x->off };
                /* only the head can be partly sent; its fds went with its first byte */
                ssize_t n = send_some(fd, iov, n_iov, b->fds, b->off == 0 ? b->n_fds : 0);
                if (n < 0)
                        return (int) n;
                if (n == 0)
                        return 0;
                for (unsigned i = 0; i < b->n_fds; i++)
                        b->fds[i] = safe_close(b->fds[i]);
                b->n_fds = 0;
                w->queued -= n;
                while (n > 0) {
                        VuOutBuf *h = w->head;
                        size_t left = h->len - h->off;
                        if ((size_t) n < left) {
                                h->off += n;
                                return 0;       /* a short send: the socket is full */
                        }
                        n -= left;
                        w->head = h->next;
                        if (!w->head)
                                w->tail = NULL;
                        outbuf_free(h);
                }
        }
        return 1;
}

void vu_writer_cork(VuWriter *w) {
        w->corked = true;
}

int vu_writer_uncork(VuWriter *w, int fd) {
        w->corked = false;
        return vu_writer_flush(w, fd);
}

static int wait_fd(int fd, short events, int timeout_ms) {
        struct pollfd p = { .fd = fd, .events = events };
        int r = poll(&p, 1, timeout_ms);
        if (r < 0)
                return -errno;
        return r == 0 ? -ETIMEDOUT : 0;
}

int vu_send_blocking(int fd, const VuMsg *m) {
        VuWriter w;
        int r;

        vu_writer_init(&w, 0);
        r = vu_writer_send(&w, fd, m);
        while (r >= 0 && vu_writer_pending(&w)) {
                r = wait_fd(fd, POLLOUT, -1);
                if (r >= 0)
                        r = vu_writer_flush(&w, fd);
        }
        vu_writer_clear(&w);
        return r < 0 ? r : 0;
}

int vu_recv_blocking(int fd, VuMsg *ret, int timeout_ms, const char **ret_reason) {
        VuReader rd;
        int r;

        vu_reader_init(&rd);
        for (;;) {
                r = vu_reader_read(&rd, fd, ret, ret_reason);
                if (r != 0)
                        break;
                r = wait_fd(fd, POLLIN, timeout_ms);
                if (r < 0)
                        break;
        }
        vu_reader_reset(&rd);
        return r < 0 ? r : 0;
}
