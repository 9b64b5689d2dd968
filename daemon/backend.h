/* SPDX-License-Identifier: MIT */
#pragma once

/* The back-end side of a port: requests sent to it and the answers awaited, in order. */

#include "port.h"

/* backend_send(), but a SET_BACKEND_REQ_FD gets a channel of the back-end's own in place of
 * the front-end's (see backend-channel.h). */
int backend_send_setup(Port *p, const VuMsg *m, PendingOrigin origin, FrontendItem *item);

/* Sends m to the back-end and, when an answer is due (a GET or NEED_REPLY), records who
 * waits for it. */
int backend_send(Port *p, const VuMsg *m, PendingOrigin origin, FrontendItem *item);
/* The back-end is gone: front-end requests it owed answers to go back to the front-end
 * queue, to be answered from the shadow or by the next back-end. */
void backend_lost(Port *p, const char *reason);
/* The front-end is gone: answers owed to it are dropped. */
void backend_forget_frontend(Port *p);
void backend_clear_pending(Port *p);
/* Stops every running ring with GET_VRING_BASE, keeps the answers as resume indexes, then
 * closes the back-end. Returns 1 when stopping, 0 when there was nothing to stop. */
int backend_stop(Port *p, const char *reason);
