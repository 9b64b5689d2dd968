/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>

#include "connection.h"
#include "fdstore.h"
#include "log.h"
#include "manager.h"
#include "port.h"

const char *port_side_to_string(PortSide s) {
        return s == PORT_FRONTEND ? "front-end" : s == PORT_BACKEND ? "back-end" : NULL;
}

static void connection_lost(Connection *c, int error, const char *reason) {
        port_connection_lost(c->port, c->side, error, reason);
}

static void doubt(Connection *c) {
        fdstore_doubt(c->port, c->side == PORT_FRONTEND ? STATE_STREAM_FRONTEND : STATE_STREAM_BACKEND);
}

/* A front-end request is journaled before it leaves the socket (peeked, journaled, taken
 * off), so that a crash at any point finds it either on the socket or in the journal. A
 * message that a peek cannot take whole is read as the back-end's are, with the stream in
 * doubt until it is journaled. */
static int read_frontend(Connection *c, VuMsg *ret, const char **ret_reason) {
        size_t len;
        int r;

        if (c->reader.have == 0 && fdstore_peek_reads(c->port)) {
                r = vu_reader_peek(c->fd, ret, &len, ret_reason);
                if (r != -EAGAIN) {
                        if (r <= 0)
                                return r;
                        fdstore_read_peeked(c->port, ret);
                        r = vu_reader_consume(c->fd, len);
                        if (r < 0) {
                                vu_msg_close_fds(ret);
                                return r;
                        }
                        fdstore_read_taken(c->port);
                        return 1;
                }
        }
        fdstore_read_begin(c->port);
        r = vu_reader_read(&c->reader, c->fd, ret, ret_reason);
        fdstore_read_end(c->port, r == 1 ? ret : NULL);
        return r;
}

static int connection_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Connection *c = userdata;
        int r;

        /* the front-end's reads are covered one by one (fdstore_read_begin/end) */
        if (c->side == PORT_BACKEND || (revents & EPOLLOUT))
                doubt(c);
        if (c->failed)
                return connection_lost(c, c->failed, "sending failed"), 0;

        if (revents & EPOLLOUT) {
                r = vu_writer_flush(&c->writer, fd);
                if (r < 0)
                        return connection_lost(c, r, "sending failed"), 0;
                if (r > 0)
                        connection_update_events(c);
                port_throttle_frontend(c->port);
        }

        if (!(revents & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                return 0;
        if (c->throttled && (revents & (EPOLLHUP | EPOLLERR)))
                /* paused for flooding, and gone: what it left unread goes with it */
                return connection_lost(c, 0, "closed the connection while paused"), 0;

        for (unsigned n = 0; n < CONNECTION_MESSAGES_PER_DISPATCH && !c->throttled; n++) {
                const char *reason = NULL;
                VuMsg m;

                r = c->side == PORT_FRONTEND ? read_frontend(c, &m, &reason) : vu_reader_read(&c->reader, fd, &m, &reason);
                if (r == 0)
                        return 0;
                if (r == -ECONNRESET)
                        return connection_lost(c, 0, "closed the connection"), 0;
                if (r < 0)
                        return connection_lost(c, r, reason ? reason : "receiving failed"), 0;

                r = c->side == PORT_FRONTEND ? port_frontend_message(c->port, &m)
                                             : port_backend_message(c->port, &m);
                vu_msg_close_fds(&m);
                if (r == -ECANCELED)    /* closed on purpose; the handler said why */
                        return connection_lost(c, 0, c->port->close_reason), 0;
                if (r < 0)
                        return connection_lost(c, r, NULL), 0;
                if (c->failed)
                        return connection_lost(c, c->failed, "sending failed"), 0;
        }
        return 0;
}

int connection_new(Port *p, PortSide side, int fd, Connection **ret) {
        Connection *c = calloc(1, sizeof(Connection));
        socklen_t len = sizeof(c->peer);
        int r;

        if (!c) {
                safe_close(fd);
                return -ENOMEM;
        }
        c->port = p;
        c->side = side;
        c->fd = fd;
        vu_reader_init(&c->reader);
        vu_writer_init(&c->writer, CONNECTION_MAX_QUEUED);
        c->peer = (struct ucred) { .pid = 0, .uid = (uid_t) -1, .gid = (gid_t) -1 };
        (void) getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c->peer, &len);
        c->connected_usec = now_usec();

        r = io_watch_add(p->manager->ioset, &c->io, fd, EPOLLIN, connection_io, c);
        if (r < 0) {
                connection_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

Connection *connection_free(Connection *c) {
        if (!c)
                return NULL;
        c->io = io_watch_free(c->io);
        safe_close(c->fd);
        vu_reader_reset(&c->reader);
        vu_writer_clear(&c->writer);
        free(c);
        return NULL;
}

int connection_send(Connection *c, const VuMsg *m) {
        int r;

        if (c->failed)
                return c->failed;
        if (c->side != PORT_FRONTEND)   /* the front-end's replies: fdstore_reply_begin() */
                doubt(c);
        r = vu_writer_send(&c->writer, c->fd, m);
        if (r < 0) {
                c->failed = r;
                /* EPOLLOUT makes the dispatch close it, even while throttled */
                (void) io_watch_set_events(c->io, EPOLLIN | EPOLLOUT);
                return r;
        }
        if (!c->writer.corked)
                connection_update_events(c);
        return r;
}

void connection_cork(Connection *c) {
        vu_writer_cork(&c->writer);
}

void connection_uncork(Connection *c) {
        doubt(c);
        int r = vu_writer_uncork(&c->writer, c->fd);
        if (r < 0 && !c->failed) {
                c->failed = r;
                (void) io_watch_set_events(c->io, EPOLLIN | EPOLLOUT);
                return;
        }
        if (!c->failed)
                connection_update_events(c);
}

void connection_update_events(Connection *c) {
        uint32_t events = (c->throttled ? 0 : EPOLLIN) | (vu_writer_pending(&c->writer) ? EPOLLOUT : 0);
        /* with no events left, epoll still reports a hang-up */
        (void) io_watch_set_events(c->io, events);
}
