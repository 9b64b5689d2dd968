/* SPDX-License-Identifier: MIT */
#pragma once

/* BACKEND_REQ: each back-end gets a channel of its own (a socketpair); vhost-recond relays
 * whole messages between it and the front-end's channel, so that a back-end dying in the
 * middle of a message never leaves half of it on the front-end's channel. CONFIG_CHANGE_MSG
 * (which also drops the cached config) and IOTLB_MSG misses and access failures are relayed
 * (the other requests need features never offered). A front-end's REPLY_ACK goes back to
 * the back-end that asked. */

#include <stdbool.h>

typedef struct Port Port;
typedef struct BackendChannel BackendChannel;

/* Sets up a channel between the port's current back-end and the front-end's channel
 * (p->shadow.backend_req_fd); *ret_backend_end is the fd to send with SET_BACKEND_REQ_FD
 * (the caller closes it after sending). */
int backend_channel_new(Port *p, int *ret_backend_end, BackendChannel **ret);
BackendChannel *backend_channel_free(BackendChannel *c);
/* Nothing half read, queued or awaited at that end (true without a channel). */
bool backend_channel_idle(const BackendChannel *c, bool backend_end);
