/* SPDX-License-Identifier: MIT */
#pragma once

/* The fd store mirror: systemd's fd store (FileDescriptorStoreMax=) always holds what a new
 * vhost-recond needs to go on after this one dies, however it dies (SIGKILL, abort, the
 * watchdog, the OOM killer) or stops (systemctl restart).
 *
 * Per port it holds every fd the port keeps (listening sockets, the front-end and back-end
 * connections, and every fd of the device shadow: memory regions, kick/call/err eventfds,
 * the inflight region, the front-end's BACKEND_REQ channel, and whatever shadow_to_json()
 * enumerates) and a state memfd (lib/state-file.h) that names them. After each dispatch
 * that changed a port, fdstore_commit_dirty() brings the store in line: fds the port took
 * are stored (FDSTORE=1, FDNAME=vr.f.*), the new state is written, then fds it no longer
 * has are removed (FDSTOREREMOVE=1). A crash at any point leaves a whole state whose fds
 * are all in the store.
 *
 * Before the daemon reads or writes a connection it marks that stream "in doubt" in the
 * state file (a store into shared memory, no system call); the commit clears it once the
 * stream is between messages again. The front-end's requests are not read in doubt: each is
 * peeked, journaled, then taken off the socket. A reply to the front-end is in doubt for
 * the one sendmsg that carries it. At start, fdstore_adopt() takes each port back: a
 * connection whose peer is gone or whose stream was in doubt is closed (with a log line), a
 * back-end that was not idle and replayed is closed so that it gets a full replay on a
 * fresh connection, and the front-end's requests that were read but not answered are
 * answered (see "When vhost-recond itself crashes" in the README).
 *
 * Without NOTIFY_SOCKET (not under systemd) everything here is a no-op. */

#include <stdbool.h>
#include <stdint.h>

#include "state-file.h"
#include "vhost-user.h"

typedef struct Manager Manager;
typedef struct Port Port;
typedef struct FdStore FdStore;
typedef struct PortMirror PortMirror;

/* Takes the fds named vr.f.* and vr.s.* that systemd passed (m->passed_fds). */
int fdstore_new(Manager *m, FdStore **ret);
/* Closes the mirror's copies; never touches the store (a new process adopts it). */
FdStore *fdstore_free(FdStore *s);
bool fdstore_enabled(const FdStore *s);

/* A copy of the stored listening socket bound to path, or -1. */
int fdstore_take_listener(FdStore *s, const char *path);
/* Restores the ports from the states in the store, then removes from the store whatever no
 * port refers to. Returns the number of ports whose front-end was taken back. */
int fdstore_adopt(Manager *m);

/* The port changed: commit it after this dispatch. */
void fdstore_port_changed(Port *p);
/* About to read or write stream `st` of the port (see above). Cheap: one store. */
void fdstore_doubt(Port *p, StateStream st);
/* Around a reply sent to the front-end: only the send itself is in doubt. After a whole
 * send the reply counter in the state file moves on (fe_replies). */
void fdstore_reply_begin(Port *p);
void fdstore_reply_sent(Port *p);
/* Around each read of the front-end's socket: a whole request read is written to the
 * journal (its fds stored first), and the stream is no longer in doubt. */
void fdstore_read_begin(Port *p);
void fdstore_read_end(Port *p, const VuMsg *m);
/* The front-end's requests are peeked first where the mirror is on: request m, still on the
 * socket, is written to the journal (fdstore_read_peeked), then taken off the socket
 * (fdstore_read_taken). A crash in between leaves it in both: the next process finds the
 * same message with the same fds at the head of the socket and drops the journal's copy. */
bool fdstore_peek_reads(const Port *p);
void fdstore_read_peeked(Port *p, const VuMsg *m);
void fdstore_read_taken(Port *p);
/* A front-end connection was just accepted: stored at once, before anything else is done
 * with it, and named in the state file's header until a state names it. */
void fdstore_frontend_accepted(Port *p, int fd);
/* Commits every changed port (the manager calls it after each dispatch). */
void fdstore_commit_dirty(Manager *m);
/* Commits every port (clean stop). */
void fdstore_commit_all(Manager *m);
/* The port is being freed. removed: it left the configuration, so its fds leave the store;
 * otherwise (the daemon exits) the store keeps them for the next start. */
void fdstore_port_free(Port *p, bool removed);

typedef struct FdStoreStats {
        uint64_t commits, commit_usec, stores, removes, entries, bytes;
        uint64_t doubt_windows, doubt_usec;     /* the front-end's stream in doubt: how often, how long */
        uint64_t journaled;                     /* front-end requests written to the journal */
} FdStoreStats;
void fdstore_stats(const FdStore *s, FdStoreStats *ret);
