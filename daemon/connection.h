/* SPDX-License-Identifier: MIT */
#pragma once

/* One vhost-user connection of a port (front-end or back-end side): non-blocking reads of
 * whole messages, a bounded number per dispatch, and a bounded write queue. */

#include <stdint.h>
#include <sys/socket.h>
#include <systemd/sd-event.h>

#include "io.h"
#include "ioset.h"

typedef struct Port Port;

typedef enum PortSide {
        PORT_FRONTEND,
        PORT_BACKEND,
        _PORT_SIDE_MAX,
        _PORT_SIDE_INVALID = -22,
} PortSide;

typedef struct Connection {
        Port *port;
        PortSide side;
        int fd;
        IoWatch *io;
        VuReader reader;
        VuWriter writer;
        struct ucred peer;
        int failed;             /* a send failed: the next dispatch closes the connection */
        bool throttled;         /* not read until what it caused has drained */
        uint64_t connected_usec;
} Connection;

/* Messages handled per dispatch before other sources get their turn. */
#define CONNECTION_MESSAGES_PER_DISPATCH 32
/* A peer that does not read its messages is dropped past this much queued data. */
#define CONNECTION_MAX_QUEUED (1u << 20)
/* A front-end is not read while this many of its requests wait in the daemon, or while
 * either side has more than CONNECTION_THROTTLE_BYTES of output queued: a flooding peer
 * is slowed down to what its port drains, not dropped and not buffered without end. */
#define FRONTEND_MAX_QUEUED 1024u
#define CONNECTION_THROTTLE_BYTES (CONNECTION_MAX_QUEUED / 4)

int connection_new(Port *p, PortSide side, int fd, Connection **ret);
Connection *connection_free(Connection *c);
/* Between cork and uncork, sends are only queued; the uncork sends them together (see
 * vu_writer_cork). A failure marks the connection failed, like connection_send. */
void connection_cork(Connection *c);
void connection_uncork(Connection *c);
/* Sends or queues m (fds are duplicated as needed; m keeps its own). A failure marks the
 * connection failed; it is closed from its own dispatch, never under the caller's feet. */
int connection_send(Connection *c, const VuMsg *m);
/* Sets what the connection waits for: input unless throttled, output while some is queued. */
void connection_update_events(Connection *c);

const char *port_side_to_string(PortSide s);
