/* SPDX-License-Identifier: MIT */
#pragma once

/* The front-end side of a port: requests taken into the shadow, then forwarded, answered
 * from the shadow, or held, always in the order they came. */

#include "port.h"

/* Moves queued front-end requests on as far as the back-end's state allows. */
void frontend_pump(Port *p);
/* A back-end answered a forwarded request: record it in the shadow and pass it on. */
void frontend_relay_reply(Port *p, FrontendItem *it, const VuMsg *reply);
/* Puts requests (a list linked by ->next) back at the head of the queue. */
void frontend_requeue(Port *p, FrontendItem *first, FrontendItem *last);
void frontend_item_free(FrontendItem *it);
/* Appends a request taken into the shadow to the queue, in arrival order. */
void frontend_enqueue(Port *p, FrontendItem *it, bool needs_reply);
