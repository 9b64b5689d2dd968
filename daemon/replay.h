/* SPDX-License-Identifier: MIT */
#pragma once

/* Bringing a newly connected back-end to the shadow's state: probe (SET_OWNER,
 * GET_FEATURES, GET_PROTOCOL_FEATURES), feature check, the whole setup pipelined, then a
 * kick and a call on every started ring. Driven by the back-end's answers. */

#include "port.h"

void replay_start(Port *p);
/* An answer to a PENDING_PROBE or PENDING_REPLAY request. Negative: drop the back-end. */
int replay_reply(Port *p, const Pending *pd, const VuMsg *m);
