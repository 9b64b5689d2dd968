/* SPDX-License-Identifier: MIT */
#pragma once

/* Restart without the front-ends noticing: on a clean stop each port's connections, the
 * fds its front-end handed over, its listening sockets and a memfd with its serialized
 * state go to systemd's fd store (FileDescriptorStoreMax=), named vr.SLOT.*; on start they
 * are taken back and removed from the store (FDSTOREREMOVE). */

typedef struct Manager Manager;

/* Stores what can be stored; returns the number of ports whose front-end was kept. */
int fdstore_save(Manager *m);
/* Restores ports from what systemd passed; returns the number of ports restored. */
int fdstore_restore(Manager *m);
