/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "backend-channel.h"
#include "fdstore.h"
#include "io.h"
#include "log.h"
#include "manager.h"
#include "port.h"

struct BackendChannel {
        Port *port;
        int fd[2];                      /* 0: our end of the back-end's channel, 1: the front-end's */
        IoWatch *io[2];
        VuReader reader[2];
        VuWriter writer[2];
        unsigned acks_awaited;          /* relayed requests whose front-end REPLY_ACK is due */
};

enum { BACKEND_END, FRONTEND_END };

static void doubt(BackendChannel *c, int end) {
        fdstore_doubt(c->port, end == BACKEND_END ? STATE_STREAM_BACKEND : STATE_STREAM_FRONTEND);
}

bool backend_channel_idle(const BackendChannel *c, bool backend_end) {
        int end = backend_end ? BACKEND_END : FRONTEND_END;
        return !c || (c->acks_awaited == 0 && c->reader[end].have == 0 && !vu_writer_pending(&c->writer[end]));
}

static void channel_send(BackendChannel *c, int end, const VuMsg *m) {
        doubt(c, end);
        if (vu_writer_send(&c->writer[end], c->fd[end], m) < 0)
                log_warning("%s: back-end channel: cannot pass on a message", c->port->config.name);
        else if (vu_writer_pending(&c->writer[end]))
                (void) io_watch_set_events(c->io[end], EPOLLIN | EPOLLOUT);
}

/* Something went wrong on the channel: it is closed; the port goes on without it. */
static int channel_broken(BackendChannel *c, const char *why) {
        Port *p = c->port;
        log_warning("%s: back-end channel closed: %s", p->config.name, why);
        p->backend_channel = backend_channel_free(p->backend_channel);
        return 0;
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        BackendChannel *c = userdata;
        int end = fd == c->fd[BACKEND_END] ? BACKEND_END : FRONTEND_END;
        const char *reason = NULL;
        int r;

        doubt(c, end);
        if ((revents & EPOLLOUT) && vu_writer_flush(&c->writer[end], fd) > 0)
                (void) io_watch_set_events(c->io[end], EPOLLIN);

        for (unsigned n = 0; n < CONNECTION_MESSAGES_PER_DISPATCH && (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)); n++) {
                VuMsg m;
                r = vu_reader_read(&c->reader[end], fd, &m, &reason);
                if (r == 0)
                        return 0;
                if (r < 0)
                        return channel_broken(c, end == BACKEND_END ? "the back-end closed it" : "the front-end closed it");

                if (end == BACKEND_END) {
                        if (vu_msg_check_backend_request(&m, &reason) < 0) {
                                vu_msg_close_fds(&m);
                                return channel_broken(c, reason);
                        }
                        if (m.hdr.request == VU_BACKEND_IOTLB_MSG)
                                /* a MISS: the front-end answers with an IOTLB update through
                                 * the daemon, which the shadow keeps */
                                log_debug("%s: back-end IOTLB %s for iova 0x%" PRIx64 "; relayed",
                                          c->port->config.name,
                                          m.payload.iotlb.type == VU_IOTLB_MISS ? "miss" : "access failure",
                                          m.payload.iotlb.iova);
                        else {
                                /* CONFIG_CHANGE_MSG: what was cached is stale; the front-end reads it again. */
                                shadow_config_changed(&c->port->shadow);
                                log_info("%s: back-end says its config changed; telling the front-end", c->port->config.name);
                        }
                        if (vu_msg_needs_reply(&m))
                                c->acks_awaited++;
                        channel_send(c, FRONTEND_END, &m);
                } else {
                        /* The front-end's REPLY_ACK for what was relayed to it. */
                        if (!vu_msg_is_reply(&m) || c->acks_awaited == 0) {
                                vu_msg_close_fds(&m);
                                return channel_broken(c, "the front-end sent something unasked");
                        }
                        c->acks_awaited--;
                        channel_send(c, BACKEND_END, &m);
                }
                vu_msg_close_fds(&m);
        }
        return 0;
}

int backend_channel_new(Port *p, int *ret_backend_end, BackendChannel **ret) {
        BackendChannel *c = calloc(1, sizeof(BackendChannel));
        int pair[2] = { -1, -1 }, r;

        if (!c)
                return -ENOMEM;
        c->port = p;
        c->fd[FRONTEND_END] = fcntl(p->shadow.backend_req_fd, F_DUPFD_CLOEXEC, 3);
        if (c->fd[FRONTEND_END] < 0 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0) {
                r = -errno;
                safe_close(c->fd[FRONTEND_END]);
                free(c);
                return r;
        }
        c->fd[BACKEND_END] = pair[0];
        for (int end = 0; end < 2; end++) {
                (void) fcntl(c->fd[end], F_SETFL, fcntl(c->fd[end], F_GETFL) | O_NONBLOCK);
                vu_reader_init(&c->reader[end]);
                vu_writer_init(&c->writer[end], CONNECTION_MAX_QUEUED);
                r = io_watch_add(p->manager->ioset, &c->io[end], c->fd[end], EPOLLIN, on_io, c);
                if (r < 0) {
                        safe_close(pair[1]);
                        backend_channel_free(c);
                        return r;
                }
        }
        *ret_backend_end = pair[1];
        *ret = c;
        return 0;
}

BackendChannel *backend_channel_free(BackendChannel *c) {
        if (!c)
                return NULL;
        for (int end = 0; end < 2; end++) {
                c->io[end] = io_watch_free(c->io[end]);
                safe_close(c->fd[end]);
                vu_reader_reset(&c->reader[end]);
                vu_writer_clear(&c->writer[end]);
        }
        free(c);
        return NULL;
}
